package promtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chimeraforge/chimeraforge/internal/testtool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	interval  = 500 * time.Millisecond
	waitLimit = 20 * time.Second
)

// target is a /metrics endpoint on loopback with one counter and one gauge.
type target struct {
	srv     *httptest.Server
	counter prometheus.Counter
	gauge   prometheus.Gauge
	hist    prometheus.Histogram // native only
}

// newTarget builds the endpoint on a listener that is already bound, so its
// address is known; it serves only once start is called.
func newTarget(t *testing.T) *target {
	t.Helper()
	reg := prometheus.NewRegistry()
	tg := &target{
		counter: prometheus.NewCounter(prometheus.CounterOpts{Name: "promtest_requests_total", Help: "Requests."}),
		gauge:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "promtest_temperature_celsius", Help: "Temperature."}),
		hist: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "promtest_latency_seconds", Help: "Latency.",
			NativeHistogramBucketFactor: 1.1, Buckets: []float64{}, // no classic buckets
		}),
	}
	reg.MustRegister(tg.counter, tg.gauge, tg.hist)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	tg.srv = httptest.NewUnstartedServer(mux)
	// Closed after Prometheus has stopped: cleanups run last-in first-out.
	t.Cleanup(tg.srv.Close)
	return tg
}

func (tg *target) addr() string { return tg.srv.Listener.Addr().String() }

func TestScrapeGaugeAndCounterRate(t *testing.T) {
	t.Parallel()
	tg := newTarget(t)
	tg.gauge.Set(42.5)
	for _, v := range []float64{0.1, 0.2, 0.4} {
		tg.hist.Observe(v)
	}
	tg.srv.Start()

	began := time.Now()
	s := Start(t, interval, tg.addr())
	t.Logf("prometheus ready at %s after %v", s.URL(), time.Since(began).Round(time.Millisecond))
	s.WaitScraped(t, 2, waitLimit)
	t.Logf("2 scrapes after %v", time.Since(began).Round(time.Millisecond))

	if got := s.Scalar(t, "promtest_temperature_celsius"); got != 42.5 {
		t.Errorf("gauge: got %v, want 42.5", got)
	}
	up := s.Query(t, "up")
	if len(up) != 1 || up[0].Labels["job"] != Job || up[0].Labels["instance"] != tg.addr() || up[0].Value != 1 {
		t.Errorf("up: got %v, want one sample job=%q instance=%q => 1", up, Job, tg.addr())
	}

	// The counter was 0 in the scrapes so far; once a scrape sees 5, the
	// window holds both and its rate is positive.
	tg.counter.Add(5)
	s.WaitQuery(t, "promtest_requests_total == 5", waitLimit)
	if got := s.Scalar(t, "rate(promtest_requests_total[10s])"); got <= 0 {
		t.Errorf("rate of the counter after increments: got %v, want > 0", got)
	}
	if got := s.Scalar(t, "increase(promtest_requests_total[10s])"); got < 5 {
		t.Errorf("increase of the counter: got %v, want >= 5", got)
	}
	// Native histograms are scraped (--enable-feature=native-histograms)
	// and read through functions; a raw one fails the query.
	if got := s.Scalar(t, "histogram_count(promtest_latency_seconds)"); got != 3 {
		t.Errorf("native histogram count: got %v, want 3", got)
	}
	if got := s.Scalar(t, "histogram_sum(promtest_latency_seconds)"); got < 0.69 || got > 0.71 {
		t.Errorf("native histogram sum: got %v, want 0.7", got)
	}
	if msg := runFake(t, func(tb testing.TB) { s.Query(tb, "promtest_latency_seconds") }).fatal; !strings.Contains(msg, "is a native histogram") {
		t.Errorf("raw native histogram: got failure %q", msg)
	}
	// A scalar result is one sample without labels.
	if got := s.Query(t, "scalar(promtest_temperature_celsius) * 2"); len(got) != 1 || len(got[0].Labels) != 0 || got[0].Value != 85 {
		t.Errorf("scalar expression: got %v, want one unlabelled sample 85", got)
	}
}

func TestQueryFailures(t *testing.T) {
	t.Parallel()
	s := Start(t, interval)
	for _, tc := range []struct{ expr, want string }{
		{"rate(", "parse error"},
		{"up[1m]", "result is a matrix, want an instant vector or a scalar"},
		{`"text"`, "string"}, // the API client itself rejects string results
	} {
		msg := runFake(t, func(tb testing.TB) { s.Query(tb, tc.expr) }).fatal
		if !strings.Contains(msg, tc.want) {
			t.Errorf("Query(%q) failure: got %q, want it to contain %q", tc.expr, msg, tc.want)
		}
	}
	msg := runFake(t, func(tb testing.TB) { s.Scalar(tb, "vector(1) or label_replace(vector(2), \"a\", \"b\", \"\", \"\")") }).fatal
	if !strings.Contains(msg, "want exactly 1 sample, got 2") {
		t.Errorf("Scalar of two samples: got %q", msg)
	}
	// No targets: WaitScraped has nothing to wait for.
	s.WaitScraped(t, 3, time.Second)
}

const rules = `groups:
  - name: promtest
    rules:
      - record: promtest:temperature_celsius:doubled
        expr: 2 * promtest_temperature_celsius
      - alert: PromtestHot
        expr: promtest_temperature_celsius > 40
        labels:
          severity: page
`

func TestRulesWithTargetStartedLate(t *testing.T) {
	t.Parallel()
	tg := newTarget(t)
	tg.gauge.Set(21)
	// Prometheus starts first; its scrapes fail (up 0) until the target
	// serves, and WaitScraped counts only the successful ones.
	s := StartWithRules(t, interval, rules, tg.addr())
	time.Sleep(2 * interval)
	tg.srv.Start()
	s.WaitScraped(t, 2, waitLimit)

	got := s.WaitQuery(t, "promtest:temperature_celsius:doubled", waitLimit)
	if len(got) != 1 || got[0].Value != 42 || got[0].Labels["instance"] != tg.addr() {
		t.Errorf("recording rule: got %v, want one sample instance=%q => 42", got, tg.addr())
	}
	if alerts := s.Query(t, `ALERTS{alertname="PromtestHot"}`); len(alerts) != 0 {
		t.Errorf("alert at 21°C: got %v, want none", alerts)
	}
	tg.gauge.Set(45)
	firing := s.WaitQuery(t, `ALERTS{alertname="PromtestHot",alertstate="firing"}`, waitLimit)
	if len(firing) != 1 || firing[0].Labels["severity"] != "page" {
		t.Errorf("alert at 45°C: got %v, want one firing alert with severity=page", firing)
	}
}

func TestMissingBinary(t *testing.T) {
	const missing = "/nonexistent/prometheus"
	start := func(tb testing.TB) {
		startWith(tb, missing, Options{Interval: interval, Targets: []string{"127.0.0.1:1"}})
	}

	t.Setenv(testtool.EnvRequire, "")
	got := runFake(t, start)
	if got.fatal != "" || !strings.Contains(got.skipped, "apt-get install -y prometheus") || !strings.Contains(got.skipped, missing) {
		t.Errorf("without %s: got skip %q, fatal %q; want a skip naming %s and the Debian package", testtool.EnvRequire, got.skipped, got.fatal, missing)
	}

	t.Setenv(testtool.EnvRequire, "1")
	got = runFake(t, start)
	if got.skipped != "" || !strings.Contains(got.fatal, "apt-get install -y prometheus") {
		t.Errorf("with %s: got skip %q, fatal %q; want a failure naming the Debian package", testtool.EnvRequire, got.skipped, got.fatal)
	}
}

func TestTargetNotServing(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a WaitScraped limit")
	}
	t.Parallel()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens: every scrape is refused
	s := Start(t, interval, addr)
	// Long enough for Prometheus 2.42 to activate the target (about 5s,
	// see Start) and fail a few scrapes.
	msg := runFake(t, func(tb testing.TB) { s.WaitScraped(tb, 1, 7*time.Second) }).fatal
	t.Logf("WaitScraped failed with:\n%s", msg)
	for _, want := range []string{addr + ": 0 successful scrape(s)", "health down", "connection refused"} {
		if !strings.Contains(msg, want) {
			t.Errorf("WaitScraped failure message lacks %q:\n%s", want, msg)
		}
	}
}

// fakeTB records a skip or a fatal failure instead of ending the real test.
type fakeTB struct {
	testing.TB
	skipped, fatal string
}

func (f *fakeTB) Helper()          {}
func (f *fakeTB) Skip(args ...any) { f.skipped = fmt.Sprint(args...); runtime.Goexit() }
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (f *fakeTB) Fatal(args ...any) { f.fatal = fmt.Sprint(args...); runtime.Goexit() }
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runFake runs fn with a fakeTB in its own goroutine, which Skip and Fatal
// end, and returns what was recorded.
func runFake(t *testing.T, fn func(testing.TB)) *fakeTB {
	t.Helper()
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

// Prometheus 2.42 keeps either the native or the classic form of a
// histogram exposed in both, depending on the feature flag; RangeSeries
// counts float and histogram series alike, and RuleProblems reports a rule
// that fails at evaluation time.
func TestClassicHistogramsRangeSeriesAndRuleProblems(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "promtest_both_seconds", Help: "Both forms.",
		Buckets: []float64{0.1, 1}, NativeHistogramBucketFactor: 1.1,
	}, []string{"side"})
	reg.MustRegister(h)
	h.WithLabelValues("a").Observe(0.5)
	h.WithLabelValues("b").Observe(0.5)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	// Both series of "side" match one another on no label: many-to-many.
	const badRules = `groups:
  - name: bad
    rules:
      - record: promtest:many_to_many
        expr: promtest_both_seconds_count{side="a"} * on () promtest_both_seconds_count
`
	classic := StartOptions(t, Options{Interval: interval, Targets: []string{addr}, ClassicHistograms: true, Rules: badRules})
	native := Start(t, interval, addr)
	classic.WaitScraped(t, 2, waitLimit)
	native.WaitScraped(t, 2, waitLimit)

	for _, tc := range []struct {
		s    *Server
		expr string
		want int
	}{
		{classic, "promtest_both_seconds_count", 2},
		{classic, "promtest_both_seconds", 0},
		{native, "promtest_both_seconds", 2},
		{native, "promtest_both_seconds_count", 0},
		{native, "sum(rate(promtest_both_seconds[5s]))", 1},
	} {
		n, err := tc.s.RangeSeries(tc.expr, 5*time.Second, time.Second)
		if err != nil || n != tc.want {
			t.Errorf("%s on classic=%v: %d series, %v; want %d", tc.expr, tc.s.classic, n, err, tc.want)
		}
	}
	if _, err := native.RangeSeries("rate(", 5*time.Second, time.Second); err == nil || !strings.Contains(err.Error(), "parse error") {
		t.Errorf("bad expression: %v, want a parse error", err)
	}
	eventuallyProblems := func() []string {
		deadline := time.Now().Add(waitLimit)
		for {
			p, err := classic.RuleProblems()
			if err != nil {
				t.Fatal(err)
			}
			if len(p) > 0 || time.Now().After(deadline) {
				return p
			}
			time.Sleep(interval)
		}
	}
	if p := eventuallyProblems(); len(p) != 1 || !strings.Contains(p[0], "promtest:many_to_many") || !strings.Contains(p[0], "many-to-many") {
		t.Errorf("rule problems: %q, want the many-to-many rule", p)
	}
}
