// Package config owns Chimeraforge's configuration: its types, defaults,
// loading (YAML file, then CHIMERAFORGE_ environment variables, then flags,
// through koanf) and validation. A Config that Load returns is complete and
// valid; nothing downstream re-checks it.
package config

import (
	"text/template"
	"time"
)

// Config is the whole configuration of one daemon.
type Config struct {
	Global    Global     `koanf:"global"`
	Targets   []Target   `koanf:"targets"`
	Agents    []Agent    `koanf:"agents"`
	Workloads []Workload `koanf:"workloads"`
	// Simulation declares embedded Ollama simulators that the daemon starts
	// on loopback; a target whose url is "sim://NAME" points at instance NAME.
	Simulation Simulation `koanf:"simulation"`
}

// Global holds daemon-wide settings.
type Global struct {
	// ModelReloadThreshold: a load_duration above this on a request that is
	// not an agent's first on a target counts as a model_reload contention.
	ModelReloadThreshold time.Duration `koanf:"model_reload_threshold"`
	// ShutdownTimeout bounds how long SIGTERM waits for in-flight work.
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`
	// ReadinessProbeInterval is how often targets that never answered
	// /api/version are probed again until they do.
	ReadinessProbeInterval time.Duration `koanf:"readiness_probe_interval"`
	// QueueWaitThreshold: a successful request whose estimated queue wait
	// is above this counts as a queue_wait contention.
	QueueWaitThreshold time.Duration `koanf:"queue_wait_threshold"`
	// Shard is the share of the load this daemon runs when several daemons
	// run the same configuration.
	Shard Shard `koanf:"shard"`
	// Metrics shapes what /metrics exposes.
	Metrics Metrics `koanf:"metrics"`
}

// Metrics shapes the exposition. Its settings take effect when the daemon
// starts: the registry is built once, so a reload that changes them is
// refused.
type Metrics struct {
	// ClassicHistograms exposes every histogram with classic buckets
	// (_bucket{le=...}) beside its native histogram. false exposes native
	// histograms only, which cuts the series of a large configuration by
	// more than half (docs/metrics.md, "Series budget"); quantiles then
	// need a Prometheus that ingests native histograms.
	ClassicHistograms bool `koanf:"classic_histograms"`
}

// Shard places a daemon among Count daemons (replicas, for example the pods
// of a Kubernetes StatefulSet) that run the same configuration and together
// generate its load; each runs about 1/Count of it and Prometheus adds them
// up. Closed-loop workloads deal their agent replicas round-robin across the
// shards; open-loop workloads divide their rate (docs/config.md, "Scale-out").
// Index 0 of Count 1, the default, runs everything.
type Shard struct {
	// Index is this daemon's shard, from 0 to Count-1.
	Index int `koanf:"index"`
	// Count is the number of shards.
	Count int `koanf:"count"`
}

// Target is one Ollama server.
type Target struct {
	Name        string            `koanf:"name"`
	URL         string            `koanf:"url"`
	Headers     map[string]Secret `koanf:"headers"`
	Timeouts    Timeouts          `koanf:"timeouts"`
	Retry       Retry             `koanf:"retry"`
	NumParallel int               `koanf:"num_parallel"`
	// PollInterval is how often the target's /api/version and /api/ps are
	// read for the Ollama state metrics and to notice an upgrade.
	PollInterval time.Duration `koanf:"poll_interval"`
}

// Timeouts bound each phase of a call to a target.
type Timeouts struct {
	Connect    time.Duration `koanf:"connect"`
	FirstToken time.Duration `koanf:"first_token"`
	Idle       time.Duration `koanf:"idle"`
	Request    time.Duration `koanf:"request"`
}

// Retry bounds how a failing target is retried and backed off. A request
// that failed before the server streamed anything (connection failed, 429,
// 5xx) is sent again, up to MaxAttempts attempts in all; while a target
// keeps failing, every request to it waits a growing, jittered backoff
// between BackoffMin and BackoffMax, shared by every agent and replica that
// uses the target.
type Retry struct {
	// MaxAttempts is the attempts per workflow step at most; 1 never
	// retries.
	MaxAttempts int `koanf:"max_attempts"`
	// BackoffMin is the first backoff of a failing target; each further
	// failure doubles it, up to BackoffMax.
	BackoffMin time.Duration `koanf:"backoff_min"`
	BackoffMax time.Duration `koanf:"backoff_max"`
}

// Secret is a header value given inline, read from an environment variable
// or read from a file. Exactly one source is set. Its resolved value is never
// printed: String and the YAML/JSON forms redact it.
type Secret struct {
	Value string `koanf:"value"`
	Env   string `koanf:"env"`
	File  string `koanf:"file"`

	resolved string
}

// Balance policies for agents with several targets.
const (
	BalanceRoundRobin    = "round_robin"
	BalanceLeastInFlight = "least_in_flight"
)

// APIs an agent can call.
const (
	APIChat     = "chat"
	APIGenerate = "generate"
)

// Agent is one kind of LLM agent: a workflow of steps sent to a model.
type Agent struct {
	Name string `koanf:"name"`
	// Target names one target; Targets names several, used per Balance.
	// Exactly one of the two is set.
	Target    string         `koanf:"target"`
	Targets   []string       `koanf:"targets"`
	Balance   string         `koanf:"balance"`
	Model     string         `koanf:"model"`
	API       string         `koanf:"api"`
	Options   Options        `koanf:"options"`
	KeepAlive *time.Duration `koanf:"keep_alive"`
	ThinkTime time.Duration  `koanf:"think_time"`
	// KeepHistory sends the previous steps' messages with each chat step.
	KeepHistory bool              `koanf:"keep_history"`
	Variables   map[string]string `koanf:"variables"`
	Workflow    []Step            `koanf:"workflow"`
}

// Step is one call of a workflow.
type Step struct {
	Name   string `koanf:"name"`
	System string `koanf:"system"`
	// Prompt is a text/template executed with TemplateData.
	Prompt string `koanf:"prompt"`

	tmpl *template.Template
}

// TemplateData is what a step's prompt template sees.
type TemplateData struct {
	Previous string            // output of the previous step ("" for the first)
	Outputs  map[string]string // output of every earlier step, by step name
	Vars     map[string]string // the agent's variables
	Run      uint64            // the replica's run number, from 1
	Step     string            // this step's name
	Agent    string
	Replica  int
}

// Options are the model options Chimeraforge sends. Unset ones are omitted;
// when none is set, no options are sent.
type Options struct {
	NumGPU        *int     `koanf:"num_gpu"`
	NumCtx        *int     `koanf:"num_ctx"`
	Temperature   *float64 `koanf:"temperature"`
	TopP          *float64 `koanf:"top_p"`
	TopK          *int     `koanf:"top_k"`
	RepeatPenalty *float64 `koanf:"repeat_penalty"`
	NumPredict    *int     `koanf:"num_predict"`
	Seed          *int     `koanf:"seed"`
}

// Arrival modes.
const (
	ArrivalClosed   = "closed"
	ArrivalConstant = "constant"
	ArrivalPoisson  = "poisson"
)

// Workload runs agents together under one arrival mode.
type Workload struct {
	Name     string          `koanf:"name"`
	Agents   []WorkloadAgent `koanf:"agents"`
	Arrival  Arrival         `koanf:"arrival"`
	Duration time.Duration   `koanf:"duration"` // 0 = until stopped
	// RampUp spreads the start of a closed-loop workload's replicas evenly
	// over this long (from the end of the start calibration), instead of
	// starting them all at once: thousands of replicas that start together
	// send their requests together, and with answers of one length keep
	// doing so. 0 starts them all at once.
	RampUp time.Duration `koanf:"ramp_up"`
	// Calibration says when each agent's solo baseline is measured.
	Calibration Calibration `koanf:"calibration"`
}

// Calibration measures each agent's solo baseline: the agent's own workflow
// loop, one replica, with the workload's other agents paused.
type Calibration struct {
	// AtStart calibrates before the workload's first run.
	AtStart bool `koanf:"at_start"`
	// Runs is how many solo workflow runs measure one agent; MaxDuration
	// ends them earlier (after at least one run).
	Runs        int           `koanf:"runs"`
	MaxDuration time.Duration `koanf:"max_duration"`
	// Interval recalibrates on a schedule; 0 = never.
	Interval time.Duration `koanf:"interval"`
	// OnVersionChange recalibrates when a target of the workload reports a
	// new Ollama version.
	OnVersionChange bool `koanf:"on_version_change"`
}

// WorkloadAgent is one agent of a workload and how many replicas run it.
type WorkloadAgent struct {
	Agent    string `koanf:"agent"`
	Replicas int    `koanf:"replicas"`
}

// Arrival says when workflow runs start.
type Arrival struct {
	Mode string `koanf:"mode"`
	// Rate is workflow starts per second (open-loop modes).
	Rate float64 `koanf:"rate"`
	// MaxInFlight caps concurrent runs (open-loop modes); arrivals beyond it
	// are dropped and counted.
	MaxInFlight int `koanf:"max_in_flight"`
	// Seed makes Poisson arrivals reproducible; 0 picks one at start.
	Seed int64 `koanf:"seed"`
}

// SimScheme is the URL scheme of targets served by an embedded simulator.
const SimScheme = "sim"

// Simulation declares simulated GPUs and Ollama instances. It is a test
// double and a demo, never a measurement of Ollama itself.
type Simulation struct {
	GPUs      []SimGPU      `koanf:"gpus"`
	Instances []SimInstance `koanf:"instances"`
}

// SimGPU is one simulated GPU whose decode throughput its instances share.
type SimGPU struct {
	Name string `koanf:"name"`
	// DecodeRate is tokens per second of a single stream alone on the GPU.
	DecodeRate float64 `koanf:"decode_rate"`
	// ConcurrencyGain is the extra aggregate throughput each additional
	// concurrent stream adds, as a fraction of DecodeRate (0 = none, 1 = linear).
	ConcurrencyGain float64 `koanf:"concurrency_gain"`
	MemoryBytes     int64   `koanf:"memory_bytes"`
}

// SimInstance is one simulated Ollama server.
type SimInstance struct {
	Name        string `koanf:"name"`
	GPU         string `koanf:"gpu"` // name of a SimGPU; empty = a private GPU with defaults
	NumParallel int    `koanf:"num_parallel"`
	MaxQueue    int    `koanf:"max_queue"`
	// PromptEvalRate is prompt tokens per second.
	PromptEvalRate float64       `koanf:"prompt_eval_rate"`
	Jitter         float64       `koanf:"jitter"` // relative, 0..1, on each token interval
	LoadDelay      time.Duration `koanf:"load_delay"`
	Seed           int64         `koanf:"seed"`
	Version        string        `koanf:"version"`
	Models         []SimModel    `koanf:"models"`
	Faults         SimFaults     `koanf:"faults"`
}

// SimModel is a model an instance serves.
type SimModel struct {
	Name      string `koanf:"name"`
	SizeBytes int64  `koanf:"size_bytes"`
}

// SimFaults injects failures, each a probability per request.
type SimFaults struct {
	ErrorRatio    float64       `koanf:"error_ratio"`    // HTTP 500 before streaming
	StallRatio    float64       `koanf:"stall_ratio"`    // pause mid-stream
	StallDuration time.Duration `koanf:"stall_duration"` // length of that pause
	DropRatio     float64       `koanf:"drop_ratio"`     // close the connection mid-stream
}
