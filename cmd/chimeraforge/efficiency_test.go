package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chimeraforge/chimeraforge/dashboards"
	"github.com/chimeraforge/chimeraforge/internal/ollamatest"
	"github.com/chimeraforge/chimeraforge/internal/promtest"
)

// Efficiency, speedup and the old balance figure, computed by a real
// Prometheus from the daemon's exported series with the dashboards' PromQL.

// figures evaluates the dashboards' expressions over window for workload.
type figures struct{ efficiency, speedup, balance float64 }

func evaluate(t *testing.T, prom *promtest.Server, workload, window string) figures {
	t.Helper()
	one := func(expr string) float64 {
		for _, s := range prom.Query(t, expr) {
			if s.Labels["workload"] == workload {
				return s.Value
			}
		}
		t.Fatalf("no sample for workload %s in\n%s", workload, expr)
		return 0
	}
	return figures{
		efficiency: one(dashboards.Efficiency(window)),
		speedup:    one(dashboards.Speedup(window)),
		balance:    one(dashboards.Balance(window)),
	}
}

// waitCalibrated waits until every agent of the workloads has a baseline
// and no workload is calibrating any more, as Prometheus sees it.
func waitCalibrated(t *testing.T, prom *promtest.Server, agents int, limit time.Duration) {
	t.Helper()
	eventually(t, limit, "baselines in Prometheus", func() bool {
		n := len(prom.Query(t, `count by (workload, agent) (chimeraforge_baseline_tokens_per_second)`))
		busy := prom.Query(t, `max(chimeraforge_calibrating) > 0`)
		return n == agents && len(busy) == 0
	})
}

const simEfficiencyConfig = `
simulation:
  gpus:
    - {name: gpu-a, decode_rate: 200}
    - {name: gpu-b, decode_rate: 200}
    - {name: gpu-shared, decode_rate: 200}
  instances:
    - {name: sim-a, gpu: gpu-a, num_parallel: 1, load_delay: 20ms, jitter: 0}
    - {name: sim-b, gpu: gpu-b, num_parallel: 1, load_delay: 20ms, jitter: 0}
    - {name: sim-shared, gpu: gpu-shared, num_parallel: 1, load_delay: 20ms, jitter: 0}
targets:
  - {name: sim-a, url: "sim://sim-a"}
  - {name: sim-b, url: "sim://sim-b"}
  - {name: sim-shared, url: "sim://sim-shared"}
agents:
%s
workloads:
  - name: separate
    agents: [{agent: own-a}, {agent: own-b}]
    calibration: {runs: 3}
  - name: shared
    agents: [{agent: share-a}, {agent: share-b}]
    calibration: {runs: 3}
`

func simAgent(name, target string) string {
	return fmt.Sprintf(`  - name: %s
    target: %s
    model: sim-tiny
    options: {num_predict: 20, num_ctx: 2048}
    workflow: [{name: ask, prompt: "summarise the incident"}]
`, name, target)
}

func TestEfficiencySimulator(t *testing.T) {
	agents := simAgent("own-a", "sim-a") + simAgent("own-b", "sim-b") +
		simAgent("share-a", "sim-shared") + simAgent("share-b", "sim-shared")
	r := startDaemon(t, fmt.Sprintf(simEfficiencyConfig, agents), false)
	prom := promtest.Start(t, 500*time.Millisecond, strings.TrimPrefix(r.base, "http://"))
	waitCalibrated(t, prom, 4, 60*time.Second)
	// Let a window of steady concurrent running fill, then evaluate it.
	const window = "8s"
	time.Sleep(9 * time.Second)
	sep := evaluate(t, prom, "separate", window)
	shared := evaluate(t, prom, "shared", window)
	t.Logf("separate GPUs: efficiency %.3f speedup %.3f balance %.3f", sep.efficiency, sep.speedup, sep.balance)
	t.Logf("one slot:      efficiency %.3f speedup %.3f balance %.3f", shared.efficiency, shared.speedup, shared.balance)
	if sep.efficiency < 0.95 {
		t.Errorf("two agents on two simulated instances with their own GPUs: efficiency %.3f, want >= 0.95", sep.efficiency)
	}
	if shared.efficiency > 0.6 {
		t.Errorf("two agents sharing one simulated slot: efficiency %.3f, want <= 0.6", shared.efficiency)
	}
	if shared.balance < 0.9 {
		t.Errorf("two agents sharing one simulated slot: balance %.3f, want >= 0.9 (it cannot see the slowdown)", shared.balance)
	}
	ratio := func(workload, kind string) float64 {
		for _, s := range prom.Query(t, dashboards.ContentionRatio(window)) {
			if s.Labels["workload"] == workload && s.Labels["kind"] == kind {
				return s.Value
			}
		}
		t.Fatalf("no contention ratio for %s/%s", workload, kind)
		return 0
	}
	// On one slot nearly every request starts while the other agent's is in
	// flight; with a server each, none does.
	if got := ratio("shared", "slot_saturation"); got < 0.8 || got > 1.05 {
		t.Errorf("slot_saturation ratio on one slot %.3f, want ~1", got)
	}
	if got := ratio("separate", "slot_saturation"); got != 0 {
		t.Errorf("slot_saturation ratio with a server each %.3f, want 0", got)
	}
	if sep.speedup < 1.9 || shared.speedup > 1.2 {
		t.Errorf("speedup: separate %.3f (want >= 1.9), shared %.3f (want <= 1.2)", sep.speedup, shared.speedup)
	}
}

func TestEfficiencyRealOllama(t *testing.T) {
	srv := ollamatest.Start(t, 1)
	cfg := realConfig(realTarget("ollama", srv.URL(), 1), `  - name: first
    target: ollama
    model: tiny
    options: {num_predict: 600, num_ctx: 2048, temperature: 0}
    workflow: [{name: ask, prompt: "tell me about the river"}]
  - name: second
    target: ollama
    model: tiny
    options: {num_predict: 600, num_ctx: 2048, temperature: 0}
    workflow: [{name: ask, prompt: "tell me about the mountain"}]
`, "  - {name: pair, calibration: {runs: 8}, agents: [{agent: first}, {agent: second}]}\n")
	r := startDaemon(t, cfg, false)
	prom := promtest.Start(t, 500*time.Millisecond, strings.TrimPrefix(r.base, "http://"))
	waitCalibrated(t, prom, 2, 90*time.Second)
	// Tokens/s of the tiny model on two shared cores vary run to run: a
	// longer solo loop and window keep the noise well inside the bounds.
	const window = "15s"
	time.Sleep(16 * time.Second)
	f := evaluate(t, prom, "pair", window)
	t.Logf("two agents, one server, OLLAMA_NUM_PARALLEL=1: efficiency %.3f speedup %.3f balance %.3f", f.efficiency, f.speedup, f.balance)
	if f.efficiency > 0.65 {
		t.Errorf("efficiency %.3f, want <= 0.65", f.efficiency)
	}
	if f.balance < 0.9 {
		t.Errorf("balance %.3f, want >= 0.9 (it cannot see the slowdown)", f.balance)
	}
}
