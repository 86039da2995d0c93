package config

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// ValidationError is every problem found in a configuration, one per line,
// each starting with the key path it is about.
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string {
	return strings.Join(e.Problems, "\n")
}

// namePattern is what a name must match: names become Prometheus label
// values and appear in URLs and logs.
var namePattern = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_.-]*$`)

// headerNamePattern is an HTTP header field name (RFC 9110 token).
var headerNamePattern = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// checker collects problems and holds what validation looks up across types.
type checker struct {
	problems  []string
	lookupEnv func(string) (string, bool)
	baseDir   string // for relative secret files

	targets, agents, instances, gpus []string          // declared names, in order
	seen                             map[string]string // kind+name → path of first use
}

func newChecker(cfg *Config, lookupEnv func(string) (string, bool), baseDir string) *checker {
	c := &checker{lookupEnv: lookupEnv, baseDir: baseDir, seen: map[string]string{}}
	for _, t := range cfg.Targets {
		c.targets = append(c.targets, t.Name)
	}
	for _, a := range cfg.Agents {
		c.agents = append(c.agents, a.Name)
	}
	for _, s := range cfg.Simulation.Instances {
		c.instances = append(c.instances, s.Name)
	}
	for _, g := range cfg.Simulation.GPUs {
		c.gpus = append(c.gpus, g.Name)
	}
	return c
}

func (c *checker) addf(path, format string, args ...any) {
	c.problems = append(c.problems, path+": "+fmt.Sprintf(format, args...))
}

// name checks a name: set, label-safe and unique among those of its kind.
func (c *checker) name(kind, path, name string) {
	switch {
	case name == "":
		c.addf(path, "must be set")
	case !namePattern.MatchString(name):
		c.addf(path, "%q is not a valid name (allowed: a letter or _, then letters, digits, _ . -)", name)
	default:
		if first, ok := c.seen[kind+"\x00"+name]; ok {
			c.addf(path, "%q is already the name of %s", name, first)
			return
		}
		c.seen[kind+"\x00"+name] = strings.TrimSuffix(path, ".name")
	}
}

// known checks a reference to a declared name.
func (c *checker) known(kind, path, name string, declared []string) {
	if name == "" {
		c.addf(path, "must be set")
		return
	}
	for _, d := range declared {
		if d == name {
			return
		}
	}
	if len(declared) == 0 {
		c.addf(path, "unknown %s %q (none declared)", kind, name)
		return
	}
	c.addf(path, "unknown %s %q (known: %s)", kind, name, strings.Join(declared, ", "))
}

func (c *checker) positive(path string, d time.Duration) {
	if d <= 0 {
		c.addf(path, "must be > 0, got %s", d)
	}
}

func (c *checker) nonNegative(path string, d time.Duration) {
	if d < 0 {
		c.addf(path, "must be >= 0, got %s", d)
	}
}

func (c *checker) ratio(path string, v float64) {
	if v < 0 || v > 1 {
		c.addf(path, "must be between 0 and 1, got %v", v)
	}
}

// oneOf checks v against the allowed values.
func (c *checker) oneOf(path, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	c.addf(path, "%q is not one of %s", v, strings.Join(allowed, ", "))
}

// validate checks the whole configuration and resolves header secrets.
func (cfg *Config) validate(c *checker) {
	cfg.Global.validate(c, "global")
	if len(cfg.Targets) == 0 {
		c.addf("targets", "at least one target is required")
	}
	for i := range cfg.Targets {
		cfg.Targets[i].validate(c, fmt.Sprintf("targets[%d]", i))
	}
	if len(cfg.Agents) == 0 {
		c.addf("agents", "at least one agent is required")
	}
	for i := range cfg.Agents {
		cfg.Agents[i].validate(c, fmt.Sprintf("agents[%d]", i))
	}
	if len(cfg.Workloads) == 0 {
		c.addf("workloads", "at least one workload is required")
	}
	for i := range cfg.Workloads {
		cfg.Workloads[i].validate(c, fmt.Sprintf("workloads[%d]", i))
	}
	cfg.Simulation.validate(c, "simulation")
}

func (g *Global) validate(c *checker, path string) {
	c.positive(path+".model_reload_threshold", g.ModelReloadThreshold)
	c.positive(path+".shutdown_timeout", g.ShutdownTimeout)
	c.positive(path+".readiness_probe_interval", g.ReadinessProbeInterval)
	c.positive(path+".queue_wait_threshold", g.QueueWaitThreshold)
	g.Shard.validate(c, path+".shard")
}

func (s *Shard) validate(c *checker, path string) {
	if s.Count < 1 {
		c.addf(path+".count", "must be >= 1 (the number of daemons sharing the load), got %d", s.Count)
	}
	switch {
	case s.Index < 0:
		c.addf(path+".index", "must be >= 0 (shards are numbered from 0), got %d", s.Index)
	case s.Count >= 1 && s.Index >= s.Count:
		c.addf(path+".index", "must be < %s.count (%d): shards are numbered from 0 to %d, got %d",
			path, s.Count, s.Count-1, s.Index)
	}
}

func (t *Target) validate(c *checker, path string) {
	c.name("target", path+".name", t.Name)
	t.validateURL(c, path+".url")
	t.Timeouts.validate(c, path+".timeouts")
	t.Retry.validate(c, path+".retry")
	if t.NumParallel < 1 {
		c.addf(path+".num_parallel", "must be >= 1, got %d", t.NumParallel)
	}
	c.positive(path+".poll_interval", t.PollInterval)
	for _, name := range sortedKeys(t.Headers) {
		hp := fmt.Sprintf("%s.headers[%s]", path, name)
		if !headerNamePattern.MatchString(name) {
			c.addf(hp, "%q is not a valid HTTP header name", name)
		}
		s := t.Headers[name]
		s.validate(c, hp)
		t.Headers[name] = s
	}
}

func (t *Target) validateURL(c *checker, path string) {
	if t.URL == "" {
		c.addf(path, "must be set (an absolute http(s) URL, or sim://INSTANCE)")
		return
	}
	if name, ok := simName(t.URL); ok {
		if t.URL != SimScheme+"://"+name {
			c.addf(path, "%q: a simulator URL is sim://INSTANCE, with nothing after the name", t.URL)
			return
		}
		c.known("simulation instance", path, name, c.instances)
		return
	}
	u, err := url.Parse(t.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.addf(path, "%q is not an absolute http(s) or sim:// URL", t.URL)
		return
	}
	if u.User != nil {
		c.addf(path, "must not hold credentials; send them in a header with env or file")
	}
}

func (t *Timeouts) validate(c *checker, path string) {
	c.positive(path+".connect", t.Connect)
	c.positive(path+".first_token", t.FirstToken)
	c.positive(path+".idle", t.Idle)
	c.positive(path+".request", t.Request)
}

// MaxRetryAttempts bounds targets[].retry.max_attempts, so that a failing
// target is never sent one request more than a few times.
const MaxRetryAttempts = 10

func (r *Retry) validate(c *checker, path string) {
	switch {
	case r.MaxAttempts < 1:
		c.addf(path+".max_attempts", "must be >= 1 (1 sends each request once), got %d", r.MaxAttempts)
	case r.MaxAttempts > MaxRetryAttempts:
		c.addf(path+".max_attempts", "must be <= %d, got %d", MaxRetryAttempts, r.MaxAttempts)
	}
	c.positive(path+".backoff_min", r.BackoffMin)
	if r.BackoffMin > 0 && r.BackoffMax < r.BackoffMin {
		c.addf(path+".backoff_max", "must be >= backoff_min (%s), got %s", r.BackoffMin, r.BackoffMax)
	}
}

func (a *Agent) validate(c *checker, path string) {
	c.name("agent", path+".name", a.Name)
	switch {
	case a.Target != "" && len(a.Targets) > 0:
		c.addf(path, "set exactly one of target and targets, not both")
	case a.Target == "" && len(a.Targets) == 0:
		c.addf(path, "set one of target (a target name) or targets (a list of target names)")
	case a.Target != "":
		c.known("target", path+".target", a.Target, c.targets)
		if a.Balance != "" {
			c.addf(path+".balance", "only applies with targets (several), not with target")
		}
	default:
		listed := map[string]bool{}
		for i, tn := range a.Targets {
			tp := fmt.Sprintf("%s.targets[%d]", path, i)
			if listed[tn] {
				c.addf(tp, "target %q is listed twice", tn)
				continue
			}
			listed[tn] = true
			c.known("target", tp, tn, c.targets)
		}
		if a.Balance != "" {
			c.oneOf(path+".balance", a.Balance, BalanceRoundRobin, BalanceLeastInFlight)
		}
	}
	if a.Model == "" {
		c.addf(path+".model", "must be set")
	}
	c.oneOf(path+".api", a.API, APIChat, APIGenerate)
	if a.KeepHistory && a.API != APIChat {
		c.addf(path+".keep_history", "only applies with api %q, not %q", APIChat, a.API)
	}
	a.Options.validate(c, path+".options")
	c.nonNegative(path+".think_time", a.ThinkTime)
	if len(a.Workflow) == 0 {
		c.addf(path+".workflow", "at least one step is required")
	}
	for i := range a.Workflow {
		a.Workflow[i].validate(c, fmt.Sprintf("%s.workflow[%d]", path, i), a, i)
	}
}

func (o *Options) validate(c *checker, path string) {
	minInt := func(key string, v *int, low int, what string) {
		if v != nil && *v < low {
			c.addf(path+"."+key, "must be >= %d%s, got %d", low, what, *v)
		}
	}
	minInt("num_ctx", o.NumCtx, 1, "")
	minInt("num_predict", o.NumPredict, -2, " (-1: no limit, -2: fill the context)")
	minInt("top_k", o.TopK, 0, "")
	minInt("num_gpu", o.NumGPU, -1, " (-1: let Ollama decide)")
	if o.Temperature != nil && *o.Temperature < 0 {
		c.addf(path+".temperature", "must be >= 0, got %v", *o.Temperature)
	}
	if o.TopP != nil {
		c.ratio(path+".top_p", *o.TopP)
	}
	if o.RepeatPenalty != nil && *o.RepeatPenalty < 0 {
		c.addf(path+".repeat_penalty", "must be >= 0, got %v", *o.RepeatPenalty)
	}
}

func (s *Step) validate(c *checker, path string, a *Agent, i int) {
	c.name("step of "+path[:strings.LastIndexByte(path, '[')], path+".name", s.Name)
	if s.Prompt == "" {
		c.addf(path+".prompt", "must be set")
		return
	}
	s.compile(c, path+".prompt", a, i)
}

func (w *Workload) validate(c *checker, path string) {
	c.name("workload", path+".name", w.Name)
	if len(w.Agents) == 0 {
		c.addf(path+".agents", "at least one agent is required")
	}
	listed := map[string]bool{}
	for i, wa := range w.Agents {
		ap := fmt.Sprintf("%s.agents[%d]", path, i)
		if wa.Agent != "" && listed[wa.Agent] {
			c.addf(ap+".agent", "agent %q is listed twice; raise replicas instead", wa.Agent)
		} else {
			listed[wa.Agent] = true
			c.known("agent", ap+".agent", wa.Agent, c.agents)
		}
		if wa.Replicas < 1 {
			c.addf(ap+".replicas", "must be >= 1, got %d", wa.Replicas)
		}
	}
	w.Arrival.validate(c, path+".arrival")
	c.nonNegative(path+".duration", w.Duration)
	c.nonNegative(path+".ramp_up", w.RampUp)
	if w.RampUp > 0 && w.Arrival.Mode != ArrivalClosed && w.Arrival.Mode != "" {
		c.addf(path+".ramp_up", "only applies to mode %q, not %q: open-loop arrivals are already spread by their rate", ArrivalClosed, w.Arrival.Mode)
	}
	cp := path + ".calibration"
	if w.Calibration.Runs < 1 {
		c.addf(cp+".runs", "must be >= 1, got %d", w.Calibration.Runs)
	}
	c.positive(cp+".max_duration", w.Calibration.MaxDuration)
	c.nonNegative(cp+".interval", w.Calibration.Interval)
}

func (a *Arrival) validate(c *checker, path string) {
	switch a.Mode {
	case ArrivalClosed:
		if a.Rate != 0 {
			c.addf(path+".rate", "only applies to open-loop modes (%s, %s), not %q", ArrivalConstant, ArrivalPoisson, a.Mode)
		}
		if a.MaxInFlight != 0 {
			c.addf(path+".max_in_flight", "only applies to open-loop modes (%s, %s), not %q", ArrivalConstant, ArrivalPoisson, a.Mode)
		}
	case ArrivalConstant, ArrivalPoisson:
		if !(a.Rate > 0) {
			c.addf(path+".rate", "must be > 0 for mode %q, got %v", a.Mode, a.Rate)
		}
		if a.MaxInFlight < 1 {
			c.addf(path+".max_in_flight", "must be >= 1 for mode %q, got %d", a.Mode, a.MaxInFlight)
		}
	default:
		c.oneOf(path+".mode", a.Mode, ArrivalClosed, ArrivalConstant, ArrivalPoisson)
	}
}

func (s *Simulation) validate(c *checker, path string) {
	for i := range s.GPUs {
		s.GPUs[i].validate(c, fmt.Sprintf("%s.gpus[%d]", path, i))
	}
	for i := range s.Instances {
		s.Instances[i].validate(c, fmt.Sprintf("%s.instances[%d]", path, i))
	}
}

func (g *SimGPU) validate(c *checker, path string) {
	c.name("gpu", path+".name", g.Name)
	if !(g.DecodeRate > 0) {
		c.addf(path+".decode_rate", "must be > 0, got %v", g.DecodeRate)
	}
	c.ratio(path+".concurrency_gain", g.ConcurrencyGain)
	if g.MemoryBytes <= 0 {
		c.addf(path+".memory_bytes", "must be > 0, got %d", g.MemoryBytes)
	}
}

func (s *SimInstance) validate(c *checker, path string) {
	c.name("instance", path+".name", s.Name)
	if s.GPU != "" {
		c.known("gpu", path+".gpu", s.GPU, c.gpus)
	}
	if s.NumParallel < 1 {
		c.addf(path+".num_parallel", "must be >= 1, got %d", s.NumParallel)
	}
	if s.MaxQueue < 1 {
		c.addf(path+".max_queue", "must be >= 1, got %d", s.MaxQueue)
	}
	if !(s.PromptEvalRate > 0) {
		c.addf(path+".prompt_eval_rate", "must be > 0, got %v", s.PromptEvalRate)
	}
	c.ratio(path+".jitter", s.Jitter)
	c.nonNegative(path+".load_delay", s.LoadDelay)
	if s.Version == "" {
		c.addf(path+".version", "must not be empty")
	}
	models := map[string]bool{}
	for i, m := range s.Models {
		mp := fmt.Sprintf("%s.models[%d]", path, i)
		switch {
		case m.Name == "":
			c.addf(mp+".name", "must be set")
		case models[m.Name]:
			c.addf(mp+".name", "model %q is listed twice", m.Name)
		}
		models[m.Name] = true
		if m.SizeBytes <= 0 {
			c.addf(mp+".size_bytes", "must be > 0, got %d", m.SizeBytes)
		}
	}
	f := &s.Faults
	c.ratio(path+".faults.error_ratio", f.ErrorRatio)
	c.ratio(path+".faults.stall_ratio", f.StallRatio)
	c.ratio(path+".faults.drop_ratio", f.DropRatio)
	c.nonNegative(path+".faults.stall_duration", f.StallDuration)
	if f.StallRatio > 0 && f.StallDuration <= 0 {
		c.addf(path+".faults.stall_duration", "must be > 0 when stall_ratio is set, got %s", f.StallDuration)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
