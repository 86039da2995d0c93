package requestlog

import (
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chimeraforge/chimeraforge/daemon"
	"github.com/chimeraforge/chimeraforge/exporters"
	"github.com/chimeraforge/chimeraforge/observe"
)

// The daemon looks for Forget and Shard on its sink: the exporter has them
// and the wrapper must keep them.
var (
	_ daemon.Forgetter     = (*exporters.Metrics)(nil)
	_ daemon.ShardReporter = (*exporters.Metrics)(nil)
	_ daemon.Forgetter     = (*Sink)(nil)
	_ daemon.ShardReporter = (*Sink)(nil)
	_ observe.Sink         = (*Sink)(nil)
	_ observe.Recorder     = (*recorder)(nil)
	_ io.Closer            = (*Writer)(nil)
)

// fakeSink records what reaches it. Its other Sink methods are not called.
type fakeSink struct {
	observe.Sink
	mu     sync.Mutex
	calls  []string
	rec    *fakeRecorder
	labels []observe.Labels
}

func (s *fakeSink) Recorder(l observe.Labels) observe.Recorder {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.labels = append(s.labels, l)
	return s.rec
}

func (s *fakeSink) Forget(workload, agent string) {
	s.calls = append(s.calls, "Forget "+workload+" "+agent)
}
func (s *fakeSink) Shard(index, count int) {
	s.calls = append(s.calls, fmt.Sprintf("Shard %d/%d", index, count))
}

type fakeRecorder struct {
	started, finished, retried int
	gaps                       time.Duration
	last                       *observe.Request
}

func (r *fakeRecorder) Started(bool)                { r.started++ }
func (r *fakeRecorder) TokenGap(d time.Duration)    { r.gaps += d }
func (r *fakeRecorder) Finished(q *observe.Request) { r.finished++; r.last = q }
func (r *fakeRecorder) Retried(observe.Reason)      { r.retried++ }

// nopRecorder is a wrapped recorder that does nothing, for benchmarks.
type nopRecorder struct{}

func (nopRecorder) Started(bool)              {}
func (nopRecorder) TokenGap(time.Duration)    {}
func (nopRecorder) Finished(*observe.Request) {}
func (nopRecorder) Retried(observe.Reason)    {}

type nopSink struct{ observe.Sink }

func (nopSink) Recorder(observe.Labels) observe.Recorder { return nopRecorder{} }

func TestWrapDelegates(t *testing.T) {
	next := &fakeSink{rec: &fakeRecorder{}}
	w, path := openTemp(t, Options{})
	s := Wrap(next, w)
	rec := s.Recorder(testLabels)
	if !reflect.DeepEqual(next.labels, []observe.Labels{testLabels}) {
		t.Errorf("wrapped sink asked for %v", next.labels)
	}
	rec.Started(true)
	rec.TokenGap(time.Millisecond)
	rec.TokenGap(2 * time.Millisecond)
	rec.Retried(observe.ReasonConnect)
	before := time.Now()
	q := request(testLabels.Agent, 7)
	rec.Finished(q)
	after := time.Now()
	if got := *next.rec; got.started != 1 || got.gaps != 3*time.Millisecond || got.retried != 1 || got.finished != 1 || got.last != q {
		t.Errorf("wrapped recorder saw %+v", got)
	}
	s.Forget("chat", "planner")
	s.Shard(1, 2)
	if want := []string{"Forget chat planner", "Shard 1/2"}; !reflect.DeepEqual(next.calls, want) {
		t.Errorf("wrapped sink got %q, want %q", next.calls, want)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1", len(lines))
	}
	at, err := time.Parse(time.RFC3339Nano, lines[0]["time"].(string))
	if err != nil || at.Before(before.Truncate(0)) || at.After(after) || !strings.HasSuffix(lines[0]["time"].(string), "Z") {
		t.Errorf("time %v (%v), want UTC between %v and %v", lines[0]["time"], err, before, after)
	}

	// A sink without the optional methods: they do nothing.
	bare := Wrap(struct{ observe.Sink }{}, w)
	bare.Forget("chat", "planner")
	bare.Shard(0, 1)
}

// TestWrapMetrics: wrapped around the Prometheus exporter, every request
// counted in chimeraforge_requests_total has its line.
func TestWrapMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := exporters.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	w, path := openTemp(t, Options{})
	if err := reg.Register(w); err != nil {
		t.Fatal(err)
	}
	s := Wrap(m, w)
	rec := s.Recorder(testLabels)
	for i, o := range []observe.Outcome{observe.OutcomeSuccess, observe.OutcomeError, observe.OutcomeSuccess, observe.OutcomeCanceled} {
		rec.Started(false)
		q := request(testLabels.Agent, i)
		q.Labels = testLabels
		q.Outcome = o
		rec.Finished(q)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	byOutcome := map[string]int{}
	for _, l := range readLines(t, path) {
		byOutcome[l["outcome"].(string)]++
	}
	for o, n := range byOutcome {
		if got := requestsTotal(t, reg, o); got != float64(n) {
			t.Errorf("outcome %s: %d lines, chimeraforge_requests_total %v", o, n, got)
		}
	}
	if byOutcome["success"] != 2 || byOutcome["error"] != 1 || byOutcome["canceled"] != 1 {
		t.Errorf("lines by outcome %v", byOutcome)
	}
	if n := testutil.CollectAndCount(w, MetricLinesTotal); n != 1 {
		t.Errorf("%d %s series, want 1", n, MetricLinesTotal)
	}
}

// requestsTotal is chimeraforge_requests_total{outcome} in reg.
func requestsTotal(t *testing.T, reg prometheus.Gatherer, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, mf := range mfs {
		if mf.GetName() != exporters.MetricRequestsTotal {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, lp := range s.GetLabel() {
				if lp.GetName() == exporters.LabelOutcome && lp.GetValue() == outcome {
					total += s.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}

// TestHotPathDoesNotAllocate: TokenGap only delegates, and a finished
// request costs no allocation either.
func TestHotPathDoesNotAllocate(t *testing.T) {
	w := New(t.Context(), io.Discard, Options{})
	t.Cleanup(func() { _ = w.Close() })
	rec := Wrap(&fakeSink{rec: &fakeRecorder{}}, w).Recorder(testLabels)
	q := request("a", 1)
	for name, f := range map[string]func(){
		"TokenGap": func() { rec.TokenGap(time.Millisecond) },
		"Finished": func() { rec.Finished(q) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocations, want 0", name, n)
		}
	}
}

func BenchmarkFinished(b *testing.B) {
	benchmarkFinished(b, New(b.Context(), io.Discard, Options{}))
}

func BenchmarkFinishedToFile(b *testing.B) {
	w, err := Open(b.Context(), filepath.Join(b.TempDir(), "requests.jsonl"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	benchmarkFinished(b, w)
}

// benchmarkFinished records requests through w from parallel goroutines.
func benchmarkFinished(b *testing.B, w *Writer) {
	b.Cleanup(func() { _ = w.Close() })
	rec := Wrap(nopSink{}, w).Recorder(testLabels)
	q := request("a", 1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec.Finished(q)
		}
	})
}
