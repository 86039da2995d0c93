package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
)

const ollamaStateConfig = `
simulation:
  instances:
    - {name: keep, load_delay: 10ms, version: "0.17.4-sim"}
    - {name: drop, load_delay: 10ms, version: "0.17.4-sim"}
targets:
  - {name: keep, url: "sim://keep", poll_interval: 200ms}
  - {name: drop, url: "sim://drop", poll_interval: 200ms}
agents:
  - name: keeper
    target: keep
    model: sim-tiny
    options: {num_ctx: 3072, num_predict: 4}
    workflow: [{name: ask, prompt: "status?"}]
  - name: dropper
    target: drop
    model: sim-tiny
    keep_alive: 0s
    options: {num_predict: 4}
    workflow: [{name: ask, prompt: "status?"}]
workloads:
  - {name: w, duration: 1s, calibration: {at_start: false}, agents: [{agent: keeper}, {agent: dropper}]}
`

// psOf asks a simulator's own /api/ps, the reference for the series.
func psOf(t *testing.T, r *running, name string) api.ProcessResponse {
	t.Helper()
	rec := httptest.NewRecorder()
	r.app.daemon.Simulator(name).Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/ps", nil))
	var ps api.ProcessResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &ps); err != nil {
		t.Fatalf("/api/ps of %s: %v", name, err)
	}
	return ps
}

func TestOllamaStateAgainstSimulator(t *testing.T) {
	r := startDaemon(t, ollamaStateConfig, false)
	waitFinished(t, r, 1, 20*time.Second)

	// keep_alive 0: the model is gone from /api/ps, and from the series
	// within one poll (200ms; allow a few for a loaded machine).
	eventually(t, 2*time.Second, "the unloaded model's series to go", func() bool {
		m := r.scrape(t)
		return len(m.series("chimeraforge_ollama_model_size_bytes")) == 1 &&
			m.sum("chimeraforge_ollama_loaded_models", map[string]string{"target": "drop"}) == 0
	})
	if ps := psOf(t, r, "drop"); len(ps.Models) != 0 {
		t.Fatalf("/api/ps of drop lists %d models after keep_alive 0", len(ps.Models))
	}
	m := r.scrape(t)
	if n := m.sum("chimeraforge_ollama_model_unloads_total", map[string]string{"target": "drop"}); n < 1 {
		t.Errorf("unloads on drop = %v, want >= 1", n)
	}

	// The kept model: every series equals /api/ps.
	ps := psOf(t, r, "keep")
	if len(ps.Models) != 1 {
		t.Fatalf("/api/ps of keep lists %d models, want 1", len(ps.Models))
	}
	pm := ps.Models[0]
	sel := map[string]string{"target": "keep", "model": pm.Name}
	for metric, want := range map[string]float64{
		"chimeraforge_ollama_model_size_bytes":               float64(pm.Size),
		"chimeraforge_ollama_model_vram_bytes":               float64(pm.SizeVRAM),
		"chimeraforge_ollama_model_context_length":           3072,
		"chimeraforge_ollama_model_expiry_timestamp_seconds": float64(pm.ExpiresAt.UnixMilli()) / 1e3,
	} {
		if got := m.sum(metric, sel); got != want {
			t.Errorf("%s%v = %v, /api/ps says %v", metric, sel, got, want)
		}
	}
	if pm.ContextLength != 3072 {
		t.Errorf("/api/ps context_length %d, want the agent's num_ctx 3072", pm.ContextLength)
	}
	for metric, want := range map[string]float64{
		"chimeraforge_ollama_up":            1,
		"chimeraforge_ollama_loaded_models": 1,
	} {
		if got := m.sum(metric, map[string]string{"target": "keep"}); got != want {
			t.Errorf("%s{target=keep} = %v, want %v", metric, got, want)
		}
	}
	if got := m.sum("chimeraforge_ollama_info", map[string]string{"target": "keep", "version": "0.17.4-sim"}); got != 1 {
		t.Errorf("chimeraforge_ollama_info{version=0.17.4-sim} = %v, want 1", got)
	}
}
