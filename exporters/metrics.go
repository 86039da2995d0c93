// Package exporters turns the daemon's observations into Prometheus metrics.
// It owns every Prometheus type in Chimeraforge: the daemon hands
// observations to an observe.Sink and never imports Prometheus itself.
// docs/metrics.md is the contract for every metric registered here; a test
// keeps the two in step.
package exporters

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chimeraforge/chimeraforge/observe"
)

// Classic bucket boundaries, in seconds. Native histograms are exposed
// alongside them, or alone (see ClassicHistograms and histogramOpts).
var (
	// TTFT covers a warm GPU (tens of ms) to a cold model load on a CPU.
	ttftBuckets = []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120}
	// Inter-token gaps: ~1 ms (fast GPU) to 2 s (overloaded CPU).
	interTokenBuckets = []float64{0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2}
	// A whole streamed answer: sub-second to the longest request timeout.
	requestBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600}
	// Queue wait is 0 on an idle server and grows by whole answers under load.
	queueWaitBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}
	// A workflow run is several requests in sequence.
	runBuckets = []float64{0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800}
	// Schedule delay is ~0 while the daemon keeps up and grows when it does not.
	scheduleDelayBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 10, 30, 60}
)

// Native histogram settings shared by every histogram.
const (
	nativeBucketFactor    = 1.1
	nativeMaxBucketNumber = 160
	nativeMinResetPeriod  = time.Hour
)

// histogramOpts are the options of every histogram: the native histogram
// settings, and buckets as the classic buckets when classic is true. With
// classic false, Buckets stays nil: client_golang then makes no classic
// buckets at all (it falls back to DefBuckets only for a histogram without
// a native bucket factor), so the text format shows _sum, _count and the
// +Inf bucket alone and protobuf carries the native buckets.
func histogramOpts(name, help string, buckets []float64, classic bool) prometheus.HistogramOpts {
	o := prometheus.HistogramOpts{
		Name:                            name,
		Help:                            help,
		NativeHistogramBucketFactor:     nativeBucketFactor,
		NativeHistogramMaxBucketNumber:  nativeMaxBucketNumber,
		NativeHistogramMinResetDuration: nativeMinResetPeriod,
	}
	if classic {
		o.Buckets = buckets
	}
	return o
}

// options are what NewMetrics is given: the settings that shape the
// registry, fixed for its life.
type options struct {
	classicHistograms bool
}

func defaultOptions() options {
	return options{classicHistograms: true}
}

// Option is a setting of NewMetrics.
type Option func(*options)

// ClassicHistograms chooses whether every histogram is exposed with its
// classic buckets beside its native histogram (on, the default) or as a
// native histogram alone (global.metrics.classic_histograms). Native-only
// exposes 3 series per histogram in the text format instead of 3 plus
// one per classic bucket; quantiles then need a Prometheus that ingests
// native histograms.
func ClassicHistograms(on bool) Option {
	return func(o *options) { o.classicHistograms = on }
}

// Label names of each family. Every series a recorder owns carries the
// workflow step; the in-flight gauge is shared by the steps (and models) of
// an agent on a target, and baselines are per target and model.
var (
	requestLabels    = []string{LabelWorkload, LabelAgent, LabelTarget, LabelModel, LabelStep}
	outcomeLabels    = []string{LabelWorkload, LabelAgent, LabelTarget, LabelModel, LabelStep, LabelOutcome}
	reasonLabels     = []string{LabelWorkload, LabelAgent, LabelTarget, LabelModel, LabelStep, LabelReason}
	contentionLabels = []string{LabelWorkload, LabelAgent, LabelTarget, LabelStep, LabelKind}
	retryLabels      = []string{LabelWorkload, LabelAgent, LabelTarget, LabelStep, LabelReason}
	inFlightLabels   = []string{LabelWorkload, LabelAgent, LabelTarget}
	baselineLabels   = []string{LabelWorkload, LabelAgent, LabelTarget, LabelModel}
	runLabels        = []string{LabelWorkload, LabelAgent, LabelOutcome}
	agentLabels      = []string{LabelWorkload, LabelAgent}
	workloadLabels   = []string{LabelWorkload}
)

// Metrics is the Prometheus observe.Sink: it records requests, workflow runs
// and arrivals into the registry it was created with. It is safe for
// concurrent use.
type Metrics struct {
	requests        *prometheus.CounterVec
	errors          *prometheus.CounterVec
	retries         *prometheus.CounterVec
	generatedTokens *countVec // server-reported counts: see countVec
	promptTokens    *countVec
	evalSeconds     *prometheus.CounterVec
	promptEvalSecs  *prometheus.CounterVec
	loadSeconds     *prometheus.CounterVec
	contention      *prometheus.CounterVec
	agentRuns       *prometheus.CounterVec
	arrivalsDropped *prometheus.CounterVec

	ttft          *prometheus.HistogramVec
	interToken    *prometheus.HistogramVec
	duration      *prometheus.HistogramVec
	queueWait     *prometheus.HistogramVec
	runDuration   *prometheus.HistogramVec
	scheduleDelay *prometheus.HistogramVec

	inFlight *prometheus.GaugeVec

	cal    calibrationMetrics
	ollama *ollamaMetrics
	shard  *prometheus.GaugeVec

	// perAgent are the vectors labelled by workload and agent, which Forget
	// clears.
	perAgent []interface {
		DeletePartialMatch(prometheus.Labels) int
	}

	opts options

	mu   sync.Mutex
	recs map[observe.Labels]*recorder
}

var _ observe.Sink = (*Metrics)(nil)

// NewMetrics creates the request, run and arrival metrics and registers them
// with reg. On error nothing stays registered. Without options every
// histogram has classic buckets and a native histogram.
func NewMetrics(reg prometheus.Registerer, opts ...Option) (*Metrics, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	classic := o.classicHistograms
	m := &Metrics{
		opts: o,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRequestsTotal,
			Help: "Ollama requests that ended, by outcome.",
		}, outcomeLabels),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRequestErrorsTotal,
			Help: "Ollama requests that did not succeed, by reason (canceled requests count as reason canceled).",
		}, reasonLabels),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRequestRetriesTotal,
			Help: "Failed Ollama requests sent again, by the target and reason of the attempt that failed.",
		}, retryLabels),
		generatedTokens: newCountVec(MetricGeneratedTokensTotal,
			"Tokens generated, as reported by the server (sum of eval_count).", requestLabels),
		promptTokens: newCountVec(MetricPromptTokensTotal,
			"Prompt tokens evaluated, as reported by the server (sum of prompt_eval_count).", requestLabels),
		evalSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricEvalDurationSecondsTotal,
			Help: "Time the server spent generating tokens (sum of eval_duration).",
		}, requestLabels),
		promptEvalSecs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricPromptEvalDurationSecondsTotal,
			Help: "Time the server spent evaluating prompts (sum of prompt_eval_duration).",
		}, requestLabels),
		loadSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricLoadDurationSecondsTotal,
			Help: "Time the server spent loading the model (sum of load_duration).",
		}, requestLabels),
		contention: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricContentionEventsTotal,
			Help: "Requests that showed contention for their Ollama server, by kind.",
		}, contentionLabels),
		agentRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricAgentRunsTotal,
			Help: "Workflow runs of an agent that ended, by outcome.",
		}, runLabels),
		arrivalsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricArrivalsDroppedTotal,
			Help: "Open-loop arrivals dropped because the workload was at max_in_flight.",
		}, workloadLabels),

		ttft: prometheus.NewHistogramVec(histogramOpts(MetricTimeToFirstTokenSeconds,
			"Time from sending a successful request to its first chunk with content or thinking text (to the done chunk if it had none).",
			ttftBuckets, classic), requestLabels),
		interToken: prometheus.NewHistogramVec(histogramOpts(MetricInterTokenLatencySeconds,
			"Time between consecutive content chunks of a stream, measured by the client.",
			interTokenBuckets, classic), requestLabels),
		duration: prometheus.NewHistogramVec(histogramOpts(MetricRequestDurationSeconds,
			"Time from sending a request to the end of its stream or its error, whatever the outcome.",
			requestBuckets, classic), requestLabels),
		queueWait: prometheus.NewHistogramVec(histogramOpts(MetricQueueWaitSeconds,
			"Estimated wait in the server's queue of a successful request: max(0, TTFT - (load_duration + prompt_eval_duration)).",
			queueWaitBuckets, classic), requestLabels),
		runDuration: prometheus.NewHistogramVec(histogramOpts(MetricAgentRunDurationSeconds,
			"Duration of an agent's workflow runs, whatever the outcome.",
			runBuckets, classic), agentLabels),
		scheduleDelay: prometheus.NewHistogramVec(histogramOpts(MetricScheduleDelaySeconds,
			"How late an open-loop arrival started against its schedule.",
			scheduleDelayBuckets, classic), workloadLabels),

		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricRequestsInFlight,
			Help: "Ollama requests this daemon has in flight.",
		}, inFlightLabels),

		cal:    newCalibrationMetrics(),
		ollama: newOllamaMetrics(),
		shard:  newShardInfo(),

		recs: map[observe.Labels]*recorder{},
	}
	m.perAgent = []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{
		m.requests, m.errors, m.retries, m.generatedTokens, m.promptTokens, m.evalSeconds,
		m.promptEvalSecs, m.loadSeconds, m.contention, m.agentRuns,
		m.ttft, m.interToken, m.duration, m.queueWait, m.runDuration, m.inFlight,
	}
	m.perAgent = append(m.perAgent, m.cal.perAgent()...)
	err := registerAll(reg, append([]prometheus.Collector{
		m.requests, m.errors, m.retries, m.generatedTokens, m.promptTokens, m.evalSeconds,
		m.promptEvalSecs, m.loadSeconds, m.contention, m.agentRuns, m.arrivalsDropped,
		m.ttft, m.interToken, m.duration, m.queueWait, m.runDuration, m.scheduleDelay,
		m.inFlight, m.shard}, append(m.cal.collectors(), m.ollama.collectors()...)...)...)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// CheckOptions reports whether the Metrics could run with opts, which a
// configuration reload asks for: an option that differs from those the
// Metrics were created with is an error, since the families are registered
// once. It changes nothing.
func (m *Metrics) CheckOptions(opts ...Option) error {
	o := m.opts
	for _, opt := range opts {
		opt(&o)
	}
	if o.classicHistograms != m.opts.classicHistograms {
		return fmt.Errorf("global.metrics.classic_histograms: the daemon started with %t and cannot change it to %t while it runs "+
			"(the histograms are registered once, at start); restart the daemon to apply it",
			m.opts.classicHistograms, o.classicHistograms)
	}
	return nil
}

// registerAll registers cs in order. If one fails, it unregisters those
// already registered and returns the error.
func registerAll(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return errNilRegisterer
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("register %s: %w", describe(c), err)
		}
	}
	return nil
}

// describe names a collector by the first metric it describes.
func describe(c prometheus.Collector) string {
	ch := make(chan *prometheus.Desc, 1)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	name := "collector"
	for d := range ch { // drain, so that Describe returns
		if name == "collector" {
			name = d.String()
		}
	}
	return name
}

// Recorder returns the recorder of one label set. Its series, for every
// outcome, reason and contention kind, and its retries for every reason that
// may be retried, exist at 0 from this call on, so that
// rate() works from the first scrape. Calls with equal labels return the
// same recorder. Recorders that differ only in model or step share their
// in-flight gauge.
func (m *Metrics) Recorder(l observe.Labels) observe.Recorder {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.recs[l]; ok {
		return r
	}
	r := m.newRecorder(l)
	m.recs[l] = r
	return r
}

func (m *Metrics) newRecorder(l observe.Labels) *recorder {
	w, a, t, mo, st := l.Workload, l.Agent, l.Target, l.Model, l.Step
	r := &recorder{
		inFlight:       m.inFlight.WithLabelValues(w, a, t),
		success:        m.requests.WithLabelValues(w, a, t, mo, st, string(observe.OutcomeSuccess)),
		failed:         m.requests.WithLabelValues(w, a, t, mo, st, string(observe.OutcomeError)),
		canceled:       m.requests.WithLabelValues(w, a, t, mo, st, string(observe.OutcomeCanceled)),
		errs:           make(map[observe.Reason]prometheus.Counter, len(observe.Reasons)),
		retries:        make(map[observe.Reason]prometheus.Counter, len(observe.RetryReasons)),
		generated:      m.generatedTokens.WithLabelValues(w, a, t, mo, st),
		prompt:         m.promptTokens.WithLabelValues(w, a, t, mo, st),
		evalSeconds:    m.evalSeconds.WithLabelValues(w, a, t, mo, st),
		promptEvalSecs: m.promptEvalSecs.WithLabelValues(w, a, t, mo, st),
		loadSeconds:    m.loadSeconds.WithLabelValues(w, a, t, mo, st),
		ttft:           m.ttft.WithLabelValues(w, a, t, mo, st),
		interToken:     m.interToken.WithLabelValues(w, a, t, mo, st),
		duration:       m.duration.WithLabelValues(w, a, t, mo, st),
		queueWait:      m.queueWait.WithLabelValues(w, a, t, mo, st),
		saturation:     m.contention.WithLabelValues(w, a, t, st, string(observe.ContentionSlotSaturation)),
		rejected:       m.contention.WithLabelValues(w, a, t, st, string(observe.ContentionQueueRejected)),
		reload:         m.contention.WithLabelValues(w, a, t, st, string(observe.ContentionModelReload)),
		waited:         m.contention.WithLabelValues(w, a, t, st, string(observe.ContentionQueueWait)),
	}
	for _, reason := range observe.Reasons {
		r.errs[reason] = m.errors.WithLabelValues(w, a, t, mo, st, string(reason))
	}
	for _, reason := range observe.RetryReasons {
		r.retries[reason] = m.retries.WithLabelValues(w, a, t, st, string(reason))
	}
	// The run and arrival series of the agent and workload start at 0 too,
	// the run duration included: a run against a target that is down can
	// take several backoff windows to end.
	for _, o := range []observe.Outcome{observe.OutcomeSuccess, observe.OutcomeError, observe.OutcomeCanceled} {
		m.agentRuns.WithLabelValues(w, a, string(o))
	}
	m.runDuration.WithLabelValues(w, a)
	m.arrivalsDropped.WithLabelValues(w)
	m.cal.active.WithLabelValues(w, a)
	m.cal.calibrating.WithLabelValues(w)
	return r
}

// RunFinished records one workflow run. An outcome outside the fixed set is
// counted as error.
func (m *Metrics) RunFinished(r observe.Run) {
	m.agentRuns.WithLabelValues(r.Workload, r.Agent, string(outcome(r.Outcome))).Inc()
	m.runDuration.WithLabelValues(r.Workload, r.Agent).Observe(r.Duration.Seconds())
}

// ScheduleDelay records how late an open-loop arrival of workload started.
func (m *Metrics) ScheduleDelay(workload string, d time.Duration) {
	m.scheduleDelay.WithLabelValues(workload).Observe(max(0, d).Seconds())
}

// ArrivalDropped counts an open-loop arrival of workload that was dropped.
func (m *Metrics) ArrivalDropped(workload string) {
	m.arrivalsDropped.WithLabelValues(workload).Inc()
}

// Forget deletes every series of agent in workload, after a configuration
// reload removed it, and forgets its recorders: a later Recorder call for the
// agent starts its series afresh. Recorders handed out before keep working
// but no longer reach the registry. Workload-wide series stay.
func (m *Metrics) Forget(workload, agent string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	match := prometheus.Labels{LabelWorkload: workload, LabelAgent: agent}
	for _, v := range m.perAgent {
		v.DeletePartialMatch(match)
	}
	for l := range m.recs {
		if l.Workload == workload && l.Agent == agent {
			delete(m.recs, l)
		}
	}
}

// outcome maps an outcome outside the fixed set to error, so that label
// values stay within the documented set.
func outcome(o observe.Outcome) observe.Outcome {
	switch o {
	case observe.OutcomeSuccess, observe.OutcomeCanceled:
		return o
	default:
		return observe.OutcomeError
	}
}

// recorder holds the pre-resolved series of one label set, so that recording
// does no label lookup and no allocation.
type recorder struct {
	inFlight prometheus.Gauge

	success, failed, canceled prometheus.Counter
	errs                      map[observe.Reason]prometheus.Counter // read-only after creation
	retries                   map[observe.Reason]prometheus.Counter // observe.RetryReasons; read-only

	generated, prompt                        *count
	evalSeconds, promptEvalSecs, loadSeconds prometheus.Counter

	ttft, interToken, duration, queueWait prometheus.Observer

	saturation, rejected, reload, waited prometheus.Counter
}

var _ observe.Recorder = (*recorder)(nil)

// Started counts the request in flight and a slot_saturation contention
// event when saturated.
func (r *recorder) Started(saturated bool) {
	r.inFlight.Inc()
	if saturated {
		r.saturation.Inc()
	}
}

// TokenGap observes one inter-token gap. It does not allocate.
func (r *recorder) TokenGap(d time.Duration) {
	r.interToken.Observe(d.Seconds())
}

// Finished records a request that ended; see docs/metrics.md for what each
// field adds to which metric. Negative server-reported values are ignored.
func (r *recorder) Finished(q *observe.Request) {
	r.inFlight.Dec()
	switch outcome(q.Outcome) {
	case observe.OutcomeSuccess:
		r.success.Inc()
		r.ttft.Observe(q.TimeToFirst.Seconds())
		r.queueWait.Observe(q.QueueWait.Seconds())
	case observe.OutcomeCanceled:
		r.canceled.Inc()
		r.errs[observe.ReasonCanceled].Inc()
	default:
		r.failed.Inc()
		c, ok := r.errs[q.Reason]
		if !ok {
			// Keeps sum(errors) == requests that did not succeed.
			c = r.errs[observe.ReasonServerError]
		}
		c.Inc()
	}
	r.duration.Observe(q.Duration.Seconds())
	if q.Done {
		addPositive(r.generated, float64(q.EvalCount))
		addPositive(r.prompt, float64(q.PromptEvalCount))
		addPositive(r.evalSeconds, q.EvalDuration.Seconds())
		addPositive(r.promptEvalSecs, q.PromptEvalDuration.Seconds())
		addPositive(r.loadSeconds, q.LoadDuration.Seconds())
	}
	if q.ModelReload {
		r.reload.Inc()
	}
	if q.QueueRejected {
		r.rejected.Inc()
	}
	if q.QueueWaited {
		r.waited.Inc()
	}
}

// Retried counts one re-send of a request that failed for reason. The
// daemon retries only the reasons of observe.RetryReasons; any other reason
// is not counted, so that the label values stay within that set. It does
// not allocate.
func (r *recorder) Retried(reason observe.Reason) {
	if c, ok := r.retries[reason]; ok {
		c.Inc()
	}
}

// addPositive adds v to c unless it is negative, which a counter refuses
// with a panic; a misbehaving server must not crash the daemon.
func addPositive(c interface{ Add(float64) }, v float64) {
	if v > 0 {
		c.Add(v)
	}
}

// errNilRegisterer is returned by constructors given no registerer.
var errNilRegisterer = errors.New("nil prometheus.Registerer")
