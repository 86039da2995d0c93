package exporters

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/chimeraforge/chimeraforge/config"
	"github.com/chimeraforge/chimeraforge/exporters/gpu"
	"github.com/chimeraforge/chimeraforge/observe"
)

// The series budget of a large configuration: 50 agents, each on the same
// 4 targets, one workflow step, one closed-loop workload
// (testdata/c50x4.yaml). A scrape of it must stay within seriesBudget
// samples with global.metrics.classic_histograms false; docs/metrics.md
// ("Series budget") quotes the figures these tests pin.
const (
	budgetConfig = "testdata/c50x4.yaml"
	seriesBudget = 10_000
)

// shape is what the series of a configuration scale with.
type shape struct {
	workloads, agents, targets int
	pairs                      int // (agent, target) pairs an agent may send to
	pairSteps                  int // (agent, target, workflow step) triples: one recorder each
	gpus, gpuProcesses         int // simulated GPUs and the processes on them
}

// shapeOf counts cfg's shape for one daemon that runs all of it (one
// shard), every target with the agents' model loaded, and one simulated
// GPU per simulated instance holding one process.
func shapeOf(t testing.TB, cfg *config.Config) shape {
	t.Helper()
	s := shape{workloads: len(cfg.Workloads), targets: len(cfg.Targets),
		gpus: len(cfg.Simulation.Instances), gpuProcesses: len(cfg.Simulation.Instances)}
	for _, w := range cfg.Workloads {
		if w.Arrival.Mode != config.ArrivalClosed {
			t.Fatalf("workload %s is open-loop: the formula below has no schedule-delay series", w.Name)
		}
		for _, wa := range w.Agents {
			a, _ := cfg.Agent(wa.Agent)
			s.agents++
			s.pairs += len(a.TargetNames())
			s.pairSteps += len(a.TargetNames()) * len(a.Workflow)
		}
	}
	return s
}

// wantSamples is the number of samples in the text exposition of the
// registry daemonRegistry builds, go_* and process_* aside: what a
// Prometheus that ingests classic histograms stores. Each histogram has
// one sample per classic bucket, the +Inf bucket, _sum and _count; with
// classic histograms off only the last three. Every agent has a baseline
// on every target, the most the daemon exports (a running 50×4 daemon,
// whose calibrations use 3 of the 4 targets, shows 50 samples fewer).
func wantSamples(s shape, classic bool) int {
	hist := func(buckets []float64) int {
		if classic {
			return len(buckets) + 3
		}
		return 3
	}
	perPairStep := len(allOutcomes) + // requests_total
		len(observe.Reasons) + // request_errors_total, pre-created per reason
		len(observe.RetryReasons) + // request_retries_total, pre-created per retried reason
		len(observe.Contentions) + // contention_events_total
		5 + // generated and prompt tokens, eval, prompt eval and load seconds
		hist(ttftBuckets) + hist(interTokenBuckets) + hist(requestBuckets) + hist(queueWaitBuckets)
	perPair := 1 + // requests_in_flight, shared by the steps
		1 // baseline_tokens_per_second, per target and model: the daemon sets only those its calibration used
	perAgent := len(allOutcomes) + // agent_runs_total
		hist(runBuckets) + // agent_run_duration_seconds
		1 + // agent_active
		1 + // baseline_timestamp_seconds
		1 // calibrations_total{outcome="success"}
	perWorkload := 1 + // arrivals_dropped_total
		1 // calibrating
	perTarget := 7 + // ollama up, info, version changes, loaded models, loads, unloads, probe duration
		5 // one loaded model: size, VRAM, VRAM ratio, context length, expiry
	// utilization, memory used and total, power and its limit, temperature,
	// SM clock, one per throttle reason
	perGPU := 7 + len(gpu.ThrottleReasons)
	fixed := 1 + // shard_info
		2 + // config_last_reload_*
		1 + // build_info
		2 + // promhttp_metric_handler_errors_total, by cause
		2 + len(gpu.Calls) // gpu collector_up, scrape_duration, errors_total by call
	return s.pairSteps*perPairStep + s.pairs*perPair + s.agents*perAgent + s.workloads*perWorkload +
		s.targets*perTarget + s.gpus*perGPU + s.gpuProcesses + fixed
}

// daemonRegistry registers what `chimeraforge run` registers, the /metrics
// handler included, and makes the Sink calls the daemon makes for cfg: a
// recorder per agent, target and workflow step, the agents started, their
// calibration, a poll of every target. Then it observes data into every
// recorder and run histogram, spread over many native buckets, as a daemon
// does after a while. It returns the registry and the handler.
func daemonRegistry(tb testing.TB, cfg *config.Config, classic bool) (*prometheus.Registry, http.Handler) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, ClassicHistograms(classic))
	if err != nil {
		tb.Fatal(err)
	}
	r, err := NewReload(reg)
	if err != nil {
		tb.Fatal(err)
	}
	r.Observe(true, time.Now())
	if err := NewBuildInfo(reg); err != nil {
		tb.Fatal(err)
	}
	if err := RegisterRuntime(reg); err != nil {
		tb.Fatal(err)
	}
	// The simulated GPUs: one per simulated instance, each holding the
	// instance as one process, attributed to its target.
	owner := map[string]string{}
	for _, t := range cfg.Targets {
		if name, ok := t.SimName(); ok {
			owner[name] = t.Name
		}
	}
	devices := make([]gpu.SimDevice, len(cfg.Simulation.Instances))
	procTarget := map[uint32]string{}
	for i, in := range cfg.Simulation.Instances {
		pid := uint32(4_000_000 + i)
		devices[i] = gpu.SimDevice{UtilizationRatio: 0.5, MemoryUsedBytes: 1 << 30, MemoryTotalBytes: 24 << 30,
			Processes: []gpu.SimProcess{{PID: pid, MemoryBytes: 1 << 30}}}
		procTarget[pid] = owner[in.Name]
	}
	gc := gpu.New(gpu.Simulated(func() []gpu.SimDevice { return devices }), gpu.Options{
		Processes: func(pid uint32) (string, bool) { t, ok := procTarget[pid]; return t, ok },
	})
	tb.Cleanup(gc.Close)
	if err := reg.Register(gc); err != nil {
		tb.Fatal(err)
	}
	// The handler as cmd/chimeraforge serves it: it registers promhttp's
	// error counter with reg.
	h := Handler(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true})

	m.Shard(cfg.Global.Shard.Index, cfg.Global.Shard.Count)
	now := time.Now()
	for _, w := range cfg.Workloads {
		m.Calibrating(w.Name, false)
		for _, wa := range w.Agents {
			a, _ := cfg.Agent(wa.Agent)
			m.AgentActive(w.Name, a.Name, wa.Replicas)
			tps := map[string]float64{}
			for _, target := range a.TargetNames() {
				tps[target] = 20
				for _, step := range a.Workflow {
					l := observe.Labels{Workload: w.Name, Agent: a.Name, Target: target, Model: a.Model, Step: step.Name}
					observeRequests(m.Recorder(l), l)
				}
			}
			m.Calibrated(observe.Calibration{Workload: w.Name, Agent: a.Name, Model: a.Model, OK: true, Runs: 3,
				Wall: time.Second, TokensPerSecond: tps, At: now})
			for i := range spread {
				m.RunFinished(observe.Run{Workload: w.Name, Agent: a.Name, Outcome: observe.OutcomeSuccess,
					Duration: spreadDuration(i, 500*time.Millisecond, 60*time.Second), Steps: len(a.Workflow)})
			}
		}
	}
	for _, t := range cfg.Targets {
		m.TargetPolled(observe.TargetState{Target: t.Name, Up: true, Version: "0.17.4", ProbeDuration: time.Millisecond,
			Models: []observe.LoadedModel{{Name: "sim-tiny", SizeBytes: 1 << 20, VRAMBytes: 1 << 20, ContextLength: 4096, ExpiresAt: now.Add(5 * time.Minute)}}})
	}
	return reg, h
}

// spread is how many observations each histogram gets, each in a native
// bucket of its own.
const spread = 24

// spreadDuration is the i-th of spread durations from lo to hi, evenly
// spaced on a log scale.
func spreadDuration(i int, lo, hi time.Duration) time.Duration {
	f := float64(i) / float64(spread-1)
	return time.Duration(float64(lo) * math.Pow(float64(hi)/float64(lo), f))
}

// observeRequests sends spread successful requests, with their token gaps,
// through rec, plus one that failed and was retried.
func observeRequests(rec observe.Recorder, l observe.Labels) {
	for i := range spread {
		rec.Started(false)
		rec.TokenGap(spreadDuration(i, 2*time.Millisecond, 200*time.Millisecond))
		rec.Finished(&observe.Request{Labels: l, Outcome: observe.OutcomeSuccess, Status: http.StatusOK,
			Duration: spreadDuration(i, 200*time.Millisecond, 20*time.Second), FirstToken: true,
			TimeToFirst: spreadDuration(i, 20*time.Millisecond, 2*time.Second),
			QueueWait:   spreadDuration(i, time.Millisecond, time.Second), Done: true, ContentChunks: 8,
			EvalCount: 8, PromptEvalCount: 12, EvalDuration: 100 * time.Millisecond,
			PromptEvalDuration: 5 * time.Millisecond, LoadDuration: time.Millisecond})
	}
	rec.Started(false)
	rec.Finished(&observe.Request{Labels: l, Outcome: observe.OutcomeError, Reason: observe.ReasonConnect, Duration: time.Millisecond})
	rec.Retried(observe.ReasonConnect)
}

func loadBudgetConfig(tb testing.TB) *config.Config {
	tb.Helper()
	cfg, err := config.Load(budgetConfig, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// textSamples renders mfs in the text format, as a Prometheus that does not
// ingest native histograms asks for it, and counts the sample lines: those
// of client_golang's runtime collectors (go_*, process_*) apart.
func textSamples(t *testing.T, mfs []*dto.MetricFamily) (own, runtime int) {
	t.Helper()
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	sc := bufio.NewScanner(&b)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "go_"), strings.HasPrefix(line, "process_"):
			runtime++
		default:
			own++
		}
	}
	return own, runtime
}

func TestSeriesBudget50x4(t *testing.T) {
	cfg := loadBudgetConfig(t)
	s := shapeOf(t, cfg)
	if want := (shape{workloads: 1, agents: 50, targets: 4, pairs: 200, pairSteps: 200, gpus: 4, gpuProcesses: 4}); s != want {
		t.Fatalf("%s has shape %+v, want %+v", budgetConfig, s, want)
	}
	tests := []struct {
		name    string
		classic bool
		want    int // samples, go_* and process_* aside; quoted in docs/metrics.md
		budget  bool
	}{
		{name: "classic and native histograms", classic: true, want: 21_190},
		{name: "native histograms only", classic: false, want: 8_790, budget: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if f := wantSamples(s, tt.classic); f != tt.want {
				t.Fatalf("formula gives %d samples, the table %d: update both, and docs/metrics.md", f, tt.want)
			}
			reg, _ := daemonRegistry(t, cfg, tt.classic)
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			own, runtime := textSamples(t, mfs)
			if own != tt.want {
				t.Errorf("%d samples in the text exposition (go_* and process_* aside), want %d", own, tt.want)
			}
			// A Prometheus that ingests native histograms stores one series
			// per histogram, whatever the setting.
			stored := 0
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					stored++
					if sm := m.GetSummary(); sm != nil {
						stored += len(sm.GetQuantile()) + 1 // _sum and _count beside the quantiles
					}
				}
			}
			if tt.budget && own+runtime > seriesBudget {
				t.Errorf("%d + %d runtime samples = %d, over the budget of %d", own, runtime, own+runtime, seriesBudget)
			}
			t.Logf("%d samples + %d go_*/process_* = %d in the text format; %d series where native histograms are ingested",
				own, runtime, own+runtime, stored)
		})
	}
}

// TestNativeOnlyExposition checks what each format carries with classic
// histograms off: the text format only the +Inf bucket, _sum and _count of
// a histogram, protobuf its native buckets.
func TestNativeOnlyExposition(t *testing.T) {
	cfg := loadBudgetConfig(t)
	reg, h := daemonRegistry(t, cfg, false)
	mf := gatherFamily(t, reg, MetricInterTokenLatencySeconds)
	for _, m := range mf.GetMetric() {
		hg := m.GetHistogram()
		if len(hg.GetBucket()) != 0 {
			t.Fatalf("%s: %d classic buckets, want none", MetricInterTokenLatencySeconds, len(hg.GetBucket()))
		}
		if hg.GetSchema() != 3 || len(hg.GetPositiveSpan()) == 0 || hg.GetSampleCount() != spread {
			t.Fatalf("%s: schema %d, %d spans, count %d: want native buckets of schema 3 and %d observations",
				MetricInterTokenLatencySeconds, hg.GetSchema(), len(hg.GetPositiveSpan()), hg.GetSampleCount(), spread)
		}
	}
	rr := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", acceptText)
	h.ServeHTTP(rr, req)
	var buckets []string
	for line := range strings.Lines(rr.Body.String()) {
		if strings.HasPrefix(line, MetricInterTokenLatencySeconds+"_bucket") {
			buckets = append(buckets, line)
		}
	}
	if len(buckets) != s50x4Pairs || !strings.Contains(buckets[0], `le="+Inf"`) {
		t.Errorf("text format: %d %s_bucket lines (first %q), want %d, one le=\"+Inf\" per series",
			len(buckets), MetricInterTokenLatencySeconds, buckets, s50x4Pairs)
	}
}

const s50x4Pairs = 200

// Accept headers of Prometheus 2.42: for the text format, and with
// --enable-feature=native-histograms (protobuf first).
const (
	acceptText     = "text/plain;version=0.0.4"
	acceptProtobuf = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8,text/plain;version=0.0.4;q=0.2"
)

// BenchmarkScrape50x4 times one whole scrape of the 50×4 configuration over
// loopback, as Prometheus 2.42 asks for it: with gzip, in the text format
// or, where it ingests native histograms, in protobuf; the response is
// read and decompressed, as Prometheus does. The registry is built as the
// daemon builds it (daemonRegistry), every histogram with data, and served
// by the daemon's handler (Handler) and, for comparison, by promhttp's own
// (gzip at its default level).
func BenchmarkScrape50x4(b *testing.B) {
	cfg := loadBudgetConfig(b)
	for _, classic := range []bool{true, false} {
		// One registry at a time, so that the other's heap does not weigh
		// on the garbage collector.
		b.Run(fmt.Sprintf("classic=%t", classic), func(b *testing.B) {
			reg, h := daemonRegistry(b, cfg, classic)
			handlers := []struct {
				name string
				h    http.Handler
			}{
				{"daemon", h},
				{"promhttp", promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true})},
			}
			for _, handler := range handlers {
				srv := httptest.NewServer(handler.h)
				b.Cleanup(srv.Close)
				client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
				b.Cleanup(client.CloseIdleConnections)
				for _, format := range []struct{ name, accept, contentType string }{
					{"text", acceptText, "text/plain"},
					{"protobuf", acceptProtobuf, "application/vnd.google.protobuf"},
				} {
					b.Run(fmt.Sprintf("handler=%s/%s-gzip", handler.name, format.name), func(b *testing.B) {
						benchmarkScrape(b, client, srv.URL, format.accept, format.contentType)
					})
				}
			}
		})
	}
}

// benchmarkScrape times scrapes of url and reports their CPU time and size.
func benchmarkScrape(b *testing.B, client *http.Client, url, accept, contentType string) {
	var wire, body int64
	cpu0, cpuOK := cpuTime()
	for b.Loop() {
		wire, body = scrape(b, client, url, accept, contentType)
	}
	if cpu1, ok := cpuTime(); cpuOK && ok {
		// Server and client together: the client's share is reading and
		// decompressing the answer.
		b.ReportMetric(float64(cpu1-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/scrape")
	}
	b.ReportMetric(float64(wire), "gzip-B/scrape")
	b.ReportMetric(float64(body), "B/scrape")
}

// scrape GETs url with gzip, reads and decompresses the whole answer and
// returns its size on the wire and decompressed.
func scrape(b *testing.B, client *http.Client, url, accept, contentType string) (wire, body int64) {
	req, err := http.NewRequestWithContext(b.Context(), http.MethodGet, url, nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "gzip" ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), contentType) {
		b.Fatalf("GET /metrics: %d, %q, Content-Encoding %q; want 200, %s, gzip",
			resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Encoding"), contentType)
	}
	counted := &countingReader{r: resp.Body}
	zr, err := gzip.NewReader(counted)
	if err != nil {
		b.Fatal(err)
	}
	body, err = io.Copy(io.Discard, zr)
	if err != nil {
		b.Fatal(err)
	}
	return counted.n, body
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
