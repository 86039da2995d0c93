package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/chimeraforge/chimeraforge/config"
	"github.com/chimeraforge/chimeraforge/exporters"
	"github.com/chimeraforge/chimeraforge/observe"
)

// fuzzLabels are the only label values a fuzzed call may produce.
var fuzzLabels = observe.Labels{Workload: "w", Agent: "a", Target: "fuzz", Model: "sim-tiny", Step: "ask"}

// FuzzStream serves arbitrary bytes as the body of a 200
// application/x-ndjson answer on 127.0.0.1 and runs one call on it, with
// the chat or the generate API, recorded into the real Prometheus metrics.
// Whatever the bytes:
//   - nothing panics;
//   - the call succeeds exactly when the stream, read line by line as the
//     Ollama client reads it, decodes to the end and has a final chunk
//     (done: true); otherwise it fails with a reason of observe's fixed set;
//   - the observation holds the eval_count of the last final chunk when one
//     decoded, else 0, and the exported token counter grows by that count
//     when it is positive, else not at all (never negatively);
//   - timings are never negative, the queue wait never exceeds the time to
//     first token, and no label takes a value from the answer.
//
// Seeds: a valid stream, one cut short, a malformed line, huge numbers,
// negative durations and counts, error lines; CI runs it for a bounded time
// (scripts/test.sh).
func FuzzStream(f *testing.F) {
	valid := ndjsonStream(f, config.APIChat, 3)
	lines := bytes.SplitAfter(valid, []byte("\n"))
	final := `{"model":"sim-tiny","created_at":"2026-11-27T00:00:00Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop",`
	for _, seed := range [][]byte{
		valid,
		valid[:len(valid)-len(lines[len(lines)-2])], // no final chunk
		valid[:len(valid)-20],                       // cut inside the final chunk
		append(append([]byte{}, lines[0]...), []byte("{not json\n")...),
		[]byte(final + `"eval_count":99999999999999999999,"eval_duration":1}` + "\n"),
		[]byte(final + `"eval_count":1e400}` + "\n"),
		[]byte(final + `"eval_count":4611686018427387904,"prompt_eval_count":9007199254740993,"total_duration":9223372036854775807}` + "\n"),
		[]byte(final + `"eval_count":-5,"prompt_eval_count":-1,"eval_duration":-1000,"load_duration":-9223372036854775808,"prompt_eval_duration":-1}` + "\n"),
		[]byte(`{"message":{"content":"a"}}` + "\n" + `{"error":"model runner crashed"}` + "\n"),
		[]byte(`{"error":""}` + "\n" + final + `"eval_count":2}` + "\n"),
		[]byte(`{"error":{"nested":1}}` + "\n"),
		[]byte(final + `"eval_count":3}` + "\n" + final + `"eval_count":4}` + "\n"),
		[]byte(final + `"eval_count":3}` + "\n" + `{"error":"after done"}` + "\n"),
		[]byte(`{"message":{"content":"x"},"response":"y","thinking":"z"}` + "\n\n" + final + `"eval_count":1}`),
		[]byte(`{"created_at":"not a time","done":true,"eval_count":1}` + "\n"),
		[]byte(`{"done":true,"eval_count":1,"model":"evil\"label"}` + "\r\n"),
		{},
		[]byte("\n"),
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}

	var body atomic.Pointer[[]byte]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(*body.Load())
	}))
	f.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		f.Fatal(err)
	}
	tg := newTarget(config.Target{Name: fuzzLabels.Target, URL: srv.URL, NumParallel: 1,
		Timeouts: config.Timeouts{Connect: 10 * time.Second, FirstToken: time.Minute, Idle: time.Minute, Request: time.Minute}}, u)
	f.Cleanup(tg.close)
	chat := newCallSpec(&config.Agent{Name: "a", Model: fuzzLabels.Model, API: config.APIChat}, nil, "", "hello", nil)
	gen := newCallSpec(&config.Agent{Name: "a", Model: fuzzLabels.Model, API: config.APIGenerate}, nil, "", "hello", nil)

	f.Fuzz(func(t *testing.T, data []byte, generate bool) {
		body.Store(&data)
		spec := chat
		if generate {
			spec = gen
		}
		want := decodeLikeClient(data, generate)
		// Fresh metrics for each input, so that a failure reproduces from
		// the input alone. The call is made twice: the daemon makes the
		// same call for days, and counters must add up across calls.
		reg := prometheus.NewRegistry()
		m, err := exporters.NewMetrics(reg)
		if err != nil {
			t.Fatal(err)
		}
		rec := &capturing{Recorder: m.Recorder(fuzzLabels)}
		for i := 1; i <= 2; i++ {
			checkCall(t, tg, spec, rec, want)
			wantTokens := float64(i) * float64(max(0, want.count()))
			if got := gatherTokens(t, reg); !sameCount(got, wantTokens) {
				t.Fatalf("after %d calls %s = %v, want %v (eval_count %d each)",
					i, exporters.MetricGeneratedTokensTotal, got, wantTokens, want.count())
			}
			checkLabels(t, reg)
		}
	})
}

// sameCount compares counter values exactly where a float64 holds every
// integer (below 2⁵³), and to the float's precision beyond.
func sameCount(got, want float64) bool {
	if want < 1<<53 {
		return got == want
	}
	return math.Abs(got-want) <= want*1e-12
}

// checkCall makes one call on the served body and checks the observation
// against what the client makes of the body.
func checkCall(t *testing.T, tg *target, spec callSpec, rec *capturing, want clientView) {
	t.Helper()
	rec.reset()
	obs := observe.Request{Labels: fuzzLabels}
	out, err := call(context.Background(), tg, spec, rec, &obs, thresholds{modelReload: time.Second, queueWait: time.Second}, false)
	switch obs.Outcome {
	case observe.OutcomeSuccess:
		if !want.ok {
			t.Fatalf("success on a stream the client cannot read to a final chunk (%s)", want.why)
		}
		if err != nil || obs.Reason != observe.ReasonNone {
			t.Fatalf("success with error %v, reason %q", err, obs.Reason)
		}
		if out != want.content {
			t.Fatalf("output %q, want the streamed content %q", out, want.content)
		}
	case observe.OutcomeError:
		if want.ok {
			t.Fatalf("error %v (reason %q) on a stream that decodes to a final chunk", err, obs.Reason)
		}
		if err == nil || !slices.Contains(observe.Reasons, obs.Reason) {
			t.Fatalf("error with err %v and reason %q, not one of %v", err, obs.Reason, observe.Reasons)
		}
	default:
		t.Fatalf("outcome %q (reason %q, err %v): want success or error", obs.Outcome, obs.Reason, err)
	}
	if obs.Done != want.done {
		t.Fatalf("observation done = %v, the stream decoded a final chunk: %v (%s)", obs.Done, want.done, want.why)
	}
	if obs.EvalCount != want.count() {
		t.Fatalf("eval_count observed %d, want %d (the last final chunk's)", obs.EvalCount, want.count())
	}
	if obs.Duration < 0 || obs.TimeToFirst < 0 || obs.QueueWait < 0 {
		t.Fatalf("negative timing: duration %s, ttft %s, queue wait %s", obs.Duration, obs.TimeToFirst, obs.QueueWait)
	}
	if obs.QueueWait > obs.TimeToFirst {
		// The queue wait is the part of the time to first token that the
		// server's load and prompt times do not explain: never more.
		t.Fatalf("queue wait %s exceeds the time to first token %s (load %s, prompt eval %s)",
			obs.QueueWait, obs.TimeToFirst, obs.LoadDuration, obs.PromptEvalDuration)
	}
	for _, g := range rec.gaps {
		if g < 0 {
			t.Fatalf("negative inter-token gap %s", g)
		}
	}
	if rec.finished != 1 {
		t.Fatalf("Finished called %d times, want 1", rec.finished)
	}
}

// capturing records what the call hands its recorder, and passes it on.
type capturing struct {
	observe.Recorder
	mu       sync.Mutex
	gaps     []time.Duration
	finished int
}

func (c *capturing) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gaps, c.finished = c.gaps[:0], 0
}

func (c *capturing) TokenGap(d time.Duration) {
	c.mu.Lock()
	c.gaps = append(c.gaps, d)
	c.mu.Unlock()
	c.Recorder.TokenGap(d)
}

func (c *capturing) Finished(q *observe.Request) {
	c.mu.Lock()
	c.finished++
	c.mu.Unlock()
	c.Recorder.Finished(q)
}

// clientView is what the Ollama client makes of a body.
type clientView struct {
	ok        bool   // read to the end without an error, with a final chunk
	done      bool   // a final chunk decoded (before any error)
	evalCount int    // of the last final chunk
	content   string // the content (chat) or response (generate) text
	why       string
}

// count is the eval_count the observation must hold: the last final
// chunk's, 0 without one.
func (v clientView) count() int {
	if !v.done {
		return 0
	}
	return v.evalCount
}

// maxLine is the Ollama client's line buffer (api.maxBufferSize, 8 MB).
const maxLine = 8 * 1000 * 1000

// decodeLikeClient reads body as api.Client.stream does: line by line, an
// "error" field or a line that is not JSON ends the call with an error,
// then each line decodes into the API's response type.
func decodeLikeClient(body []byte, generate bool) clientView {
	var v clientView
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64*1024), maxLine)
	var text strings.Builder
	for sc.Scan() {
		line := sc.Bytes()
		var e struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(line, &e); err != nil {
			v.why = "a line that is not a JSON object: " + err.Error()
			return v
		}
		if e.Error != "" {
			v.why = "an error line"
			return v
		}
		var content string
		var done bool
		var metrics api.Metrics
		if generate {
			var r api.GenerateResponse
			if err := json.Unmarshal(line, &r); err != nil {
				v.why = "a line that is not a GenerateResponse: " + err.Error()
				return v
			}
			content, done, metrics = r.Response, r.Done, r.Metrics
		} else {
			var r api.ChatResponse
			if err := json.Unmarshal(line, &r); err != nil {
				v.why = "a line that is not a ChatResponse: " + err.Error()
				return v
			}
			content, done, metrics = r.Message.Content, r.Done, r.Metrics
		}
		text.WriteString(content)
		if done {
			v.done, v.evalCount = true, metrics.EvalCount
		}
	}
	if sc.Err() != nil {
		v.why = "a line longer than the client's buffer"
		return v
	}
	if !v.done {
		v.why = "no final chunk"
		return v
	}
	v.ok, v.content, v.why = true, text.String(), "decodes"
	return v
}

// gatherTokens reads chimeraforge_generated_tokens_total of fuzzLabels.
func gatherTokens(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != exporters.MetricGeneratedTokensTotal {
			continue
		}
		var total float64
		for _, s := range mf.GetMetric() {
			v := s.GetCounter().GetValue()
			if v < 0 {
				t.Fatalf("%s = %v", mf.GetName(), v)
			}
			total += v
		}
		return total
	}
	return 0
}

// checkLabels: every series names only the configured workload, agent,
// target, model and step.
func checkLabels(t *testing.T, reg *prometheus.Registry) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	allowed := map[string]string{"workload": fuzzLabels.Workload, "agent": fuzzLabels.Agent,
		"target": fuzzLabels.Target, "model": fuzzLabels.Model, "step": fuzzLabels.Step}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			for _, lp := range s.GetLabel() {
				if want, ok := allowed[lp.GetName()]; ok && lp.GetValue() != want {
					t.Fatalf("%s has %s=%q: a label value from the answer", mf.GetName(), lp.GetName(), lp.GetValue())
				}
			}
			checkSample(t, mf, s)
		}
	}
}

// checkSample: no counter or histogram sum is negative.
func checkSample(t *testing.T, mf *dto.MetricFamily, s *dto.Metric) {
	t.Helper()
	switch {
	case s.Counter != nil && s.GetCounter().GetValue() < 0:
		t.Fatalf("%s = %v", mf.GetName(), s.GetCounter().GetValue())
	case s.Histogram != nil && s.GetHistogram().GetSampleSum() < 0:
		t.Fatalf("%s sum = %v", mf.GetName(), s.GetHistogram().GetSampleSum())
	}
}
