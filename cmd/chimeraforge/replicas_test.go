package main

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chimeraforge/chimeraforge/dashboards"
	"github.com/chimeraforge/chimeraforge/exporters"
	"github.com/chimeraforge/chimeraforge/internal/promtest"
	"github.com/chimeraforge/chimeraforge/ollamasim"
)

// Scale-out: two daemons run one configuration as shards 0 and 1 of 2, and
// one Prometheus adds them up with the generated rules.

// gate holds the chat requests of the agents it does not admit until it
// admits them, so that a test can keep a shard's agent off a server while
// another shard calibrates there: the stand-in for "the other replica is
// not running yet". Other requests (polls) always pass.
type gate struct {
	mu      sync.Mutex
	admit   []string // prompt prefixes admitted; nil admits everyone
	changed chan struct{}
}

func newGate(admit ...string) *gate {
	return &gate{admit: admit, changed: make(chan struct{})}
}

// set admits the agents whose prompts start with the given prefixes; none
// admits everyone.
func (g *gate) set(admit ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.admit = admit
	close(g.changed)
	g.changed = make(chan struct{})
}

func (g *gate) admits(body []byte) (bool, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.admit == nil {
		return true, nil
	}
	for _, p := range g.admit {
		if bytes.Contains(body, []byte(`"content":"`+p)) {
			return true, nil
		}
	}
	return false, g.changed
}

func (g *gate) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/chat" {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return // the client went away
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			for {
				ok, changed := g.admits(body)
				if ok {
					break
				}
				select {
				case <-changed:
				case <-r.Context().Done():
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// simServer serves an Ollama simulator with one slot and its own GPU on
// 127.0.0.1 behind g (nil: no gate); both stop when the test ends, after
// the daemons started later.
func simServer(t *testing.T, name string, g *gate) (*ollamasim.Server, string) {
	t.Helper()
	sim, err := ollamasim.New(ollamasim.Config{Name: name, NumParallel: 1, LoadDelay: 20 * time.Millisecond, Jitter: -1,
		GPU: ollamasim.NewGPU(ollamasim.GPUConfig{Name: name, DecodeRate: 200})})
	if err != nil {
		t.Fatal(err)
	}
	h := sim.Handler()
	if g != nil {
		h = g.wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		if g != nil {
			g.set() // nothing stays held
		}
		srv.Close()
		sim.Close()
	})
	return sim, srv.URL
}

// replicaConfig is the configuration every shard of workload runs, but for
// its shard index: agents a and b, one replica each, so that a runs on
// shard 0 and b on shard 1. With urlA == urlB both call one server.
func replicaConfig(index int, workload, urlA, urlB string) string {
	targets := fmt.Sprintf("  - {name: %s-a, url: %q, num_parallel: 1}\n  - {name: %s-b, url: %q, num_parallel: 1}\n",
		workload, urlA, workload, urlB)
	ta, tb := workload+"-a", workload+"-b"
	if urlA == urlB {
		targets = fmt.Sprintf("  - {name: %s, url: %q, num_parallel: 1}\n", workload, urlA)
		ta, tb = workload, workload
	}
	agent := func(name, target, prompt string) string {
		return fmt.Sprintf("  - {name: %s, target: %s, model: sim-tiny, options: {num_predict: 40, num_ctx: 2048}, "+
			"workflow: [{name: ask, prompt: %q}]}\n", name, target, prompt)
	}
	return fmt.Sprintf("global: {shutdown_timeout: 5s, shard: {index: %d, count: 2}}\ntargets:\n%sagents:\n%s%sworkloads:\n"+
		"  - {name: %s, agents: [{agent: a}, {agent: b}], calibration: {runs: 3}}\n",
		index, targets, agent("a", ta, "alpha: summarise the incident"), agent("b", tb, "beta: summarise the incident"), workload)
}

// calibrated reports whether r has a baseline for agent of workload and no
// calibration going on, from its own /metrics.
func calibrated(t *testing.T, r *running, workload, agent string) bool {
	m := r.scrape(t)
	return m.sum(exporters.MetricCalibrationsTotal, map[string]string{"workload": workload, "agent": agent, "outcome": "success"}) > 0 &&
		m.sum(exporters.MetricCalibrating, map[string]string{"workload": workload}) == 0
}

// halt stops a daemon before the test ends and leaves its result for the
// cleanup that startDaemon registered.
func halt(t *testing.T, r *running) {
	t.Helper()
	r.stop()
	select {
	case err := <-r.done:
		r.done <- err
	case <-time.After(15 * time.Second):
		t.Fatal("daemon did not stop within 15s")
	}
}

func TestReplicasAddUpInPrometheus(t *testing.T) {
	// shared: both shards' agents on one server with one slot. Its gate
	// admits a only until shard 0 has calibrated a, then b only until
	// shard 1 has calibrated b, so that each baseline is measured solo, as
	// if the shards had calibrated at different times.
	g := newGate("alpha")
	sim, url := simServer(t, "shared", g)
	// separate: the control, a server each.
	_, urlA := simServer(t, "separate-a", nil)
	_, urlB := simServer(t, "separate-b", nil)

	shared := []*running{
		startDaemon(t, replicaConfig(0, "shared", url, url), false),
		startDaemon(t, replicaConfig(1, "shared", url, url), false),
	}
	separate := []*running{
		startDaemon(t, replicaConfig(0, "separate", urlA, urlB), false),
		startDaemon(t, replicaConfig(1, "separate", urlA, urlB), false),
	}
	rules, err := dashboards.RulesYAML(dashboards.DefaultThresholds)
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, r := range append(append([]*running(nil), shared...), separate...) {
		targets = append(targets, strings.TrimPrefix(r.base, "http://"))
	}
	prom := promtest.StartOptions(t, promtest.Options{Interval: 500 * time.Millisecond, Rules: string(rules), Targets: targets})

	eventually(t, 15*time.Second, "shard 0 to calibrate a alone", func() bool { return calibrated(t, shared[0], "shared", "a") })
	g.set("beta")
	eventually(t, 15*time.Second, "shard 1 to calibrate b alone", func() bool { return calibrated(t, shared[1], "shared", "b") })
	g.set()

	// (1) Each daemon runs, calibrates and exports its own agent only, and
	// says which shard it is.
	for i, r := range shared {
		own, other := []string{"a", "b"}[i], []string{"a", "b"}[1-i]
		m := r.scrape(t)
		if got := m.sum(exporters.MetricAgentActive, map[string]string{"workload": "shared", "agent": own}); got != 1 {
			t.Errorf("shard %d: agent_active of %s = %v, want 1", i, own, got)
		}
		for _, family := range []string{exporters.MetricAgentActive, exporters.MetricBaselineTokensPerSecond, exporters.MetricGeneratedTokensTotal} {
			for _, s := range m.series(family) {
				if s["agent"] == other {
					t.Errorf("shard %d: %s has a series for %s, which runs on the other shard: %v", i, family, other, s)
				}
			}
		}
		if got := m.series(exporters.MetricShardInfo); len(got) != 1 || got[0]["index"] != fmt.Sprint(i) || got[0]["count"] != "2" {
			t.Errorf("shard %d: %s series %v, want one {index=%d, count=2}", i, exporters.MetricShardInfo, got, i)
		}
		if want := fmt.Sprintf(`"shard_index":%d,"shard_count":2`, i); !strings.Contains(r.log.String(), want) {
			t.Errorf("shard %d: the log does not say %s", i, want)
		}
	}

	// A window of steady running after every calibration.
	waitCalibrated(t, prom, 4, 30*time.Second)
	const window = "8s"
	time.Sleep(9 * time.Second)

	// (3) Efficiency over both replicas: one slot shared by two daemons
	// gives no gain over taking turns; a server each, no loss.
	sh := evaluate(t, prom, "shared", window)
	sep := evaluate(t, prom, "separate", window)
	t.Logf("two shards, one slot:     efficiency %.3f speedup %.3f balance %.3f", sh.efficiency, sh.speedup, sh.balance)
	t.Logf("two shards, a server each: efficiency %.3f speedup %.3f balance %.3f", sep.efficiency, sep.speedup, sep.balance)
	if sh.efficiency > 0.65 || sh.efficiency < 0.35 {
		t.Errorf("two shards sharing one slot: efficiency %.3f, want about 0.5 (0.35..0.65)", sh.efficiency)
	}
	if sep.efficiency < 0.9 {
		t.Errorf("two shards with a server each: efficiency %.3f, want >= 0.9", sep.efficiency)
	}
	if sh.speedup > 1.3 || sep.speedup < 1.8 {
		t.Errorf("speedup: one slot %.3f (want ~1, <= 1.3), a server each %.3f (want ~2, >= 1.8)", sh.speedup, sep.speedup)
	}
	// Each agent's baseline comes from the one daemon that runs it.
	for _, s := range prom.Query(t, `count by (workload, agent) (chimeraforge_baseline_tokens_per_second)`) {
		if s.Value != 1 {
			t.Errorf("%v: %v baseline series, want 1", s.Labels, s.Value)
		}
	}
	for _, s := range prom.Query(t, `count by (instance) (chimeraforge_baseline_tokens_per_second)`) {
		if s.Value != 1 {
			t.Errorf("instance %s: %v baseline series, want 1 (its own agent)", s.Labels["instance"], s.Value)
		}
	}
	// The recorded figures: one series per workload. rate() over 5m divides
	// by the whole 5 minutes, so on series a few seconds old the recorded
	// efficiency is far below its steady value, equally for both workloads;
	// their ratio is what can be checked this early. The shared one also
	// counts the time its agents were held at the gate as running.
	recorded := map[string]float64{}
	for _, rec := range []string{dashboards.RecEfficiency5m, dashboards.RecSpeedup5m, dashboards.RecTokensRate5m} {
		out := prom.WaitQuery(t, rec, 5*time.Second)
		if len(out) != 2 {
			t.Errorf("%s: %d series, want one per workload: %v", rec, len(out), out)
		}
		for _, s := range out {
			recorded[rec+"/"+s.Labels["workload"]] = s.Value
		}
	}
	effShared, effSep := recorded[dashboards.RecEfficiency5m+"/shared"], recorded[dashboards.RecEfficiency5m+"/separate"]
	t.Logf("recorded %s: shared %.4f, separate %.4f (ratio %.3f)", dashboards.RecEfficiency5m, effShared, effSep, effShared/effSep)
	if !(effSep > 0) || effShared/effSep > 0.65 {
		t.Errorf("recorded efficiency: shared %.4f ÷ separate %.4f = %.3f, want <= 0.65", effShared, effSep, effShared/effSep)
	}

	// (2) Prometheus sees both replicas, tells them apart by instance and
	// by shard, and the recording rule adds them into one series.
	if n := prom.Scalar(t, `count(count by (instance) (chimeraforge_generated_tokens_total{workload="shared"}))`); n != 2 {
		t.Errorf("workload shared: %v instances, want 2", n)
	}
	byShard := prom.Query(t, `sum by (index) (rate(chimeraforge_generated_tokens_total{workload="shared"}[`+window+`])
  * on (job, instance) group_left (index) chimeraforge_shard_info)`)
	if len(byShard) != 2 || byShard[0].Labels["index"] != "0" || byShard[1].Labels["index"] != "1" || !(byShard[0].Value > 0) || !(byShard[1].Value > 0) {
		t.Errorf("tokens/s by shard index: %v, want shards 0 and 1, both > 0", byShard)
	}

	// (4) No rule fails to evaluate on the series of two replicas.
	problems, err := prom.RuleProblems()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("rule: %s", p)
	}

	// (5) What both daemons counted is what the one server served, but for
	// the requests in flight when they were read. Every request a daemon
	// counts as ended the simulator counted first.
	var ok, inFlight, tokens float64
	for _, r := range shared {
		m := r.scrape(t)
		ok += m.sum(exporters.MetricRequestsTotal, map[string]string{"outcome": "success"})
		inFlight += m.sum(exporters.MetricRequestsInFlight, nil)
		tokens += m.sum(exporters.MetricGeneratedTokensTotal, nil)
	}
	st := sim.Stats()
	t.Logf("daemons: %v successful requests, %v tokens, %v in flight; simulator: %d completed, %d tokens",
		ok, tokens, inFlight, st.Completed, st.EvalTokens)
	if c := float64(st.Completed); ok == 0 || c < ok || c > ok+inFlight {
		t.Errorf("simulator completed %v requests, daemons counted %v successful with %v in flight: want %v..%v",
			c, ok, inFlight, ok, ok+inFlight)
	}
	if e := float64(st.EvalTokens); e < tokens || e > tokens+40*inFlight {
		t.Errorf("simulator generated %v tokens, daemons counted %v with %v requests of 40 in flight", e, tokens, inFlight)
	}

	// (2, continued) Stop the shared replicas: their series stop moving, so
	// the recording rule and the same rate() over each instance, evaluated
	// a moment later, see the same samples.
	halt(t, shared[0])
	halt(t, shared[1])
	sumRates := func() float64 {
		var sum float64
		out := prom.Query(t, `sum by (instance) (rate(chimeraforge_generated_tokens_total{workload="shared"}[5m]))`)
		if len(out) != 2 {
			t.Fatalf("rate of workload shared by instance: %v, want 2 instances", out)
		}
		for _, s := range out {
			sum += s.Value
		}
		return sum
	}
	recordedRate := func() float64 {
		out := prom.Query(t, dashboards.RecTokensRate5m+`{workload="shared"}`)
		if len(out) != 1 {
			t.Fatalf("%s{workload=\"shared\"}: %v, want exactly one series", dashboards.RecTokensRate5m, out)
		}
		return out[0].Value
	}
	// Once the last samples are more than an interval old, neither value
	// moves any more.
	var rec, raw float64
	eventually(t, 10*time.Second, "the recorded rate to settle", func() bool {
		r1, s1 := recordedRate(), sumRates()
		time.Sleep(time.Second)
		rec, raw = recordedRate(), sumRates()
		return rec == r1 && raw == s1
	})
	t.Logf("%s{workload=\"shared\"} %.4f; sum over instances of rate() %.4f", dashboards.RecTokensRate5m, rec, raw)
	if !(raw > 0) || math.Abs(rec-raw) > 0.02*raw {
		t.Errorf("recorded %v, sum of both replicas' rates %v: want equal within 2%%", rec, raw)
	}
}
