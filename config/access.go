package config

import (
	"net/url"
	"strings"
)

// Target returns the target called name.
func (c *Config) Target(name string) (*Target, bool) {
	for i := range c.Targets {
		if c.Targets[i].Name == name {
			return &c.Targets[i], true
		}
	}
	return nil, false
}

// Agent returns the agent called name.
func (c *Config) Agent(name string) (*Agent, bool) {
	for i := range c.Agents {
		if c.Agents[i].Name == name {
			return &c.Agents[i], true
		}
	}
	return nil, false
}

// Workload returns the workload called name.
func (c *Config) Workload(name string) (*Workload, bool) {
	for i := range c.Workloads {
		if c.Workloads[i].Name == name {
			return &c.Workloads[i], true
		}
	}
	return nil, false
}

// SimInstance returns the simulation instance called name.
func (c *Config) SimInstance(name string) (*SimInstance, bool) {
	for i := range c.Simulation.Instances {
		if c.Simulation.Instances[i].Name == name {
			return &c.Simulation.Instances[i], true
		}
	}
	return nil, false
}

// SimGPU returns the simulated GPU called name.
func (c *Config) SimGPU(name string) (*SimGPU, bool) {
	for i := range c.Simulation.GPUs {
		if c.Simulation.GPUs[i].Name == name {
			return &c.Simulation.GPUs[i], true
		}
	}
	return nil, false
}

// TargetNames returns the names of the agent's targets: Target alone, or
// a copy of Targets.
func (a *Agent) TargetNames() []string {
	if a.Target != "" {
		return []string{a.Target}
	}
	return append([]string(nil), a.Targets...)
}

// SimName returns the simulation instance a "sim://NAME" URL points at.
func (t *Target) SimName() (string, bool) {
	return simName(t.URL)
}

func simName(raw string) (string, bool) {
	if !strings.HasPrefix(strings.ToLower(raw), SimScheme+":") {
		return "", false
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != SimScheme {
		return "", false
	}
	return u.Host, true
}

// Map returns the options that are set, keyed by their Ollama names, or nil
// when none is set.
func (o Options) Map() map[string]any {
	m := map[string]any{}
	putInt := func(k string, v *int) {
		if v != nil {
			m[k] = *v
		}
	}
	putFloat := func(k string, v *float64) {
		if v != nil {
			m[k] = *v
		}
	}
	putInt("num_gpu", o.NumGPU)
	putInt("num_ctx", o.NumCtx)
	putFloat("temperature", o.Temperature)
	putFloat("top_p", o.TopP)
	putInt("top_k", o.TopK)
	putFloat("repeat_penalty", o.RepeatPenalty)
	putInt("num_predict", o.NumPredict)
	putInt("seed", o.Seed)
	if len(m) == 0 {
		return nil
	}
	return m
}
