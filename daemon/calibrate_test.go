package daemon

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/chimeraforge/chimeraforge/observe"
	"github.com/chimeraforge/chimeraforge/ollamasim"
)

func TestCalibrationMeasuresEachAgentAlone(t *testing.T) {
	cfg := mustConfig(t, fmt.Sprintf(simBase, 200, 2, 0, "1s", 2, "10s", "10s")+`
agents:
  - {name: a, target: s, model: sim-tiny, options: {num_predict: 20}, workflow: [{name: ask, prompt: hi}]}
  - {name: b, target: s, model: sim-tiny, options: {num_predict: 20}, workflow: [{name: ask, prompt: hi}]}
workloads:
  - name: w
    agents: [{agent: a}, {agent: b, replicas: 2}]
    calibration: {runs: 2}
`)
	sink := newRecordingSink()
	runFor(t, cfg, sink, 2*time.Second)
	reqs, _, _, _ := sink.snapshot()
	sink.mu.Lock()
	calibrated, calibrations, active := sink.calibrated, sink.calibrations, sink.active
	sink.mu.Unlock()

	if calibrations != 1 || len(calibrated) != 2 {
		t.Fatalf("calibrations %d, agent results %d; want 1 and 2", calibrations, len(calibrated))
	}
	for i, agent := range []string{"a", "b"} {
		c := calibrated[i]
		if c.Agent != agent || !c.OK || c.Runs != 2 {
			t.Errorf("calibration %d: %+v, want agent %s, ok, 2 runs", i, c, agent)
		}
		// One stream alone on a 200 tokens/s GPU: at most 200 tokens/s, and
		// well above half of it (load, prompt and HTTP take the rest).
		if tps := c.TokensPerSecond["s"]; tps > 200*1.02 || tps < 100 {
			t.Errorf("agent %s baseline %.1f tokens/s, want within (100, 204]", agent, tps)
		}
	}
	// Warm-up + 2 measured runs of a alone, then of b alone, then both.
	if len(reqs) < 7 {
		t.Fatalf("only %d requests", len(reqs))
	}
	for i, want := range []string{"a", "a", "a", "b", "b", "b"} {
		if reqs[i].Agent != want {
			t.Fatalf("request %d was agent %s, want %s: calibration must run one agent alone (order %v)", i, reqs[i].Agent, want, agentsOf(reqs[:7]))
		}
	}
	// All replicas ran again afterwards and, stopped, count for nothing.
	if active["w/a"] != 0 || active["w/b"] != 0 {
		t.Errorf("agent_active after stop: %v, want 0 each", active)
	}
}

func agentsOf(reqs []observe.Request) []string {
	var out []string
	for _, r := range reqs {
		out = append(out, r.Agent)
	}
	return out
}

func TestVersionChangeAndDemandRecalibrate(t *testing.T) {
	sim, err := ollamasim.New(ollamasim.Config{LoadDelay: -1, Jitter: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	var version atomic.Value
	version.Store("0.17.4")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/version" {
			fmt.Fprintf(w, `{"version":%q}`, version.Load())
			return
		}
		sim.Handler().ServeHTTP(w, r)
	}))
	defer srv.Close()
	cfg := mustConfig(t, fmt.Sprintf(`
global: {shutdown_timeout: 2s}
targets: [{name: t, url: %q, poll_interval: 100ms}]
agents:
  - {name: a, target: t, model: sim-tiny, think_time: 50ms, options: {num_predict: 4}, workflow: [{name: ask, prompt: hi}]}
workloads:
  - {name: w, agents: [{agent: a}], calibration: {runs: 1}}
`, srv.URL))
	sink := newRecordingSink()
	dm := New(cfg, sink, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dm.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	calibrated := func() int {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return len(sink.calibrated)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("the calibration at start", func() bool { return calibrated() == 1 })
	time.Sleep(300 * time.Millisecond) // several version checks, same version
	if n := calibrated(); n != 1 {
		t.Fatalf("%d calibrations without a version change, want 1", n)
	}
	version.Store("0.18.0")
	waitFor("a calibration after the version change", func() bool { return calibrated() == 2 })

	if err := dm.Calibrate("nope"); err == nil {
		t.Error("Calibrate(unknown workload) = nil, want an error")
	}
	if err := dm.Calibrate("w"); err != nil {
		t.Fatalf("Calibrate(w): %v", err)
	}
	waitFor("the calibration on demand", func() bool { return calibrated() == 3 })
}
