// Package observe defines what the daemon measures and the seam through which
// it hands those measurements on. The daemon produces observations; exporters
// consume them. Neither side imports the other, and nothing here depends on
// Prometheus.
package observe

import "time"

// Labels identify the series an Ollama call is recorded under. Every value
// comes from configuration, never from a prompt, a response or an error.
type Labels struct {
	Workload string
	Agent    string
	Target   string
	Model    string
	Step     string // the workflow step's name (agents[].workflow[].name)
}

// Outcome is how a request or a workflow run ended.
type Outcome string

// Outcomes. The set is fixed so that label cardinality stays bounded.
const (
	OutcomeSuccess  Outcome = "success"
	OutcomeError    Outcome = "error"
	OutcomeCanceled Outcome = "canceled"
)

// Reason classifies a failed request. The set is fixed.
type Reason string

// Reasons a request can fail for.
const (
	ReasonNone              Reason = ""
	ReasonConnect           Reason = "connect"
	ReasonHTTP4xx           Reason = "http_4xx"
	ReasonHTTP5xx           Reason = "http_5xx"
	ReasonModelNotFound     Reason = "model_not_found"
	ReasonQueueFull         Reason = "queue_full"
	ReasonStreamBroken      Reason = "stream_broken"
	ReasonFirstTokenTimeout Reason = "first_token_timeout"
	ReasonIdleTimeout       Reason = "idle_timeout"
	ReasonRequestTimeout    Reason = "request_timeout"
	ReasonCanceled          Reason = "canceled"
	ReasonServerError       Reason = "server_error"
)

// Reasons lists every Reason that a failed request may carry, in a stable
// order; exporters pre-create their series from it.
var Reasons = []Reason{
	ReasonConnect, ReasonHTTP4xx, ReasonHTTP5xx, ReasonModelNotFound,
	ReasonQueueFull, ReasonStreamBroken, ReasonFirstTokenTimeout,
	ReasonIdleTimeout, ReasonRequestTimeout, ReasonCanceled, ReasonServerError,
}

// RetryReasons lists the reasons of the failures that the daemon may send
// again, in a stable order: nothing was generated yet (the server could not
// be reached, or it answered 429 or 5xx before streaming). Of http_4xx only
// 429 is retried. Exporters pre-create their retry series from it.
var RetryReasons = []Reason{ReasonConnect, ReasonHTTP4xx, ReasonHTTP5xx, ReasonQueueFull}

// Contention kinds: evidence that a request competed with others for the
// same Ollama server.
type Contention string

// Contention kinds. The set is fixed.
const (
	// ContentionSlotSaturation: the request started while its target already
	// had num_parallel requests in flight from this daemon.
	ContentionSlotSaturation Contention = "slot_saturation"
	// ContentionQueueRejected: Ollama answered 503 because its queue was full.
	ContentionQueueRejected Contention = "queue_rejected"
	// ContentionModelReload: load_duration above the configured threshold on
	// a request that was not the agent's first on that target.
	ContentionModelReload Contention = "model_reload"
	// ContentionQueueWait: a successful request whose estimated queue wait
	// was above the configured threshold.
	ContentionQueueWait Contention = "queue_wait"
)

// Contentions lists every Contention kind in a stable order.
var Contentions = []Contention{ContentionSlotSaturation, ContentionQueueRejected, ContentionModelReload, ContentionQueueWait}

// Request is the observation of one Ollama call, produced when it ends.
type Request struct {
	Labels
	Outcome Outcome
	Reason  Reason // ReasonNone on success

	// Status is the HTTP status of the server's answer; 0 when none
	// arrived (the server could not be reached, or the request was canceled
	// or timed out first).
	Status int

	// Client-side timings.
	Duration      time.Duration // from sending the request to the end of the stream or the error
	FirstToken    bool          // a chunk with non-empty content or thinking text arrived
	TimeToFirst   time.Duration // valid when FirstToken
	QueueWait     time.Duration // TTFT - (load + prompt eval), floored at 0; valid when FirstToken and Done
	Done          bool          // the final chunk (done: true) was received
	ContentChunks int           // chunks that carried content or thinking text
	LastToken     time.Duration // from sending to the last chunk with text; valid when FirstToken
	MaxTokenGap   time.Duration // longest time between two consecutive chunks with text; 0 with fewer than two

	// Server-reported, from the final chunk (zero unless Done).
	EvalCount          int
	PromptEvalCount    int
	EvalDuration       time.Duration
	PromptEvalDuration time.Duration
	LoadDuration       time.Duration
	TotalDuration      time.Duration

	// Contention seen on this request, besides slot saturation which is
	// reported when the request starts.
	ModelReload   bool
	QueueRejected bool
	QueueWaited   bool // QueueWait above the configured threshold
}

// Run is the observation of one workflow run of one agent replica.
type Run struct {
	Workload string
	Agent    string
	Outcome  Outcome
	Duration time.Duration
	Steps    int // steps that completed successfully
}

// Recorder records the calls of one label set. Sinks hand one out per
// (workload, agent, target, model, step) so the per-chunk path does no
// lookup. Implementations must be safe for concurrent use.
type Recorder interface {
	// Started marks a request in flight. saturated reports that the target
	// already had num_parallel requests in flight when it started.
	Started(saturated bool)
	// TokenGap records the time between two consecutive content chunks.
	// It is on the per-chunk hot path: it must not allocate.
	TokenGap(d time.Duration)
	// Finished records a request that ended and takes it out of flight.
	Finished(r *Request)
	// Retried records that a request of this label set, which failed for
	// reason (one of RetryReasons), is being sent again: called once per
	// re-send, when it is sent. The re-sent request is a request of its own
	// and is recorded by the recorder of the target it goes to.
	Retried(reason Reason)
}

// Sink consumes observations. Implementations must be safe for concurrent use.
type Sink interface {
	// Recorder returns the recorder for one label set; the daemon calls it
	// once per agent, target and workflow step when it starts the agent,
	// not per request.
	Recorder(l Labels) Recorder
	// RunFinished records one workflow run.
	RunFinished(r Run)
	// ScheduleDelay records how late an open-loop arrival started against
	// its schedule.
	ScheduleDelay(workload string, d time.Duration)
	// ArrivalDropped counts an open-loop arrival dropped because the
	// workload was at its in-flight cap.
	ArrivalDropped(workload string)

	// AgentActive moves the number of replicas of an agent that are running
	// (not paused for a calibration, not stopped) by delta.
	AgentActive(workload, agent string, delta int)
	// Calibrating marks a workload's calibration as started or ended.
	Calibrating(workload string, on bool)
	// Calibrated records the end of one agent's solo calibration: its
	// baselines (one per target it used) when ok, nothing else otherwise.
	Calibrated(c Calibration)

	// TargetPolled records one poll of a target's /api/version and /api/ps.
	TargetPolled(s TargetState)
	// TargetRemoved drops what was recorded about a target a reload removed.
	TargetRemoved(target string)
}

// TargetState is one poll of an Ollama server: its version and the models
// it has loaded (/api/ps), as the server reports them.
type TargetState struct {
	Target        string
	Up            bool // both endpoints answered
	Version       string
	Models        []LoadedModel
	ProbeDuration time.Duration
}

// LoadedModel is one entry of /api/ps.
type LoadedModel struct {
	Name          string
	SizeBytes     int64
	VRAMBytes     int64
	ContextLength int
	ExpiresAt     time.Time
}

// Calibration is the result of measuring one agent alone: its own workflow
// loop, one replica, with the other agents of its workload paused.
type Calibration struct {
	Workload string
	Agent    string
	Model    string
	OK       bool // every solo run succeeded
	Runs     int
	Wall     time.Duration // wall-clock time of the solo loop
	// TokensPerSecond is generated tokens (server-reported eval_count) per
	// wall-clock second of the solo loop, by target.
	TokensPerSecond map[string]float64
	At              time.Time
}
