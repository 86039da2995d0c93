package daemon

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestRampDelays(t *testing.T) {
	tests := []struct {
		name     string
		replicas [][]int
		ramp     time.Duration
		want     [][]time.Duration
	}{
		{"no ramp", [][]int{{0, 1}}, 0, [][]time.Duration{{0, 0}}},
		{"one agent", [][]int{{0, 1, 2, 3}}, 400 * time.Millisecond, [][]time.Duration{{0, 100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond}}},
		// Interleaved: a0 r0, a1 r0, a0 r1, a0 r2 over 4 slots of 1 s.
		{"two agents", [][]int{{0, 1, 2}, {0}}, 4 * time.Second, [][]time.Duration{{0, 2 * time.Second, 3 * time.Second}, {time.Second}}},
		// A shard's replica numbers do not matter, only how many it runs.
		{"shard", [][]int{{1, 3}}, time.Second, [][]time.Duration{{0, 500 * time.Millisecond}}},
		{"none here", [][]int{{}}, time.Second, [][]time.Duration{{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := rampDelays(tc.replicas, tc.ramp); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("rampDelays = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRampUp: with ramp_up, a closed-loop workload's replicas send their
// first requests spread over the ramp, not together.
func TestRampUp(t *testing.T) {
	var (
		mu    sync.Mutex
		times []time.Time
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/version":
			_, _ = io.WriteString(w, `{"version":"0.17.4"}`)
			return
		case "/api/chat":
		default:
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		_, _ = io.WriteString(w, `{"model":"m","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":"x"},"done":false}`+"\n"+
			`{"model":"m","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":""},"done":true,"eval_count":1}`+"\n")
	}))
	defer srv.Close()
	// Four replicas over 800 ms: one every 200 ms. The think time keeps
	// each to one request while the test runs.
	cfg := mustConfig(t, fmt.Sprintf(`
global: {shutdown_timeout: 2s}
targets: [{name: t, url: %q, num_parallel: 4}]
agents:
  - {name: a, target: t, model: m, think_time: 1h, workflow: [{name: s, prompt: hi}]}
workloads:
  - name: w
    agents: [{agent: a, replicas: 4}]
    ramp_up: 800ms
    calibration: {at_start: false, on_version_change: false}
`, srv.URL))
	start := time.Now()
	runFor(t, cfg, newRecordingSink(), 1200*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(times) != 4 {
		t.Fatalf("%d requests, want one per replica", len(times))
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	for k, at := range times {
		// Replica k starts k×200 ms after the workload, which starts a
		// little after Run: no earlier, and not much later.
		off := at.Sub(start)
		lo := time.Duration(k) * 200 * time.Millisecond
		if off < lo || off > lo+150*time.Millisecond {
			t.Errorf("request %d at %s, want within [%s, %s]", k, off, lo, lo+150*time.Millisecond)
		}
	}
}
