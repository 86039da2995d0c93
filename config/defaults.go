package config

import (
	"fmt"
	"time"
)

// Defaults. A key that is absent (or null) gets its default; a key that is
// present keeps its value, which validation then checks, so writing 0 where
// 0 is meaningless is an error rather than a silent default.
const (
	DefaultModelReloadThreshold   = 100 * time.Millisecond
	DefaultShutdownTimeout        = 10 * time.Second
	DefaultReadinessProbeInterval = 5 * time.Second
	DefaultQueueWaitThreshold     = 100 * time.Millisecond
	DefaultShardIndex             = 0
	DefaultShardCount             = 1
	DefaultClassicHistograms      = true

	DefaultCalibrationAtStart         = true
	DefaultCalibrationRuns            = 3
	DefaultCalibrationMaxDuration     = 2 * time.Minute
	DefaultCalibrationOnVersionChange = true

	DefaultNumParallel       = 1
	DefaultPollInterval      = 15 * time.Second
	DefaultConnectTimeout    = 5 * time.Second
	DefaultFirstTokenTimeout = 2 * time.Minute
	DefaultIdleTimeout       = time.Minute
	DefaultRequestTimeout    = 10 * time.Minute
	DefaultRetryMaxAttempts  = 3
	DefaultRetryBackoffMin   = 250 * time.Millisecond
	DefaultRetryBackoffMax   = 30 * time.Second

	DefaultAPI      = APIChat
	DefaultBalance  = BalanceRoundRobin // for agents with more than one target
	DefaultReplicas = 1
	DefaultArrival  = ArrivalClosed

	DefaultSimNumParallel     = 1
	DefaultSimMaxQueue        = 512
	DefaultSimPromptEvalRate  = 2000.0
	DefaultSimJitter          = 0.1
	DefaultSimLoadDelay       = 300 * time.Millisecond
	DefaultSimVersion         = "0.17.4-sim"
	DefaultSimModel           = "sim-tiny"
	DefaultSimModelSize       = 512 << 20
	DefaultSimDecodeRate      = 60.0
	DefaultSimConcurrencyGain = 0.5
	DefaultSimMemoryBytes     = 24 << 30
)

// DefaultSimGPU returns a simulated GPU with every setting at its default;
// it stands in for an instance whose gpu is empty.
func DefaultSimGPU(name string) SimGPU {
	g := SimGPU{Name: name}
	g.setDefaults("", func(string) bool { return false })
	return g
}

// isSet reports whether a decoder key path was present in the input.
type isSet func(path string) bool

func (c *Config) setDefaults(set map[string]bool) {
	has := func(p string) bool { return set[p] }
	c.Global.setDefaults("global", has)
	for i := range c.Targets {
		c.Targets[i].setDefaults(fmt.Sprintf("targets[%d]", i), has)
	}
	for i := range c.Agents {
		c.Agents[i].setDefaults(fmt.Sprintf("agents[%d]", i), has)
	}
	for i := range c.Workloads {
		c.Workloads[i].setDefaults(fmt.Sprintf("workloads[%d]", i), has)
	}
	for i := range c.Simulation.GPUs {
		c.Simulation.GPUs[i].setDefaults(fmt.Sprintf("simulation.gpus[%d]", i), has)
	}
	for i := range c.Simulation.Instances {
		c.Simulation.Instances[i].setDefaults(fmt.Sprintf("simulation.instances[%d]", i), has)
	}
}

func setDefault[T any](set isSet, path string, field *T, v T) {
	if !set(path) {
		*field = v
	}
}

func (g *Global) setDefaults(path string, set isSet) {
	setDefault(set, path+".model_reload_threshold", &g.ModelReloadThreshold, DefaultModelReloadThreshold)
	setDefault(set, path+".shutdown_timeout", &g.ShutdownTimeout, DefaultShutdownTimeout)
	setDefault(set, path+".readiness_probe_interval", &g.ReadinessProbeInterval, DefaultReadinessProbeInterval)
	setDefault(set, path+".queue_wait_threshold", &g.QueueWaitThreshold, DefaultQueueWaitThreshold)
	setDefault(set, path+".shard.index", &g.Shard.Index, DefaultShardIndex)
	setDefault(set, path+".shard.count", &g.Shard.Count, DefaultShardCount)
	setDefault(set, path+".metrics.classic_histograms", &g.Metrics.ClassicHistograms, DefaultClassicHistograms)
}

func (t *Target) setDefaults(path string, set isSet) {
	setDefault(set, path+".num_parallel", &t.NumParallel, DefaultNumParallel)
	setDefault(set, path+".poll_interval", &t.PollInterval, DefaultPollInterval)
	p := path + ".timeouts"
	setDefault(set, p+".connect", &t.Timeouts.Connect, DefaultConnectTimeout)
	setDefault(set, p+".first_token", &t.Timeouts.FirstToken, DefaultFirstTokenTimeout)
	setDefault(set, p+".idle", &t.Timeouts.Idle, DefaultIdleTimeout)
	setDefault(set, p+".request", &t.Timeouts.Request, DefaultRequestTimeout)
	p = path + ".retry"
	setDefault(set, p+".max_attempts", &t.Retry.MaxAttempts, DefaultRetryMaxAttempts)
	setDefault(set, p+".backoff_min", &t.Retry.BackoffMin, DefaultRetryBackoffMin)
	setDefault(set, p+".backoff_max", &t.Retry.BackoffMax, DefaultRetryBackoffMax)
}

func (a *Agent) setDefaults(path string, set isSet) {
	setDefault(set, path+".api", &a.API, DefaultAPI)
	if len(a.Targets) > 1 {
		setDefault(set, path+".balance", &a.Balance, DefaultBalance)
	}
}

func (w *Workload) setDefaults(path string, set isSet) {
	for i := range w.Agents {
		setDefault(set, fmt.Sprintf("%s.agents[%d].replicas", path, i), &w.Agents[i].Replicas, DefaultReplicas)
	}
	setDefault(set, path+".arrival.mode", &w.Arrival.Mode, DefaultArrival)
	p := path + ".calibration"
	setDefault(set, p+".at_start", &w.Calibration.AtStart, DefaultCalibrationAtStart)
	setDefault(set, p+".runs", &w.Calibration.Runs, DefaultCalibrationRuns)
	setDefault(set, p+".max_duration", &w.Calibration.MaxDuration, DefaultCalibrationMaxDuration)
	setDefault(set, p+".on_version_change", &w.Calibration.OnVersionChange, DefaultCalibrationOnVersionChange)
}

func (g *SimGPU) setDefaults(path string, set isSet) {
	setDefault(set, path+".decode_rate", &g.DecodeRate, DefaultSimDecodeRate)
	setDefault(set, path+".concurrency_gain", &g.ConcurrencyGain, DefaultSimConcurrencyGain)
	setDefault(set, path+".memory_bytes", &g.MemoryBytes, DefaultSimMemoryBytes)
}

func (s *SimInstance) setDefaults(path string, set isSet) {
	setDefault(set, path+".num_parallel", &s.NumParallel, DefaultSimNumParallel)
	setDefault(set, path+".max_queue", &s.MaxQueue, DefaultSimMaxQueue)
	setDefault(set, path+".prompt_eval_rate", &s.PromptEvalRate, DefaultSimPromptEvalRate)
	setDefault(set, path+".jitter", &s.Jitter, DefaultSimJitter)
	setDefault(set, path+".load_delay", &s.LoadDelay, DefaultSimLoadDelay)
	setDefault(set, path+".version", &s.Version, DefaultSimVersion)
	if len(s.Models) == 0 {
		s.Models = []SimModel{{Name: DefaultSimModel, SizeBytes: DefaultSimModelSize}}
	}
}
