package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/chimeraforge/chimeraforge/internal/ollamatest"
)

// The real-Ollama suite: the daemon against `ollama serve` processes built
// from the pinned release, with a tiny generated model (see
// internal/ollamatest). Speeds vary several-fold from run to run on two
// cores, so these tests assert counts, reasons and orderings, never speed.

// realAgent renders one agent for a real server; the tiny model never stops
// before num_predict, so every answer is exactly numPredict tokens.
func realAgent(name, target, api, model string, numCtx, numPredict int) string {
	return fmt.Sprintf(`  - name: %s
    target: %s
    model: %s
    api: %s
    options: {num_ctx: %d, num_predict: %d, temperature: 0, seed: 1}
    workflow:
      - {name: analysis, system: "You are terse.", prompt: "the system and the model"}
      - {name: report, prompt: "report on {{.Previous}}"}
`, name, target, model, api, numCtx, numPredict)
}

func realTarget(name, url string, numParallel int) string {
	return fmt.Sprintf("  - {name: %s, url: %q, num_parallel: %d}\n", name, url, numParallel)
}

func realConfig(targets, agents, workloads string) string {
	return "global: {model_reload_threshold: 100ms, shutdown_timeout: 10s}\ntargets:\n" + targets +
		"agents:\n" + agents + "workloads:\n" + workloads
}

func TestRealOllamaCountsMatchServer(t *testing.T) {
	srv := ollamatest.Start(t, 2)
	proxy := ollamatest.NewProxy(t, srv.URL())
	const numPredict = 24
	cfg := realConfig(realTarget("ollama", proxy.URL(), 2),
		realAgent("chatter", "ollama", "chat", ollamatest.Model, 1024, numPredict)+
			realAgent("generator", "ollama", "generate", ollamatest.Model, 1024, numPredict),
		"  - {name: counts, duration: 4s, calibration: {at_start: false}, agents: [{agent: chatter}, {agent: generator}]}\n")
	r := startDaemon(t, cfg, false)
	m := waitFinished(t, r, 1, 60*time.Second)
	tot := proxy.Totals()
	t.Logf("server totals: %+v", tot)

	if n := m.sum("chimeraforge_requests_total", map[string]string{"outcome": "success"}); n != float64(tot.Responses) || n == 0 {
		t.Errorf("successful requests %v, server final chunks %d (want equal, > 0)", n, tot.Responses)
	}
	for _, api := range []string{"chatter", "generator"} {
		sel := map[string]string{"agent": api}
		ok := m.sum("chimeraforge_requests_total", map[string]string{"agent": api, "outcome": "success"})
		if got := m.sum("chimeraforge_generated_tokens_total", sel); got != ok*numPredict || ok == 0 {
			t.Errorf("%s: generated tokens %v for %v requests, want %d each", api, got, ok, numPredict)
		}
	}
	exact := []struct {
		metric string
		want   float64
	}{
		{"chimeraforge_generated_tokens_total", float64(tot.EvalCount)},
		{"chimeraforge_prompt_tokens_total", float64(tot.PromptEvalCount)},
	}
	for _, e := range exact {
		if got := m.sum(e.metric, nil); got != e.want {
			t.Errorf("%s = %v, server reported %v", e.metric, got, e.want)
		}
	}
	// Durations are added as float seconds per request: equal to the
	// server's nanosecond sums up to float rounding.
	durations := []struct {
		metric string
		want   time.Duration
	}{
		{"chimeraforge_eval_duration_seconds_total", tot.EvalDuration},
		{"chimeraforge_prompt_eval_duration_seconds_total", tot.PromptEvalDuration},
		{"chimeraforge_load_duration_seconds_total", tot.LoadDuration},
	}
	for _, d := range durations {
		if got := m.sum(d.metric, nil); math.Abs(got-d.want.Seconds()) > 1e-6 || got == 0 {
			t.Errorf("%s = %v, server reported %v", d.metric, got, d.want.Seconds())
		}
	}
	if n := m.sum("chimeraforge_request_errors_total", nil); n != 0 {
		t.Errorf("errors: %v, want 0", n)
	}
}

func TestRealOllamaContention(t *testing.T) {
	// Three servers: "shared" with one slot runs two agents that differ in
	// num_ctx (model reloads) and two that do not (slot saturation, queue
	// wait); "solo-a" and "solo-b" give the same pair a server each.
	shared := ollamatest.Start(t, 1)
	soloA, soloB := ollamatest.Start(t, 1), ollamatest.Start(t, 1)
	targets := realTarget("shared", shared.URL(), 1) + realTarget("solo-a", soloA.URL(), 1) + realTarget("solo-b", soloB.URL(), 1)
	agents := realAgent("reload-a", "shared", "chat", ollamatest.Model, 512, 32) +
		realAgent("reload-b", "shared", "chat", ollamatest.Model, 1024, 32)
	cfg := realConfig(targets, agents+
		realAgent("solo-a", "solo-a", "chat", ollamatest.Model, 512, 32)+
		realAgent("solo-b", "solo-b", "chat", ollamatest.Model, 1024, 32),
		"  - {name: shared, duration: 6s, calibration: {at_start: false}, agents: [{agent: reload-a}, {agent: reload-b}]}\n"+
			"  - {name: separate, duration: 6s, calibration: {at_start: false}, agents: [{agent: solo-a}, {agent: solo-b}]}\n")
	r := startDaemon(t, cfg, false)
	m := waitFinished(t, r, 2, 90*time.Second)
	contention := func(workload, kind string) float64 {
		return m.sum("chimeraforge_contention_events_total", map[string]string{"workload": workload, "kind": kind})
	}
	t.Logf("shared: reload %v saturation %v; separate: reload %v saturation %v",
		contention("shared", "model_reload"), contention("shared", "slot_saturation"),
		contention("separate", "model_reload"), contention("separate", "slot_saturation"))
	if contention("shared", "model_reload") == 0 {
		t.Error("no model_reload although agents with num_ctx 512 and 1024 share one server")
	}
	if n := contention("separate", "model_reload"); n != 0 {
		t.Errorf("model_reload %v with a server per agent, want 0", n)
	}
	if contention("shared", "slot_saturation") == 0 {
		t.Error("no slot_saturation although two agents share a server with OLLAMA_NUM_PARALLEL=1")
	}
	if n := contention("separate", "slot_saturation"); n != 0 {
		t.Errorf("slot_saturation %v with a server per agent, want 0", n)
	}
	if n := m.sum("chimeraforge_request_errors_total", nil); n != 0 {
		t.Errorf("errors: %v, want 0", n)
	}
}

func TestRealOllamaQueueWait(t *testing.T) {
	// Same num_ctx everywhere, so no reloads: on one slot the second agent
	// waits for the first; on a server each it does not.
	one := ollamatest.Start(t, 1)
	a, b := ollamatest.Start(t, 1), ollamatest.Start(t, 1)
	const long = 400
	cfg := realConfig(realTarget("one", one.URL(), 1)+realTarget("a", a.URL(), 1)+realTarget("b", b.URL(), 1),
		realAgent("q1", "one", "generate", ollamatest.Model, 1024, long)+
			realAgent("q2", "one", "generate", ollamatest.Model, 1024, long)+
			realAgent("d1", "a", "generate", ollamatest.Model, 1024, long)+
			realAgent("d2", "b", "generate", ollamatest.Model, 1024, long),
		"  - {name: single, duration: 6s, calibration: {at_start: false}, agents: [{agent: q1}, {agent: q2}]}\n"+
			"  - {name: dual, duration: 6s, calibration: {at_start: false}, agents: [{agent: d1}, {agent: d2}]}\n")
	r := startDaemon(t, cfg, false)
	m := waitFinished(t, r, 2, 120*time.Second)
	meanWait := func(workload string) (float64, float64) {
		sel := map[string]string{"workload": workload}
		n := m.sum("chimeraforge_queue_wait_seconds", sel)
		return histSum(m, "chimeraforge_queue_wait_seconds", sel) / n, n
	}
	single, ns := meanWait("single")
	dual, nd := meanWait("dual")
	t.Logf("mean queue wait: single slot %.3fs over %v requests, a server each %.3fs over %v", single, ns, dual, nd)
	if ns == 0 || nd == 0 {
		t.Fatal("no queue wait observations")
	}
	if m.sum("chimeraforge_contention_events_total", map[string]string{"workload": "single", "kind": "slot_saturation"}) == 0 {
		t.Error("no slot_saturation on the single-slot server")
	}
	// Waiting behind a 400-token answer takes far longer than the client
	// overhead a free server adds; the ratio, not a speed, is asserted.
	if !(single > 4*dual) || single <= 0 {
		t.Errorf("mean queue wait single slot %.4fs vs dual %.4fs: want single > 4 × dual", single, dual)
	}
}

func TestRealOllamaServerKilledMidStream(t *testing.T) {
	srv := ollamatest.Start(t, 1)
	cfg := realConfig(realTarget("victim", srv.URL(), 1), `  - name: streamer
    target: victim
    model: tiny
    options: {num_predict: 1000, temperature: 0}
    workflow: [{name: ramble, prompt: "tell me about the river"}]
`, "  - {name: crash, calibration: {at_start: false}, agents: [{agent: streamer}]}\n")
	r := startDaemon(t, cfg, false)
	eventually(t, 60*time.Second, "tokens streaming", func() bool {
		return r.scrape(t).sum("chimeraforge_inter_token_latency_seconds", nil) > 20
	})
	srv.Kill()
	eventually(t, 30*time.Second, "the broken stream to be counted", func() bool {
		return r.scrape(t).sum("chimeraforge_request_errors_total", map[string]string{"reason": "stream_broken"}) >= 1
	})
	m := r.scrape(t)
	if code, _ := r.get(t, "/healthz"); code != 200 {
		t.Errorf("/healthz %d after the server died", code)
	}
	before := m.sum("chimeraforge_requests_total", map[string]string{"outcome": "success"})
	errs := m.sum("chimeraforge_request_errors_total", nil)
	if other := errs - m.sum("chimeraforge_request_errors_total", map[string]string{"reason": "stream_broken"}) -
		m.sum("chimeraforge_request_errors_total", map[string]string{"reason": "connect"}); other != 0 {
		t.Errorf("errors other than stream_broken/connect while the server was down: %v", other)
	}
	srv.Restart()
	// Recovery: a whole run succeeds again (and says so once in the log).
	eventually(t, 90*time.Second, "recovery after the server came back", func() bool {
		return strings.Contains(r.log.String(), "agent runs succeeding again")
	})
	if after := r.scrape(t).sum("chimeraforge_requests_total", map[string]string{"outcome": "success"}); after <= before {
		t.Errorf("successful requests %v after recovery, %v before", after, before)
	}
}

func TestRealOllamaModelNotFound(t *testing.T) {
	srv := ollamatest.Start(t, 1)
	cfg := realConfig(realTarget("ollama", srv.URL(), 1),
		realAgent("ghost", "ollama", "chat", "no-such-model", 1024, 8),
		"  - {name: missing, duration: 3s, calibration: {at_start: false}, agents: [{agent: ghost}]}\n")
	r := startDaemon(t, cfg, false)
	m := waitFinished(t, r, 1, 30*time.Second)
	nf := m.sum("chimeraforge_request_errors_total", map[string]string{"reason": "model_not_found"})
	all := m.sum("chimeraforge_requests_total", nil)
	if nf == 0 || nf != all {
		t.Errorf("model_not_found %v of %v requests, want all, > 0", nf, all)
	}
	// Backoff 250 ms, 500 ms, 1 s, 2 s (each half to full): at most 5 tries
	// fit in 3 s. Without backoff it would be hundreds.
	if all > 5 {
		t.Errorf("%v requests in 3 s for a missing model: retry storm", all)
	}
}

func TestRealOllamaServerState(t *testing.T) {
	srv := ollamatest.Start(t, 1)
	cfg := fmt.Sprintf("targets:\n  - {name: keep, url: %q, poll_interval: 300ms}\n", srv.URL()) + `agents:
  - {name: keeper, target: keep, model: tiny, options: {num_ctx: 3072, num_predict: 8}, workflow: [{name: ask, prompt: "the river"}]}
workloads:
  - {name: w, duration: 2s, calibration: {at_start: false}, agents: [{agent: keeper}]}
`
	r := startDaemon(t, cfg, false)
	waitFinished(t, r, 1, 30*time.Second)
	client := api.NewClient(mustURL(t, srv.URL()), http.DefaultClient)
	ps, err := client.ListRunning(context.Background())
	if err != nil || len(ps.Models) != 1 {
		t.Fatalf("/api/ps: %v, %d models", err, len(ps.Models))
	}
	pm := ps.Models[0]
	t.Logf("/api/ps: %s size %d vram %d context %d", pm.Name, pm.Size, pm.SizeVRAM, pm.ContextLength)
	sel := map[string]string{"target": "keep", "model": pm.Name}
	want := map[string]float64{
		"chimeraforge_ollama_model_size_bytes":     float64(pm.Size),
		"chimeraforge_ollama_model_vram_bytes":     float64(pm.SizeVRAM),
		"chimeraforge_ollama_model_context_length": float64(pm.ContextLength),
		"chimeraforge_ollama_model_vram_ratio":     float64(pm.SizeVRAM) / float64(pm.Size),
	}
	var m metrics
	eventually(t, 3*time.Second, "the series of /api/ps", func() bool {
		m = r.scrape(t)
		return m.sum("chimeraforge_ollama_model_size_bytes", sel) != 0
	})
	for metric, v := range want {
		if got := m.sum(metric, sel); got != v || len(m.series(metric)) != 1 {
			t.Errorf("%s%v = %v (%d series), /api/ps says %v", metric, sel, got, len(m.series(metric)), v)
		}
	}
	if pm.ContextLength != 3072 {
		t.Errorf("/api/ps context_length %d, want the agent's num_ctx 3072", pm.ContextLength)
	}
	if got := m.sum("chimeraforge_ollama_info", map[string]string{"target": "keep", "version": "0.17.4"}); got != 1 {
		t.Errorf("chimeraforge_ollama_info{target=keep,version=0.17.4} = %v, want 1", got)
	}

	// keep_alive 0 unloads the model: its series go within one poll.
	zero := &api.Duration{Duration: 0}
	if err := client.Generate(context.Background(), &api.GenerateRequest{Model: pm.Name, KeepAlive: zero,
		Options: map[string]any{"num_ctx": 3072}}, func(api.GenerateResponse) error { return nil }); err != nil {
		t.Fatalf("unload: %v", err)
	}
	eventually(t, 3*time.Second, "/api/ps to be empty", func() bool {
		ps, err := client.ListRunning(context.Background())
		return err == nil && len(ps.Models) == 0
	})
	gone := time.Now()
	eventually(t, 2*time.Second, "the unloaded model's series to go", func() bool {
		m = r.scrape(t)
		return len(m.series("chimeraforge_ollama_model_size_bytes")) == 0
	})
	t.Logf("series gone %v after /api/ps emptied (poll interval 300ms)", time.Since(gone).Round(time.Millisecond))
	if n := m.sum("chimeraforge_ollama_model_unloads_total", map[string]string{"target": "keep"}); n != 1 {
		t.Errorf("unloads = %v, want 1", n)
	}
	if n := m.sum("chimeraforge_ollama_loaded_models", map[string]string{"target": "keep"}); n != 0 {
		t.Errorf("loaded models = %v, want 0", n)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
