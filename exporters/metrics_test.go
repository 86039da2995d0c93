package exporters

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/chimeraforge/chimeraforge/observe"
)

var allOutcomes = []observe.Outcome{observe.OutcomeSuccess, observe.OutcomeError, observe.OutcomeCanceled}

type histWant struct {
	count uint64
	sum   float64
}

// requestWant is what a sequence of requests must add up to, exactly. Map
// entries left out are expected to be 0.
type requestWant struct {
	outcomes   map[observe.Outcome]float64
	reasons    map[observe.Reason]float64
	contention map[observe.Contention]float64

	generated, prompt                  float64
	evalSecs, promptEvalSecs, loadSecs float64

	ttft, queueWait, duration histWant
}

// Durations below are binary fractions of a second, so sums are exact.
func TestFinishedArithmetic(t *testing.T) {
	const ms = time.Millisecond
	fullSuccess := observe.Request{
		Outcome: observe.OutcomeSuccess, Duration: 2 * time.Second,
		FirstToken: true, TimeToFirst: 250 * ms, QueueWait: 125 * ms, Done: true, ContentChunks: 100,
		EvalCount: 100, PromptEvalCount: 20, EvalDuration: 1500 * ms,
		PromptEvalDuration: 62500 * time.Microsecond, LoadDuration: 62500 * time.Microsecond,
		TotalDuration: 1625 * ms,
	}
	tests := []struct {
		name string
		reqs []observe.Request
		want requestWant
	}{
		{
			name: "success adds server fields and observes every histogram",
			reqs: []observe.Request{fullSuccess},
			want: requestWant{
				outcomes:  map[observe.Outcome]float64{observe.OutcomeSuccess: 1},
				generated: 100, prompt: 20, evalSecs: 1.5, promptEvalSecs: 0.0625, loadSecs: 0.0625,
				ttft: histWant{1, 0.25}, queueWait: histWant{1, 0.125}, duration: histWant{1, 2},
			},
		},
		{
			name: "success without text observes the done chunk as TTFT",
			reqs: []observe.Request{{
				Outcome: observe.OutcomeSuccess, Duration: 500 * ms, TimeToFirst: 500 * ms, Done: true,
				PromptEvalCount: 8, PromptEvalDuration: 250 * ms,
			}},
			want: requestWant{
				outcomes: map[observe.Outcome]float64{observe.OutcomeSuccess: 1},
				prompt:   8, promptEvalSecs: 0.25,
				ttft: histWant{1, 0.5}, queueWait: histWant{1, 0}, duration: histWant{1, 0.5},
			},
		},
		{
			name: "connect error counts its reason and only the duration",
			reqs: []observe.Request{{Outcome: observe.OutcomeError, Reason: observe.ReasonConnect, Duration: 250 * ms}},
			want: requestWant{
				outcomes: map[observe.Outcome]float64{observe.OutcomeError: 1},
				reasons:  map[observe.Reason]float64{observe.ReasonConnect: 1},
				duration: histWant{1, 0.25},
			},
		},
		{
			name: "queue full is a reason and a queue_rejected contention",
			reqs: []observe.Request{{Outcome: observe.OutcomeError, Reason: observe.ReasonQueueFull, QueueRejected: true, Duration: 125 * ms}},
			want: requestWant{
				outcomes:   map[observe.Outcome]float64{observe.OutcomeError: 1},
				reasons:    map[observe.Reason]float64{observe.ReasonQueueFull: 1},
				contention: map[observe.Contention]float64{observe.ContentionQueueRejected: 1},
				duration:   histWant{1, 0.125},
			},
		},
		{
			name: "canceled counts reason canceled whatever its reason field",
			reqs: []observe.Request{
				{Outcome: observe.OutcomeCanceled, Reason: observe.ReasonCanceled, Duration: time.Second},
				{Outcome: observe.OutcomeCanceled, Duration: time.Second},
			},
			want: requestWant{
				outcomes: map[observe.Outcome]float64{observe.OutcomeCanceled: 2},
				reasons:  map[observe.Reason]float64{observe.ReasonCanceled: 2},
				duration: histWant{2, 2},
			},
		},
		{
			name: "failure after the done chunk still adds server fields",
			reqs: []observe.Request{{
				Outcome: observe.OutcomeError, Reason: observe.ReasonRequestTimeout, Duration: 4 * time.Second,
				FirstToken: true, TimeToFirst: time.Second, Done: true, EvalCount: 7, EvalDuration: 500 * ms,
			}},
			want: requestWant{
				outcomes:  map[observe.Outcome]float64{observe.OutcomeError: 1},
				reasons:   map[observe.Reason]float64{observe.ReasonRequestTimeout: 1},
				generated: 7, evalSecs: 0.5,
				duration: histWant{1, 4},
			},
		},
		{
			name: "server fields without the done chunk are ignored",
			reqs: []observe.Request{{
				Outcome: observe.OutcomeError, Reason: observe.ReasonStreamBroken, Duration: time.Second,
				FirstToken: true, TimeToFirst: 250 * ms, EvalCount: 3,
			}},
			want: requestWant{
				outcomes: map[observe.Outcome]float64{observe.OutcomeError: 1},
				reasons:  map[observe.Reason]float64{observe.ReasonStreamBroken: 1},
				duration: histWant{1, 1},
			},
		},
		{
			name: "model reload contention",
			reqs: []observe.Request{{
				Outcome: observe.OutcomeSuccess, Duration: time.Second, FirstToken: true, TimeToFirst: 750 * ms,
				Done: true, LoadDuration: 500 * ms, ModelReload: true,
			}},
			want: requestWant{
				outcomes:   map[observe.Outcome]float64{observe.OutcomeSuccess: 1},
				contention: map[observe.Contention]float64{observe.ContentionModelReload: 1},
				loadSecs:   0.5,
				ttft:       histWant{1, 0.75}, queueWait: histWant{1, 0}, duration: histWant{1, 1},
			},
		},
		{
			name: "outcome and reason outside the fixed sets count as error and server_error",
			reqs: []observe.Request{
				{Outcome: "exploded", Reason: observe.ReasonHTTP4xx, Duration: time.Second},
				{Outcome: observe.OutcomeError, Reason: "novel", Duration: time.Second},
				{Outcome: observe.OutcomeError, Duration: time.Second},
			},
			want: requestWant{
				outcomes: map[observe.Outcome]float64{observe.OutcomeError: 3},
				reasons:  map[observe.Reason]float64{observe.ReasonHTTP4xx: 1, observe.ReasonServerError: 2},
				duration: histWant{3, 3},
			},
		},
		{
			name: "negative server values are ignored",
			reqs: []observe.Request{{
				Outcome: observe.OutcomeSuccess, Duration: time.Second, TimeToFirst: 250 * ms, Done: true,
				EvalCount: -5, PromptEvalCount: -1, EvalDuration: -time.Second, PromptEvalDuration: -time.Second, LoadDuration: -time.Second,
			}},
			want: requestWant{
				outcomes: map[observe.Outcome]float64{observe.OutcomeSuccess: 1},
				ttft:     histWant{1, 0.25}, queueWait: histWant{1, 0}, duration: histWant{1, 1},
			},
		},
		{
			name: "a mix adds up",
			reqs: []observe.Request{
				fullSuccess, fullSuccess, fullSuccess,
				{Outcome: observe.OutcomeError, Reason: observe.ReasonFirstTokenTimeout, Duration: 8 * time.Second},
				{Outcome: observe.OutcomeError, Reason: observe.ReasonFirstTokenTimeout, Duration: 8 * time.Second},
				{Outcome: observe.OutcomeError, Reason: observe.ReasonModelNotFound, Duration: 125 * ms},
				{Outcome: observe.OutcomeCanceled, Reason: observe.ReasonCanceled, Duration: 375 * ms},
			},
			want: requestWant{
				outcomes: map[observe.Outcome]float64{observe.OutcomeSuccess: 3, observe.OutcomeError: 3, observe.OutcomeCanceled: 1},
				reasons: map[observe.Reason]float64{
					observe.ReasonFirstTokenTimeout: 2, observe.ReasonModelNotFound: 1, observe.ReasonCanceled: 1,
				},
				generated: 300, prompt: 60, evalSecs: 4.5, promptEvalSecs: 0.1875, loadSecs: 0.1875,
				ttft: histWant{3, 0.75}, queueWait: histWant{3, 0.375}, duration: histWant{7, 22.5},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, reg := newTestMetrics(t)
			rec := m.Recorder(testLabels)
			for i := range tt.reqs {
				q := tt.reqs[i]
				q.Labels = testLabels
				rec.Started(false)
				rec.Finished(&q)
			}
			checkRequests(t, m, reg, testLabels, tt.want)
		})
	}
}

func checkRequests(t *testing.T, m *Metrics, reg prometheus.Gatherer, l observe.Labels, want requestWant) {
	t.Helper()
	w, a, tg, mo, st := l.Workload, l.Agent, l.Target, l.Model, l.Step
	check := func(what string, c prometheus.Collector, want float64) {
		t.Helper()
		if got := testutil.ToFloat64(c); got != want {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	var failed float64
	for _, o := range allOutcomes {
		check(fmt.Sprintf("requests{outcome=%q}", o), m.requests.WithLabelValues(w, a, tg, mo, st, string(o)), want.outcomes[o])
		if o != observe.OutcomeSuccess {
			failed += want.outcomes[o]
		}
	}
	var reasons float64
	for _, r := range observe.Reasons {
		check(fmt.Sprintf("errors{reason=%q}", r), m.errors.WithLabelValues(w, a, tg, mo, st, string(r)), want.reasons[r])
		reasons += want.reasons[r]
	}
	if reasons != failed {
		t.Errorf("test table: reasons sum to %v, non-success outcomes to %v", reasons, failed)
	}
	for _, k := range observe.Contentions {
		check(fmt.Sprintf("contention{kind=%q}", k), m.contention.WithLabelValues(w, a, tg, st, string(k)), want.contention[k])
	}
	check("generated tokens", m.generatedTokens.WithLabelValues(w, a, tg, mo, st), want.generated)
	check("prompt tokens", m.promptTokens.WithLabelValues(w, a, tg, mo, st), want.prompt)
	check("eval seconds", m.evalSeconds.WithLabelValues(w, a, tg, mo, st), want.evalSecs)
	check("prompt eval seconds", m.promptEvalSecs.WithLabelValues(w, a, tg, mo, st), want.promptEvalSecs)
	check("load seconds", m.loadSeconds.WithLabelValues(w, a, tg, mo, st), want.loadSecs)
	check("in flight", m.inFlight.WithLabelValues(w, a, tg), 0)

	for _, h := range []struct {
		name string
		want histWant
	}{
		{MetricTimeToFirstTokenSeconds, want.ttft},
		{MetricQueueWaitSeconds, want.queueWait},
		{MetricRequestDurationSeconds, want.duration},
	} {
		got := histogram(t, reg, h.name, requestLabelMap(l))
		if got.GetSampleCount() != h.want.count || got.GetSampleSum() != h.want.sum {
			t.Errorf("%s: count %d sum %v, want count %d sum %v",
				h.name, got.GetSampleCount(), got.GetSampleSum(), h.want.count, h.want.sum)
		}
	}
	if want.ttft.count != uint64(want.outcomes[observe.OutcomeSuccess]) {
		t.Errorf("test table: TTFT count %d, successes %v", want.ttft.count, want.outcomes[observe.OutcomeSuccess])
	}
}

func TestTokenGap(t *testing.T) {
	m, reg := newTestMetrics(t)
	rec := m.Recorder(testLabels)
	for _, d := range []time.Duration{time.Millisecond, 3 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second} {
		rec.TokenGap(d)
	}
	h := histogram(t, reg, MetricInterTokenLatencySeconds, requestLabelMap(testLabels))
	if h.GetSampleCount() != 4 || h.GetSampleSum() != 0.001+0.003+0.5+2 {
		t.Errorf("inter-token: count %d sum %v, want 4 and %v", h.GetSampleCount(), h.GetSampleSum(), 0.001+0.003+0.5+2)
	}
	// 1ms falls in the first bucket; 2s in the last finite one.
	b := h.GetBucket()
	if len(b) != len(interTokenBuckets) || b[0].GetCumulativeCount() != 1 || b[len(b)-1].GetCumulativeCount() != 4 {
		t.Errorf("inter-token buckets: %v", b)
	}
}

// TestStepsHaveTheirOwnSeries: the steps of one agent on one target, with
// very different answers, are told apart in every per-request family, and
// their series add up to the agent's.
func TestStepsHaveTheirOwnSeries(t *testing.T) {
	const ms = time.Millisecond
	m, reg := newTestMetrics(t)
	outline := testLabels
	draft := testLabels
	draft.Step = "draft"
	recOutline, recDraft := m.Recorder(outline), m.Recorder(draft)

	// outline: 3 short answers of 5 chunks (4 gaps each), TTFT 250ms.
	for range 3 {
		recOutline.Started(false)
		for range 4 {
			recOutline.TokenGap(125 * ms)
		}
		recOutline.Finished(&observe.Request{Labels: outline, Outcome: observe.OutcomeSuccess, Duration: time.Second,
			FirstToken: true, TimeToFirst: 250 * ms, QueueWait: 125 * ms, Done: true, EvalCount: 5, PromptEvalCount: 16})
	}
	// draft: a long prompt (TTFT 2s), one answer of 3 chunks, then a timeout.
	recDraft.Started(true)
	recDraft.TokenGap(500 * ms)
	recDraft.TokenGap(500 * ms)
	recDraft.Finished(&observe.Request{Labels: draft, Outcome: observe.OutcomeSuccess, Duration: 4 * time.Second,
		FirstToken: true, TimeToFirst: 2 * time.Second, QueueWait: 0, Done: true, EvalCount: 3, PromptEvalCount: 1024})
	recDraft.Started(false)
	recDraft.Finished(&observe.Request{Labels: draft, Outcome: observe.OutcomeError, Reason: observe.ReasonFirstTokenTimeout, Duration: 8 * time.Second})

	checkRequests(t, m, reg, outline, requestWant{
		outcomes:  map[observe.Outcome]float64{observe.OutcomeSuccess: 3},
		generated: 15, prompt: 48,
		ttft: histWant{3, 0.75}, queueWait: histWant{3, 0.375}, duration: histWant{3, 3},
	})
	checkRequests(t, m, reg, draft, requestWant{
		outcomes:   map[observe.Outcome]float64{observe.OutcomeSuccess: 1, observe.OutcomeError: 1},
		reasons:    map[observe.Reason]float64{observe.ReasonFirstTokenTimeout: 1},
		contention: map[observe.Contention]float64{observe.ContentionSlotSaturation: 1},
		generated:  3, prompt: 1024,
		ttft: histWant{1, 2}, queueWait: histWant{1, 0}, duration: histWant{2, 12},
	})
	for _, c := range []struct {
		l    observe.Labels
		want histWant
	}{{outline, histWant{12, 1.5}}, {draft, histWant{2, 1}}} {
		h := histogram(t, reg, MetricInterTokenLatencySeconds, requestLabelMap(c.l))
		if h.GetSampleCount() != c.want.count || h.GetSampleSum() != c.want.sum {
			t.Errorf("inter-token{step=%q}: count %d sum %v, want count %d sum %v",
				c.l.Step, h.GetSampleCount(), h.GetSampleSum(), c.want.count, c.want.sum)
		}
	}

	// Exactly one TTFT series per step, and summed over the steps they are
	// the agent's: 4 successful requests, 5 in all.
	agent := map[string]string{LabelWorkload: testLabels.Workload, LabelAgent: testLabels.Agent, LabelTarget: testLabels.Target}
	var ttftCount uint64
	steps := map[string]bool{}
	for _, s := range gatherFamily(t, reg, MetricTimeToFirstTokenSeconds).GetMetric() {
		if labelsMatch(s, agent) {
			ttftCount += s.GetHistogram().GetSampleCount()
			for _, lp := range s.GetLabel() {
				if lp.GetName() == LabelStep {
					steps[lp.GetValue()] = true
				}
			}
		}
	}
	if len(steps) != 2 || !steps[outline.Step] || !steps[draft.Step] || ttftCount != 4 {
		t.Errorf("TTFT series of the agent: steps %v, count %d; want %q and %q, count 4", steps, ttftCount, outline.Step, draft.Step)
	}
	var requests float64
	for _, s := range gatherFamily(t, reg, MetricRequestsTotal).GetMetric() {
		if labelsMatch(s, agent) {
			requests += s.GetCounter().GetValue()
		}
	}
	if requests != 5 {
		t.Errorf("requests of the agent summed over steps = %v, want 5", requests)
	}
}

func TestNoAllocations(t *testing.T) {
	m, _ := newTestMetrics(t)
	rec := m.Recorder(testLabels)
	q := &observe.Request{
		Labels: testLabels, Outcome: observe.OutcomeSuccess, Duration: time.Second, FirstToken: true,
		TimeToFirst: 100 * time.Millisecond, Done: true, EvalCount: 10, EvalDuration: time.Second,
	}
	qErr := &observe.Request{Labels: testLabels, Outcome: observe.OutcomeError, Reason: observe.ReasonIdleTimeout, Duration: time.Second}
	tests := []struct {
		name string
		f    func()
	}{
		{"TokenGap", func() { rec.TokenGap(20 * time.Millisecond) }},
		{"Started", func() { rec.Started(true) }},
		{"Finished success", func() { rec.Finished(q) }},
		{"Finished error", func() { rec.Finished(qErr) }},
		{"Retried", func() { rec.Retried(observe.ReasonConnect) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// AllocsPerRun runs f once first, so native histogram buckets
			// for the observed values exist before it counts.
			if n := testing.AllocsPerRun(1000, tt.f); n != 0 {
				t.Errorf("%s: %v allocations per call, want 0", tt.name, n)
			}
		})
	}
}

func TestRecorderPrecreatesZeroSeries(t *testing.T) {
	m, reg := newTestMetrics(t)
	// Two steps of one agent on one target, as the daemon asks for them:
	// the recorder's series are per step, the in-flight gauge and the run
	// and arrival series are not.
	const steps = 2
	second := testLabels
	second.Step = "draft"
	m.Recorder(testLabels)
	m.Recorder(second)
	tests := []struct {
		name string
		n    int
	}{
		{MetricRequestsTotal, steps * len(allOutcomes)},
		{MetricRequestErrorsTotal, steps * len(observe.Reasons)},
		{MetricRequestRetriesTotal, steps * len(observe.RetryReasons)},
		{MetricContentionEventsTotal, steps * len(observe.Contentions)},
		{MetricGeneratedTokensTotal, steps},
		{MetricPromptTokensTotal, steps},
		{MetricEvalDurationSecondsTotal, steps},
		{MetricPromptEvalDurationSecondsTotal, steps},
		{MetricLoadDurationSecondsTotal, steps},
		{MetricAgentRunsTotal, len(allOutcomes)},
		{MetricArrivalsDroppedTotal, 1},
		{MetricRequestsInFlight, 1},
		{MetricTimeToFirstTokenSeconds, steps},
		{MetricInterTokenLatencySeconds, steps},
		{MetricRequestDurationSeconds, steps},
		{MetricQueueWaitSeconds, steps},
		{MetricAgentRunDurationSeconds, 1},
		{MetricScheduleDelaySeconds, 0},
	}
	for _, tt := range tests {
		n, err := testutil.GatherAndCount(reg, tt.name)
		if err != nil {
			t.Fatal(err)
		}
		if n != tt.n {
			t.Errorf("%s: %d series, want %d", tt.name, n, tt.n)
		}
		mf := gatherFamily(t, reg, tt.name)
		for _, s := range mf.GetMetric() {
			v := s.GetCounter().GetValue() + s.GetGauge().GetValue() + float64(s.GetHistogram().GetSampleCount())
			if v != 0 {
				t.Errorf("%s %v = %v, want 0", tt.name, s.GetLabel(), v)
			}
		}
	}
	// Both steps of every family a recorder owns, by name.
	for _, name := range []string{
		MetricRequestsTotal, MetricRequestErrorsTotal, MetricContentionEventsTotal, MetricGeneratedTokensTotal,
		MetricTimeToFirstTokenSeconds, MetricInterTokenLatencySeconds, MetricRequestDurationSeconds, MetricQueueWaitSeconds,
	} {
		for _, step := range []string{testLabels.Step, second.Step} {
			if !hasLabel(gatherFamily(t, reg, name).GetMetric(), LabelStep, step) {
				t.Errorf("no %s{step=%q}", name, step)
			}
		}
	}
	// Every reason and kind of the fixed sets, by name.
	for _, r := range observe.Reasons {
		if mf := gatherFamily(t, reg, MetricRequestErrorsTotal); !hasLabel(mf.GetMetric(), LabelReason, string(r)) {
			t.Errorf("no %s{reason=%q}", MetricRequestErrorsTotal, r)
		}
	}
	for _, r := range observe.RetryReasons {
		if mf := gatherFamily(t, reg, MetricRequestRetriesTotal); !hasLabel(mf.GetMetric(), LabelReason, string(r)) {
			t.Errorf("no %s{reason=%q}", MetricRequestRetriesTotal, r)
		}
	}
	for _, k := range observe.Contentions {
		if mf := gatherFamily(t, reg, MetricContentionEventsTotal); !hasLabel(mf.GetMetric(), LabelKind, string(k)) {
			t.Errorf("no %s{kind=%q}", MetricContentionEventsTotal, k)
		}
	}
}

// TestRetried counts re-sends by the reason of the attempt that failed, on
// the recorder of that attempt, and nothing for a reason that is never
// retried: the label values stay within observe.RetryReasons.
func TestRetried(t *testing.T) {
	m, reg := newTestMetrics(t)
	rec := m.Recorder(testLabels)
	other := testLabels
	other.Target = "gpu1"
	m.Recorder(other)
	for range 3 {
		rec.Retried(observe.ReasonConnect)
	}
	rec.Retried(observe.ReasonQueueFull)
	rec.Retried(observe.ReasonStreamBroken) // never retried: not counted
	rec.Retried("bogus")
	l := testLabels
	for reason, want := range map[observe.Reason]float64{
		observe.ReasonConnect: 3, observe.ReasonQueueFull: 1, observe.ReasonHTTP4xx: 0, observe.ReasonHTTP5xx: 0,
	} {
		if got := testutil.ToFloat64(m.retries.WithLabelValues(l.Workload, l.Agent, l.Target, l.Step, string(reason))); got != want {
			t.Errorf("retries{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if got := testutil.ToFloat64(m.retries.WithLabelValues(other.Workload, other.Agent, other.Target, other.Step, string(observe.ReasonConnect))); got != 0 {
		t.Errorf("retries of another target = %v, want 0", got)
	}
	n, err := testutil.GatherAndCount(reg, MetricRequestRetriesTotal)
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 * len(observe.RetryReasons); n != want {
		t.Errorf("%d retry series, want %d (no series for reasons that are never retried)", n, want)
	}
	// Retries are not requests: they leave the request counters alone.
	for _, o := range allOutcomes {
		if got := testutil.ToFloat64(m.requests.WithLabelValues(l.Workload, l.Agent, l.Target, l.Model, l.Step, string(o))); got != 0 {
			t.Errorf("requests{outcome=%q} = %v after retries only, want 0", o, got)
		}
	}
}

func TestRecorderIsCachedPerLabels(t *testing.T) {
	m, _ := newTestMetrics(t)
	r1, r2 := m.Recorder(testLabels), m.Recorder(testLabels)
	if r1 != r2 {
		t.Error("Recorder returned different recorders for equal labels")
	}
	other := testLabels
	other.Target = "gpu1"
	if m.Recorder(other) == r1 {
		t.Error("Recorder returned the same recorder for different targets")
	}
	otherStep := testLabels
	otherStep.Step = "draft"
	if m.Recorder(otherStep) == r1 {
		t.Error("Recorder returned the same recorder for different steps")
	}
	ok := &observe.Request{Outcome: observe.OutcomeSuccess, Done: true}
	r1.Finished(ok)
	r2.Finished(ok)
	w, a, tg, mo, st := testLabels.Workload, testLabels.Agent, testLabels.Target, testLabels.Model, testLabels.Step
	if got := testutil.ToFloat64(m.requests.WithLabelValues(w, a, tg, mo, st, "success")); got != 2 {
		t.Errorf("requests{success} = %v, want 2", got)
	}
}

func TestInFlightAndSaturation(t *testing.T) {
	m, _ := newTestMetrics(t)
	rec := m.Recorder(testLabels)
	// Another model or another step of the agent on the same target shares
	// the in-flight gauge; slot_saturation is counted by step.
	sameTarget := testLabels
	sameTarget.Model = "qwen3:0.6b"
	rec2 := m.Recorder(sameTarget)
	otherStep := testLabels
	otherStep.Step = "draft"
	rec3 := m.Recorder(otherStep)
	w, a, tg := testLabels.Workload, testLabels.Agent, testLabels.Target
	inFlight := m.inFlight.WithLabelValues(w, a, tg)
	saturation := m.contention.WithLabelValues(w, a, tg, testLabels.Step, string(observe.ContentionSlotSaturation))
	saturation3 := m.contention.WithLabelValues(w, a, tg, otherStep.Step, string(observe.ContentionSlotSaturation))
	done := &observe.Request{Outcome: observe.OutcomeSuccess}
	steps := []struct {
		name                  string
		do                    func()
		inFlight, satu, satu3 float64
	}{
		{"start", func() { rec.Started(false) }, 1, 0, 0},
		{"start saturated", func() { rec.Started(true) }, 2, 1, 0},
		{"start other model saturated", func() { rec2.Started(true) }, 3, 2, 0},
		{"start other step saturated", func() { rec3.Started(true) }, 4, 2, 1},
		{"finish", func() { rec.Finished(done) }, 3, 2, 1},
		{"finish other step", func() { rec3.Finished(done) }, 2, 2, 1},
		{"finish other model", func() { rec2.Finished(done) }, 1, 2, 1},
		{"finish last", func() { rec.Finished(done) }, 0, 2, 1},
	}
	for _, s := range steps {
		s.do()
		if got := testutil.ToFloat64(inFlight); got != s.inFlight {
			t.Errorf("after %s: in flight %v, want %v", s.name, got, s.inFlight)
		}
		if got := testutil.ToFloat64(saturation); got != s.satu {
			t.Errorf("after %s: slot_saturation{step=%q} %v, want %v", s.name, testLabels.Step, got, s.satu)
		}
		if got := testutil.ToFloat64(saturation3); got != s.satu3 {
			t.Errorf("after %s: slot_saturation{step=%q} %v, want %v", s.name, otherStep.Step, got, s.satu3)
		}
	}
}

func TestRunsAndArrivals(t *testing.T) {
	m, reg := newTestMetrics(t)
	m.RunFinished(observe.Run{Workload: "chat", Agent: "planner", Outcome: observe.OutcomeSuccess, Duration: 2 * time.Second, Steps: 3})
	m.RunFinished(observe.Run{Workload: "chat", Agent: "planner", Outcome: observe.OutcomeError, Duration: time.Second})
	m.RunFinished(observe.Run{Workload: "chat", Agent: "planner", Outcome: "odd", Duration: time.Second})
	m.ScheduleDelay("chat", 250*time.Millisecond)
	m.ScheduleDelay("chat", -time.Second) // floored at 0
	m.ArrivalDropped("chat")
	m.ArrivalDropped("chat")

	for o, want := range map[observe.Outcome]float64{observe.OutcomeSuccess: 1, observe.OutcomeError: 2, observe.OutcomeCanceled: 0} {
		if got := testutil.ToFloat64(m.agentRuns.WithLabelValues("chat", "planner", string(o))); got != want {
			t.Errorf("agent runs{outcome=%q} = %v, want %v", o, got, want)
		}
	}
	if h := histogram(t, reg, MetricAgentRunDurationSeconds, map[string]string{LabelWorkload: "chat", LabelAgent: "planner"}); h.GetSampleCount() != 3 || h.GetSampleSum() != 4 {
		t.Errorf("run duration: count %d sum %v, want 3 and 4", h.GetSampleCount(), h.GetSampleSum())
	}
	if h := histogram(t, reg, MetricScheduleDelaySeconds, map[string]string{LabelWorkload: "chat"}); h.GetSampleCount() != 2 || h.GetSampleSum() != 0.25 {
		t.Errorf("schedule delay: count %d sum %v, want 2 and 0.25", h.GetSampleCount(), h.GetSampleSum())
	}
	if got := testutil.ToFloat64(m.arrivalsDropped.WithLabelValues("chat")); got != 2 {
		t.Errorf("arrivals dropped = %v, want 2", got)
	}
}

func TestForget(t *testing.T) {
	m, reg := newTestMetrics(t)
	gone := observe.Labels{Workload: "chat", Agent: "planner", Target: "gpu0", Model: "m1", Step: "outline"}
	goneToo := observe.Labels{Workload: "chat", Agent: "planner", Target: "gpu1", Model: "m1", Step: "outline"}
	goneStep := observe.Labels{Workload: "chat", Agent: "planner", Target: "gpu0", Model: "m1", Step: "draft"}
	sibling := observe.Labels{Workload: "chat", Agent: "coder", Target: "gpu0", Model: "m1", Step: "outline"}
	elsewhere := observe.Labels{Workload: "batch", Agent: "planner", Target: "gpu0", Model: "m1", Step: "outline"}
	all := []observe.Labels{gone, goneToo, goneStep, sibling, elsewhere}
	for _, l := range all {
		rec := m.Recorder(l)
		rec.Started(true)
		rec.TokenGap(time.Millisecond)
		rec.Finished(&observe.Request{Labels: l, Outcome: observe.OutcomeSuccess, Done: true, EvalCount: 1})
		rec.Retried(observe.ReasonConnect)
		m.RunFinished(observe.Run{Workload: l.Workload, Agent: l.Agent, Outcome: observe.OutcomeSuccess})
	}
	m.ScheduleDelay("chat", time.Millisecond)
	agentSeries := func(workload, agent string) int {
		return seriesOf(t, reg, map[string]string{LabelWorkload: workload, LabelAgent: agent})
	}
	before := map[string]int{
		"coder": agentSeries("chat", "coder"), "batch": agentSeries("batch", "planner"),
	}
	if agentSeries("chat", "planner") == 0 || before["coder"] == 0 {
		t.Fatal("no series before Forget")
	}
	workloadWide := seriesOf(t, reg, map[string]string{LabelWorkload: "chat"}) -
		agentSeries("chat", "planner") - agentSeries("chat", "coder")

	m.Forget("chat", "planner")

	if n := agentSeries("chat", "planner"); n != 0 {
		t.Errorf("%d series of the forgotten agent remain", n)
	}
	if n := agentSeries("chat", "coder"); n != before["coder"] {
		t.Errorf("sibling agent: %d series, want %d", n, before["coder"])
	}
	if n := agentSeries("batch", "planner"); n != before["batch"] {
		t.Errorf("same agent in another workload: %d series, want %d", n, before["batch"])
	}
	if n := seriesOf(t, reg, map[string]string{LabelWorkload: "chat"}) - agentSeries("chat", "coder"); n != workloadWide || n == 0 {
		t.Errorf("workload-wide series: %d, want %d (not 0)", n, workloadWide)
	}

	// The agent comes back with a later reload: its series start at 0.
	m.Recorder(gone)
	if got := testutil.ToFloat64(m.requests.WithLabelValues(gone.Workload, gone.Agent, gone.Target, gone.Model, gone.Step, "success")); got != 0 {
		t.Errorf("requests of the returning agent = %v, want 0", got)
	}
	if got, want := agentSeries("chat", "planner"), before["coder"]; got != want {
		t.Errorf("returning agent: %d series, want %d", got, want)
	}
}

func TestConcurrentUse(t *testing.T) {
	m, _ := newTestMetrics(t)
	const workers, perWorker = 8, 500
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			rec := m.Recorder(testLabels)
			for range perWorker {
				rec.Started(false)
				rec.TokenGap(time.Millisecond)
				rec.Finished(&observe.Request{Outcome: observe.OutcomeSuccess, Done: true, EvalCount: 2})
				m.ScheduleDelay(testLabels.Workload, time.Millisecond)
			}
		})
	}
	wg.Go(func() {
		for i := range perWorker {
			l := observe.Labels{Workload: testLabels.Workload, Agent: "transient", Target: "t", Model: "m", Step: "s"}
			m.Recorder(l).Started(i%2 == 0)
			m.Forget(l.Workload, l.Agent)
		}
	})
	wg.Wait()
	w, a, tg, mo, st := testLabels.Workload, testLabels.Agent, testLabels.Target, testLabels.Model, testLabels.Step
	if got := testutil.ToFloat64(m.requests.WithLabelValues(w, a, tg, mo, st, "success")); got != workers*perWorker {
		t.Errorf("requests = %v, want %d", got, workers*perWorker)
	}
	if got := testutil.ToFloat64(m.generatedTokens.WithLabelValues(w, a, tg, mo, st)); got != 2*workers*perWorker {
		t.Errorf("generated tokens = %v, want %d", got, 2*workers*perWorker)
	}
}

// TestNativeHistograms: every histogram is a native histogram, with its
// classic buckets beside it by default and without any (not even
// client_golang's DefBuckets) when classic histograms are off.
func TestNativeHistograms(t *testing.T) {
	classicBuckets := map[string]int{
		MetricTimeToFirstTokenSeconds: len(ttftBuckets), MetricInterTokenLatencySeconds: len(interTokenBuckets),
		MetricRequestDurationSeconds: len(requestBuckets), MetricQueueWaitSeconds: len(queueWaitBuckets),
		MetricAgentRunDurationSeconds: len(runBuckets), MetricScheduleDelaySeconds: len(scheduleDelayBuckets),
	}
	tests := []struct {
		name    string
		opts    []Option
		classic bool
	}{
		{name: "default", classic: true},
		{name: "classic on", opts: []Option{ClassicHistograms(true)}, classic: true},
		{name: "native only", opts: []Option{ClassicHistograms(false)}, classic: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			m, err := NewMetrics(reg, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			rec := m.Recorder(testLabels)
			rec.TokenGap(12 * time.Millisecond)
			rec.Finished(&observe.Request{Outcome: observe.OutcomeSuccess, Duration: time.Second, TimeToFirst: time.Second, QueueWait: time.Second})
			m.RunFinished(observe.Run{Workload: "chat", Agent: "planner", Duration: time.Second})
			m.ScheduleDelay("chat", time.Second)
			for name, n := range classicBuckets {
				h := histogram(t, reg, name, map[string]string{LabelWorkload: "chat"})
				// Bucket factor 1.1 is schema 3 (factor 2^(2^-3) ≈ 1.09).
				if h.Schema == nil || h.GetSchema() != 3 {
					t.Errorf("%s: native schema %v, want 3", name, h.Schema)
				}
				if len(h.GetPositiveSpan()) == 0 {
					t.Errorf("%s: no native buckets", name)
				}
				if !tt.classic {
					n = 0
				}
				if got := len(h.GetBucket()); got != n {
					t.Errorf("%s: %d classic buckets, want %d", name, got, n)
				}
				if h.GetSampleCount() != 1 || h.GetSampleSum() == 0 {
					t.Errorf("%s: count %d, sum %v; want one observation", name, h.GetSampleCount(), h.GetSampleSum())
				}
			}
		})
	}
}

// TestCheckOptions: a reload may not change an option that shapes the
// registry; the error names the configuration key.
func TestCheckOptions(t *testing.T) {
	tests := []struct {
		name    string
		created []Option
		check   []Option
		wantErr bool
	}{
		{name: "default, nothing asked", check: nil},
		{name: "default, classic asked", check: []Option{ClassicHistograms(true)}},
		{name: "default, native only asked", check: []Option{ClassicHistograms(false)}, wantErr: true},
		{name: "native only, native only asked", created: []Option{ClassicHistograms(false)}, check: []Option{ClassicHistograms(false)}},
		{name: "native only, classic asked", created: []Option{ClassicHistograms(false)}, check: []Option{ClassicHistograms(true)}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMetrics(prometheus.NewRegistry(), tt.created...)
			if err != nil {
				t.Fatal(err)
			}
			err = m.CheckOptions(tt.check...)
			if (err != nil) != tt.wantErr {
				t.Fatalf("CheckOptions: %v, want error %t", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "global.metrics.classic_histograms") {
				t.Errorf("error %q does not name global.metrics.classic_histograms", err)
			}
			// The check changes nothing.
			if again := m.CheckOptions(tt.created...); again != nil {
				t.Errorf("after the check, the options the Metrics were created with fail: %v", again)
			}
		})
	}
}

func TestReload(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	r, err := NewReload(reg)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 500_000_000, time.UTC)
	steps := []struct {
		ok         bool
		at         time.Time
		successful float64
		timestamp  float64
	}{
		{true, t0, 1, float64(t0.Unix()) + 0.5},
		{false, t0.Add(time.Minute), 0, float64(t0.Unix()) + 0.5},
		{false, t0.Add(2 * time.Minute), 0, float64(t0.Unix()) + 0.5},
		{true, t0.Add(3 * time.Minute), 1, float64(t0.Unix()) + 180.5},
	}
	for i, s := range steps {
		r.Observe(s.ok, s.at)
		if got := testutil.ToFloat64(r.successful); got != s.successful {
			t.Errorf("step %d: successful = %v, want %v", i, got, s.successful)
		}
		if got := testutil.ToFloat64(r.timestamp); got != s.timestamp {
			t.Errorf("step %d: timestamp = %v, want %v", i, got, s.timestamp)
		}
	}
}

func TestBuildInfoAndRuntime(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	if err := NewBuildInfo(reg); err != nil {
		t.Fatal(err)
	}
	if err := RegisterRuntime(reg); err != nil {
		t.Fatal(err)
	}
	mf := gatherFamily(t, reg, MetricBuildInfo)
	if len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Fatalf("build info: %v", mf)
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if gatherFamily(t, reg, name) == nil {
			t.Errorf("%s not registered", name)
		}
	}
}

func TestRegistrationErrors(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	_, err := NewMetrics(reg)
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Errorf("second NewMetrics: %v, want AlreadyRegisteredError", err)
	}
	if _, err := NewReload(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewReload(reg); err == nil {
		t.Error("second NewReload: no error")
	}
	if err := NewBuildInfo(reg); err != nil {
		t.Fatal(err)
	}
	if err := NewBuildInfo(reg); err == nil {
		t.Error("second NewBuildInfo: no error")
	}
	if _, err := NewMetrics(nil); err == nil {
		t.Error("NewMetrics(nil): no error")
	}

	// A failure part-way leaves nothing of the failed call registered.
	for failAt := 1; failAt <= 17; failAt += 8 {
		fr := &flakyRegisterer{failAt: failAt, live: map[prometheus.Collector]bool{}}
		if _, err := NewMetrics(fr); err == nil {
			t.Fatalf("NewMetrics failing at registration %d: no error", failAt)
		}
		if len(fr.live) != 0 {
			t.Errorf("NewMetrics failing at registration %d left %d collectors registered", failAt, len(fr.live))
		}
	}
}

// flakyRegisterer fails its failAt-th Register call and tracks the
// collectors registered with it.
type flakyRegisterer struct {
	failAt, n int
	live      map[prometheus.Collector]bool
}

func (f *flakyRegisterer) Register(c prometheus.Collector) error {
	f.n++
	if f.n == f.failAt {
		return errors.New("refused")
	}
	f.live[c] = true
	return nil
}

func (f *flakyRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := f.Register(c); err != nil {
			panic(err)
		}
	}
}

func (f *flakyRegisterer) Unregister(c prometheus.Collector) bool {
	ok := f.live[c]
	delete(f.live, c)
	return ok
}

func hasLabel(ms []*dto.Metric, name, value string) bool {
	for _, m := range ms {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == name && lp.GetValue() == value {
				return true
			}
		}
	}
	return false
}

func BenchmarkTokenGap(b *testing.B) {
	m, _ := newTestMetrics(b)
	rec := m.Recorder(testLabels)
	b.ReportAllocs()
	for b.Loop() {
		rec.TokenGap(25 * time.Millisecond)
	}
}

func BenchmarkFinished(b *testing.B) {
	m, _ := newTestMetrics(b)
	rec := m.Recorder(testLabels)
	q := &observe.Request{
		Labels: testLabels, Outcome: observe.OutcomeSuccess, Duration: 3 * time.Second, FirstToken: true,
		TimeToFirst: 200 * time.Millisecond, QueueWait: 50 * time.Millisecond, Done: true, ContentChunks: 120,
		EvalCount: 120, PromptEvalCount: 40, EvalDuration: 2500 * time.Millisecond,
		PromptEvalDuration: 100 * time.Millisecond, LoadDuration: 2 * time.Millisecond,
	}
	b.ReportAllocs()
	for b.Loop() {
		rec.Started(false)
		rec.Finished(q)
	}
}

func TestCalibrationMetrics(t *testing.T) {
	m, _ := newTestMetrics(t)
	m.AgentActive("chat", "planner", 2)
	m.AgentActive("chat", "planner", -2)
	m.AgentActive("chat", "planner", 1)
	if got := testutil.ToFloat64(m.cal.active.WithLabelValues("chat", "planner")); got != 1 {
		t.Errorf("agent_active = %v, want 1", got)
	}
	m.Calibrating("chat", true)
	if got := testutil.ToFloat64(m.cal.calibrating.WithLabelValues("chat")); got != 1 {
		t.Errorf("calibrating = %v, want 1", got)
	}
	m.Calibrating("chat", false)
	if got := testutil.ToFloat64(m.cal.calibrating.WithLabelValues("chat")); got != 0 {
		t.Errorf("calibrating = %v, want 0", got)
	}

	at := time.Unix(1_800_000_000, 250_000_000)
	m.Calibrated(observe.Calibration{Workload: "chat", Agent: "planner", Model: "m1", OK: true, Runs: 3,
		TokensPerSecond: map[string]float64{"gpu0": 40, "gpu1": 20}, At: at})
	for target, want := range map[string]float64{"gpu0": 40, "gpu1": 20} {
		if got := testutil.ToFloat64(m.cal.baseline.WithLabelValues("chat", "planner", target, "m1")); got != want {
			t.Errorf("baseline{target=%s} = %v, want %v", target, got, want)
		}
	}
	if got := testutil.ToFloat64(m.cal.baselineTime.WithLabelValues("chat", "planner")); got != 1_800_000_000.25 {
		t.Errorf("baseline timestamp = %v, want 1800000000.25", got)
	}

	// A later calibration that used one target only replaces both.
	m.Calibrated(observe.Calibration{Workload: "chat", Agent: "planner", Model: "m1", OK: true,
		TokensPerSecond: map[string]float64{"gpu0": 30}, At: at})
	if n := testutil.CollectAndCount(m.cal.baseline); n != 1 {
		t.Errorf("%d baseline series after recalibration on one target, want 1", n)
	}
	// A failed one keeps the baseline and counts the failure.
	m.Calibrated(observe.Calibration{Workload: "chat", Agent: "planner", Model: "m1", OK: false, At: at.Add(time.Hour)})
	if got := testutil.ToFloat64(m.cal.baseline.WithLabelValues("chat", "planner", "gpu0", "m1")); got != 30 {
		t.Errorf("baseline after a failed calibration = %v, want 30 (kept)", got)
	}
	for outcome, want := range map[string]float64{"success": 2, "error": 1} {
		if got := testutil.ToFloat64(m.cal.calibrations.WithLabelValues("chat", "planner", outcome)); got != want {
			t.Errorf("calibrations{outcome=%s} = %v, want %v", outcome, got, want)
		}
	}
	m.Forget("chat", "planner")
	if n := testutil.CollectAndCount(m.cal.baseline) + testutil.CollectAndCount(m.cal.active); n != 0 {
		t.Errorf("%d baseline/active series after Forget, want 0", n)
	}
}

// TestShardInfo: one series, the current shard; a reload that changes the
// shard replaces it, and Forget of an agent leaves it alone.
func TestShardInfo(t *testing.T) {
	m, reg := newTestMetrics(t)
	if mf := gatherFamily(t, reg, MetricShardInfo); mf != nil {
		t.Errorf("%s before the daemon set it: %v", MetricShardInfo, mf)
	}
	m.Shard(0, 2)
	m.Shard(1, 3)
	m.Forget("chat", "planner")
	mf := gatherFamily(t, reg, MetricShardInfo)
	if len(mf.GetMetric()) != 1 {
		t.Fatalf("%s: %d series, want 1: %v", MetricShardInfo, len(mf.GetMetric()), mf)
	}
	s := mf.GetMetric()[0]
	if !labelsMatch(s, map[string]string{LabelShardIndex: "1", LabelShardCount: "3"}) || s.GetGauge().GetValue() != 1 {
		t.Errorf("%s = %v, want {index=\"1\", count=\"3\"} 1", MetricShardInfo, s)
	}
}

func TestQueueWaitContention(t *testing.T) {
	m, _ := newTestMetrics(t)
	l := observe.Labels{Workload: "chat", Agent: "planner", Target: "gpu0", Model: "m1", Step: "outline"}
	rec := m.Recorder(l)
	for _, waited := range []bool{true, false, true} {
		rec.Started(false)
		rec.Finished(&observe.Request{Labels: l, Outcome: observe.OutcomeSuccess, Done: true, QueueWaited: waited})
	}
	if got := testutil.ToFloat64(m.contention.WithLabelValues("chat", "planner", "gpu0", "outline", string(observe.ContentionQueueWait))); got != 2 {
		t.Errorf("queue_wait contention = %v, want 2", got)
	}
}

// TestServerCountsNeverWrap: a server that reports absurd token counts
// (2⁶³, twice) must not take the token counter back to 0, which a
// client_golang counter does (its integral part is a uint64); small counts
// add up exactly.
func TestServerCountsNeverWrap(t *testing.T) {
	m, reg := newTestMetrics(t)
	rec := m.Recorder(testLabels)
	huge := &observe.Request{Labels: testLabels, Outcome: observe.OutcomeSuccess, Done: true,
		EvalCount: math.MaxInt64, PromptEvalCount: 1 << 62}
	rec.Finished(huge)
	rec.Finished(huge)
	l := testLabels
	if got, want := testutil.ToFloat64(m.generatedTokens.WithLabelValues(l.Workload, l.Agent, l.Target, l.Model, l.Step)), 2*float64(math.MaxInt64); got != want {
		t.Errorf("generated tokens after 2 × 2⁶³ = %v, want %v", got, want)
	}
	if got := testutil.ToFloat64(m.promptTokens.WithLabelValues(l.Workload, l.Agent, l.Target, l.Model, l.Step)); got != 1<<63 {
		t.Errorf("prompt tokens after 2 × 2⁶² = %v, want 2⁶³", got)
	}
	other := testLabels
	other.Step = "draft"
	r2 := m.Recorder(other)
	for range 1000 {
		r2.Finished(&observe.Request{Labels: other, Outcome: observe.OutcomeSuccess, Done: true, EvalCount: 7, PromptEvalCount: 3})
	}
	if got := testutil.ToFloat64(m.generatedTokens.WithLabelValues(other.Workload, other.Agent, other.Target, other.Model, other.Step)); got != 7000 {
		t.Errorf("generated tokens = %v, want exactly 7000", got)
	}
	// The family gathers cleanly (pedantic registry) and forgets an agent.
	if n, err := testutil.GatherAndCount(reg, MetricGeneratedTokensTotal); err != nil || n != 2 {
		t.Errorf("gather: %d series, %v; want 2", n, err)
	}
	m.Forget(l.Workload, l.Agent)
	if n, err := testutil.GatherAndCount(reg, MetricGeneratedTokensTotal, MetricPromptTokensTotal); err != nil || n != 0 {
		t.Errorf("after Forget: %d series, %v; want 0", n, err)
	}
	if n := m.generatedTokens.DeletePartialMatch(prometheus.Labels{"nope": "x"}); n != 0 {
		t.Errorf("a label the family lacks deleted %d series", n)
	}
}
