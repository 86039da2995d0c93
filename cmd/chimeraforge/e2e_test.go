package main

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chimeraforge/chimeraforge/internal/soak"
)

// contentionConfig runs the same pair of agents (different num_ctx) twice:
// workload "shared" puts both on one simulated server with one slot, and
// workload "separate" gives each its own server.
const contentionConfig = `
global:
  model_reload_threshold: 20ms
simulation:
  gpus:
    - {name: g-shared, decode_rate: 400}
    - {name: g-a, decode_rate: 400}
    - {name: g-b, decode_rate: 400}
  instances:
    - {name: shared, gpu: g-shared, num_parallel: 1, load_delay: 40ms, jitter: 0, seed: 1}
    - {name: solo-a, gpu: g-a, num_parallel: 1, load_delay: 40ms, jitter: 0, seed: 2}
    - {name: solo-b, gpu: g-b, num_parallel: 1, load_delay: 40ms, jitter: 0, seed: 3}
targets:
  - {name: shared, url: "sim://shared", num_parallel: 1}
  - {name: solo-a, url: "sim://solo-a", num_parallel: 1}
  - {name: solo-b, url: "sim://solo-b", num_parallel: 1}
agents:
%s
workloads:
  - name: shared
    duration: 2s
    agents: [{agent: shared-a}, {agent: shared-b}]
    calibration: {at_start: false}
  - name: separate
    duration: 2s
    agents: [{agent: solo-a}, {agent: solo-b}]
    calibration: {at_start: false}
`

func agentYAML(name, target string, numCtx int, api string) string {
	return fmt.Sprintf(`  - name: %s
    target: %s
    model: sim-tiny
    api: %s
    options: {num_ctx: %d, num_predict: 12, temperature: 0}
    variables: {topic: "GPU contention"}
    workflow:
      - name: analysis
        system: You are a careful analyst.
        prompt: "Analyse {{.Vars.topic}} in three points."
      - name: report
        prompt: "Write a short report from this analysis: {{.Previous}}"
`, name, target, api, numCtx)
}

// waitFinished waits until n bounded workloads have finished (the daemon
// logs it once every run of a workload has ended) and scrapes once.
func waitFinished(t *testing.T, r *running, n int, limit time.Duration) metrics {
	t.Helper()
	eventually(t, limit, fmt.Sprintf("%d workloads to finish", n), func() bool {
		return strings.Count(r.log.String(), `"msg":"workload finished"`) >= n
	})
	return r.scrape(t)
}

func TestEndToEndAgainstSimulator(t *testing.T) {
	agents := agentYAML("shared-a", "shared", 512, "chat") + agentYAML("shared-b", "shared", 1024, "generate") +
		agentYAML("solo-a", "solo-a", 512, "chat") + agentYAML("solo-b", "solo-b", 1024, "generate")
	r := startDaemon(t, fmt.Sprintf(contentionConfig, agents), false)

	eventually(t, 10*time.Second, "/readyz 200", func() bool {
		code, _ := r.get(t, "/readyz")
		return code == http.StatusOK
	})
	m := waitFinished(t, r, 2, 20*time.Second)

	if n := m.sum("chimeraforge_requests_total", map[string]string{"outcome": "error"}) +
		m.sum("chimeraforge_requests_total", map[string]string{"outcome": "canceled"}); n != 0 {
		t.Errorf("requests that did not succeed: %v, want 0", n)
	}

	// What the daemon counted equals what each simulator says it sent.
	for _, target := range []string{"shared", "solo-a", "solo-b"} {
		stats := r.app.daemon.Simulator(target).Stats()
		sel := map[string]string{"target": target}
		t.Logf("target %s: simulator sent %d tokens in %d completed requests (%d loads); daemon counted %v tokens",
			target, stats.EvalTokens, stats.Completed, stats.Loads, m.sum("chimeraforge_generated_tokens_total", sel))
		if got := m.sum("chimeraforge_generated_tokens_total", sel); got != float64(stats.EvalTokens) || got == 0 {
			t.Errorf("target %s: chimeraforge_generated_tokens_total = %v, simulator sent %d (want equal, > 0)", target, got, stats.EvalTokens)
		}
		if got := m.sum("chimeraforge_prompt_tokens_total", sel); got != float64(stats.PromptTokens) {
			t.Errorf("target %s: chimeraforge_prompt_tokens_total = %v, simulator evaluated %d", target, got, stats.PromptTokens)
		}
		if got := m.sum("chimeraforge_requests_total", sel); got != float64(stats.Completed) {
			t.Errorf("target %s: chimeraforge_requests_total = %v, simulator completed %d", target, got, stats.Completed)
		}
	}

	// Every successful request has exactly one TTFT observation.
	for _, ls := range m.series("chimeraforge_time_to_first_token_seconds") {
		success := map[string]string{"outcome": "success"}
		for k, v := range ls {
			success[k] = v
		}
		ttft := m.sum("chimeraforge_time_to_first_token_seconds", ls)
		ok := m.sum("chimeraforge_requests_total", success)
		if ttft != ok || ok == 0 {
			t.Errorf("%v: TTFT count %v, successful requests %v (want equal, > 0)", ls, ttft, ok)
		}
	}

	// Each step of the workflow has its own series. Every run of a bounded
	// workload ends, and none failed: each agent sent one analysis and one
	// report request per run, and its steps add up to its requests.
	for _, agent := range []string{"shared-a", "shared-b", "solo-a", "solo-b"} {
		runs := m.sum("chimeraforge_agent_runs_total", map[string]string{"agent": agent, "outcome": "success"})
		total := m.sum("chimeraforge_requests_total", map[string]string{"agent": agent})
		var steps float64
		for _, step := range []string{"analysis", "report"} {
			sel := map[string]string{"agent": agent, "step": step}
			n := m.sum("chimeraforge_requests_total", sel)
			if n != runs || n == 0 {
				t.Errorf("agent %s step %s: %v requests, %v successful runs (want equal, > 0)", agent, step, n, runs)
			}
			if ttft := m.sum("chimeraforge_time_to_first_token_seconds", sel); ttft != n {
				t.Errorf("agent %s step %s: TTFT count %v, requests %v", agent, step, ttft, n)
			}
			steps += n
		}
		if steps != total {
			t.Errorf("agent %s: steps add up to %v requests, total %v", agent, steps, total)
		}
	}

	contention := func(workload, kind string) float64 {
		return m.sum("chimeraforge_contention_events_total", map[string]string{"workload": workload, "kind": kind})
	}
	t.Logf("contention: shared slot_saturation %v model_reload %v; separate slot_saturation %v model_reload %v",
		contention("shared", "slot_saturation"), contention("shared", "model_reload"),
		contention("separate", "slot_saturation"), contention("separate", "model_reload"))
	if n := contention("shared", "slot_saturation"); n == 0 {
		t.Error("workload shared: no slot_saturation although two agents share a target with num_parallel 1")
	}
	if n := contention("separate", "slot_saturation"); n != 0 {
		t.Errorf("workload separate: slot_saturation = %v, want 0 (each agent has its own target)", n)
	}
	if n := contention("shared", "model_reload"); n == 0 {
		t.Error("workload shared: no model_reload although agents with num_ctx 512 and 1024 share a target")
	}
	if n := contention("separate", "model_reload"); n != 0 {
		t.Errorf("workload separate: model_reload = %v, want 0", n)
	}
	// The reloads the daemon counted are reloads the simulator performed.
	if loads := r.app.daemon.Simulator("shared").Stats().Loads; contention("shared", "model_reload") > float64(loads) {
		t.Errorf("model_reload %v exceeds the simulator's %d loads", contention("shared", "model_reload"), loads)
	}
	// Queue wait shows where the slot is shared.
	if qs, qa := m.sum("chimeraforge_queue_wait_seconds", map[string]string{"workload": "shared"}), m.sum("chimeraforge_queue_wait_seconds", map[string]string{"workload": "separate"}); qs == 0 || qa == 0 {
		t.Errorf("queue wait observations: shared %v, separate %v, want > 0", qs, qa)
	}
	if runs := m.sum("chimeraforge_agent_runs_total", map[string]string{"outcome": "success"}); runs == 0 {
		t.Error("no successful workflow runs")
	}
}

func TestDemoMetricsFlow(t *testing.T) {
	r := startDaemon(t, "", false)
	if !strings.Contains(r.stdout.String(), "/metrics") {
		t.Errorf("stdout does not print the metrics URL: %q", r.stdout.String())
	}
	eventually(t, 15*time.Second, "tokens from both demo agents", func() bool {
		m := r.scrape(t)
		return m.sum("chimeraforge_generated_tokens_total", map[string]string{"agent": "analyst"}) > 0 &&
			m.sum("chimeraforge_generated_tokens_total", map[string]string{"agent": "reporter"}) > 0
	})
	code, _ := r.get(t, "/readyz")
	if code != http.StatusOK {
		t.Errorf("/readyz = %d, want 200", code)
	}
	// The demo workflow's two steps are counted apart, for both agents.
	demoAgents, demoSteps := []string{"analyst", "reporter"}, []string{"analysis", "report"}
	eventually(t, 20*time.Second, "requests of both steps of both demo agents", func() bool {
		m := r.scrape(t)
		for _, agent := range demoAgents {
			for _, step := range demoSteps {
				if m.sum("chimeraforge_requests_total", map[string]string{"agent": agent, "step": step, "outcome": "success"}) == 0 {
					return false
				}
			}
		}
		return true
	})
	m := r.scrape(t)
	for _, agent := range demoAgents {
		byStep := map[string]float64{}
		for _, step := range demoSteps {
			byStep[step] = m.sum("chimeraforge_requests_total", map[string]string{"agent": agent, "step": step})
		}
		if total := m.sum("chimeraforge_requests_total", map[string]string{"agent": agent}); byStep["analysis"]+byStep["report"] != total {
			t.Errorf("agent %s: requests by step %v do not add up to its %v requests", agent, byStep, total)
		}
		// One replica runs analysis then report: the report trails by at
		// most the run in progress.
		if d := byStep["analysis"] - byStep["report"]; d < 0 || d > 1 {
			t.Errorf("agent %s: requests by step %v, want report = analysis or analysis - 1", agent, byStep)
		}
		for _, ls := range m.series("chimeraforge_requests_total") {
			if ls["agent"] == agent && !slices.Contains(demoSteps, ls["step"]) {
				t.Errorf("agent %s: series with step %q, want one of %v", agent, ls["step"], demoSteps)
			}
		}
	}
	// No NVIDIA GPU here: the demo's GPU panels read the simulated GPU,
	// which says so in its name, and whose memory is the loaded models'.
	m = r.scrape(t)
	sim := map[string]string{"name": "simulated", "uuid": "GPU-simulated-0"}
	if up := m.sum("chimeraforge_gpu_collector_up", nil); up != 1 || m.sum("chimeraforge_gpu_memory_total_bytes", sim) == 0 {
		t.Errorf("simulated GPU: up %v, total memory %v", up, m.sum("chimeraforge_gpu_memory_total_bytes", sim))
	}
	var vram float64
	for _, target := range []string{"ollama-a", "ollama-b"} {
		v := m.sum("chimeraforge_gpu_process_memory_bytes", map[string]string{"target": target})
		if v == 0 {
			t.Errorf("no GPU process memory attributed to target %s", target)
		}
		vram += v
	}
	if used := m.sum("chimeraforge_gpu_memory_used_bytes", sim); used != vram {
		t.Errorf("simulated GPU memory used %v, its processes hold %v", used, vram)
	}
	// The live exposition, every family populated, passes Prometheus' lint.
	_, body := r.get(t, "/metrics")
	promtoolCheck(t, body)
	code, _ = r.post(t, "/-/reload")
	if code != http.StatusForbidden {
		t.Errorf("/-/reload without --web.enable-lifecycle = %d, want 403", code)
	}
}

const reloadConfig = `
simulation:
  instances:
    - {name: sim, num_parallel: 2, load_delay: 10ms}
targets:
  - {name: sim, url: "sim://sim", num_parallel: 2}
agents:
  - name: steady
    target: sim
    model: sim-tiny
    options: {num_predict: 8}
    think_time: 50ms
    workflow:
      - {name: ask, prompt: "Say something about {{.Vars.topic}}"}
    variables: {topic: reloads}
%s
workloads:
  - name: soak
    agents: [{agent: steady}%s]
    calibration: {at_start: false}
`

func TestReload(t *testing.T) {
	r := startDaemon(t, fmt.Sprintf(reloadConfig, "", ""), true)
	tokens := func() float64 {
		return r.scrape(t).sum("chimeraforge_generated_tokens_total", map[string]string{"agent": "steady"})
	}
	eventually(t, 10*time.Second, "first tokens", func() bool { return tokens() > 0 })

	// A broken configuration is refused and the old one keeps running.
	if err := os.WriteFile(r.app.opts.configFile, []byte("targets: [{name: sim, urll: x}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, body := r.post(t, "/-/reload")
	if code != http.StatusInternalServerError || !strings.Contains(body, "targets[0].urll") {
		t.Errorf("broken reload: %d %q, want 500 naming targets[0].urll", code, body)
	}
	m := r.scrape(t)
	if v := m.sum("chimeraforge_config_last_reload_successful", nil); v != 0 {
		t.Errorf("chimeraforge_config_last_reload_successful = %v after a failed reload, want 0", v)
	}
	before := tokens()
	eventually(t, 10*time.Second, "tokens still flowing after the failed reload", func() bool { return tokens() > before })

	// A good configuration that adds an agent: the unchanged agent keeps
	// its counters, the new one starts.
	extra := `  - name: newcomer
    target: sim
    model: sim-tiny
    options: {num_predict: 4}
    workflow:
      - {name: ask, prompt: "Hello"}`
	if err := os.WriteFile(r.app.opts.configFile, []byte(fmt.Sprintf(reloadConfig, extra, ", {agent: newcomer}")), 0o600); err != nil {
		t.Fatal(err)
	}
	kept := tokens()
	code, body = r.post(t, "/-/reload")
	if code != http.StatusOK {
		t.Fatalf("good reload: %d %q", code, body)
	}
	if v := r.scrape(t).sum("chimeraforge_config_last_reload_successful", nil); v != 1 {
		t.Errorf("chimeraforge_config_last_reload_successful = %v after a good reload, want 1", v)
	}
	if after := tokens(); after < kept {
		t.Errorf("steady's tokens went from %v to %v across a reload: counters were reset", kept, after)
	}
	if code, body := r.post(t, "/-/calibrate?workload=nope"); code != http.StatusNotFound {
		t.Errorf("/-/calibrate of an unknown workload: %d %q, want 404", code, body)
	}
	if code, body := r.post(t, "/-/calibrate?workload=soak"); code != http.StatusAccepted {
		t.Errorf("/-/calibrate: %d %q, want 202", code, body)
	}
	eventually(t, 10*time.Second, "the calibration asked for", func() bool {
		return r.scrape(t).sum("chimeraforge_calibrations_total", map[string]string{"workload": "soak", "outcome": "success"}) >= 2
	})
	eventually(t, 10*time.Second, "tokens from the added agent", func() bool {
		return r.scrape(t).sum("chimeraforge_generated_tokens_total", map[string]string{"agent": "newcomer"}) > 0
	})

	// Removing it again drops every one of its series, for good.
	if err := os.WriteFile(r.app.opts.configFile, []byte(fmt.Sprintf(reloadConfig, "", "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, body := r.post(t, "/-/reload"); code != http.StatusOK {
		t.Fatalf("reload removing an agent: %d %q", code, body)
	}
	time.Sleep(300 * time.Millisecond)
	m = r.scrape(t)
	for name, mf := range m {
		for _, s := range mf.GetMetric() {
			if soak.HasLabels(s, map[string]string{"agent": "newcomer"}) {
				t.Errorf("%s still has a series of the removed agent: %v", name, s.GetLabel())
			}
		}
	}
	if v := m.sum("chimeraforge_agent_active", map[string]string{"agent": "steady"}); v != 1 {
		t.Errorf("agent_active of steady after three reloads = %v, want 1", v)
	}
}
