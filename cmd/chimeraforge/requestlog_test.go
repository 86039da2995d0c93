package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chimeraforge/chimeraforge/exporters"
	"github.com/chimeraforge/chimeraforge/exporters/requestlog"
)

// requestLogConfig runs a bounded workload (1s, short answers) on one
// simulated server and an endless one (long answers, so that some are in
// flight when the daemon stops) on another.
const requestLogConfig = `
global: {shutdown_timeout: 5s}
simulation:
  gpus:
    - {name: g-a, decode_rate: 400}
    - {name: g-b, decode_rate: 400}
  instances:
    - {name: sim-a, gpu: g-a, num_parallel: 2, jitter: 0, seed: 1}
    - {name: sim-b, gpu: g-b, num_parallel: 2, jitter: 0, seed: 2}
targets:
  - {name: sim-a, url: "sim://sim-a", num_parallel: 2}
  - {name: sim-b, url: "sim://sim-b", num_parallel: 2}
agents:
%s  - name: slow
    target: sim-b
    model: sim-tiny
    options: {num_predict: 4000}
    workflow: [{name: essay, prompt: "Write at length."}]
workloads:
  - name: bounded
    duration: 1s
    agents: [{agent: quick-a}, {agent: quick-b, replicas: 2}]
    calibration: {at_start: false}
  - name: endless
    agents: [{agent: slow, replicas: 2}]
    calibration: {at_start: false}
`

// logLine is one request log line, as the benchmark harness reads it.
type logLine struct {
	Time                 time.Time `json:"time"`
	Workload             string    `json:"workload"`
	Agent                string    `json:"agent"`
	Step                 string    `json:"step"`
	Target               string    `json:"target"`
	Model                string    `json:"model"`
	Outcome              string    `json:"outcome"`
	Reason               string    `json:"reason"`
	Status               int       `json:"status"`
	DurationSeconds      float64   `json:"duration_seconds"`
	TTFTSeconds          *float64  `json:"ttft_seconds"`
	LastTokenSeconds     *float64  `json:"last_token_seconds"`
	MaxTokenGapSeconds   float64   `json:"max_token_gap_seconds"`
	ContentChunks        int       `json:"content_chunks"`
	Done                 bool      `json:"done"`
	EvalCount            *int      `json:"eval_count"`
	TotalDurationSeconds *float64  `json:"total_duration_seconds"`
}

func readRequestLog(t *testing.T, path string) []logLine {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []logLine
	for raw := range bytes.Lines(b) {
		var l logLine
		if err := json.Unmarshal(raw, &l); err != nil {
			t.Fatalf("line %q: %v", raw, err)
		}
		lines = append(lines, l)
	}
	return lines
}

func TestRequestLogEndToEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "requests.jsonl")
	agents := agentYAML("quick-a", "sim-a", 512, "chat") + agentYAML("quick-b", "sim-a", 1024, "generate")
	r := startDaemonOpts(t, fmt.Sprintf(requestLogConfig, agents), true, "", "http://", func(o *runOptions) {
		o.requestLog = path
		o.requestLogMaxBytes = 1 << 30
	})

	// A reload (as SIGHUP) keeps writing the same log.
	time.Sleep(300 * time.Millisecond)
	if code, body := r.post(t, "/-/reload"); code != http.StatusOK {
		t.Fatalf("reload: %d %s", code, body)
	}
	m := waitFinished(t, r, 1, 20*time.Second)
	stats := r.app.daemon.Simulator("sim-a").Stats()
	// The buffer reaches the file within a second, before any shutdown.
	eventually(t, 5*time.Second, "request log lines on /metrics", func() bool {
		return r.scrape(t).sum(requestlog.MetricLinesTotal, nil) > 0
	})
	eventually(t, 10*time.Second, "a slow request in flight", func() bool {
		return r.scrape(t).sum(exporters.MetricRequestsInFlight, map[string]string{"workload": "endless"}) > 0
	})
	halt(t, r)

	// After the drain, what the registry counted is what the log holds,
	// outcome by outcome, the requests canceled at shutdown included.
	mfs, err := r.app.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	final := metrics{}
	for _, mf := range mfs {
		final[mf.GetName()] = mf
	}
	lines := readRequestLog(t, path)
	byOutcome := map[string]int{}
	for _, l := range lines {
		byOutcome[l.Outcome]++
	}
	t.Logf("%d lines by outcome %v; simulator sim-a completed %d", len(lines), byOutcome, stats.Completed)
	for _, o := range []string{"success", "error", "canceled"} {
		if got := final.sum(exporters.MetricRequestsTotal, map[string]string{"outcome": o}); got != float64(byOutcome[o]) {
			t.Errorf("outcome %s: chimeraforge_requests_total %v, %d lines", o, got, byOutcome[o])
		}
	}
	if byOutcome["canceled"] == 0 {
		t.Error("no canceled request logged: the lines of the requests canceled at shutdown are missing")
	}
	if got, want := final.sum(requestlog.MetricLinesTotal, nil), float64(len(lines)); got != want {
		t.Errorf("%s = %v, %v lines in the file", requestlog.MetricLinesTotal, got, want)
	}
	if got := final.sum(requestlog.MetricDroppedLinesTotal, nil); got != 0 {
		t.Errorf("%s = %v, want 0", requestlog.MetricDroppedLinesTotal, got)
	}

	// The bounded workload: its successes are what the simulator completed,
	// and what was scraped once it had finished.
	var quick []logLine
	var ttftSum float64
	for _, l := range lines {
		if l.Workload != "bounded" {
			continue
		}
		quick = append(quick, l)
		if l.Outcome != "success" {
			t.Errorf("bounded workload: %+v, want success", l)
			continue
		}
		if l.TTFTSeconds == nil || *l.TTFTSeconds <= 0 || *l.TTFTSeconds > l.DurationSeconds {
			t.Errorf("ttft_seconds %v, want within (0, duration_seconds %v]", l.TTFTSeconds, l.DurationSeconds)
		} else {
			ttftSum += *l.TTFTSeconds
		}
		if l.Target != "sim-a" || l.Model != "sim-tiny" || (l.Step != "analysis" && l.Step != "report") ||
			(l.Agent != "quick-a" && l.Agent != "quick-b") || l.Status != http.StatusOK || !l.Done ||
			l.EvalCount == nil || *l.EvalCount <= 0 || l.ContentChunks <= 0 || l.Reason != "" {
			t.Errorf("line %+v", l)
		}
		if l.Time.Location() != time.UTC || l.Time.IsZero() {
			t.Errorf("time %v, want UTC", l.Time)
		}
	}
	bounded := map[string]string{"workload": "bounded"}
	if got := m.sum(exporters.MetricRequestsTotal, map[string]string{"workload": "bounded", "outcome": "success"}); got != float64(len(quick)) || got == 0 {
		t.Errorf("bounded: chimeraforge_requests_total{outcome=success} %v when it finished, %d success lines (want equal, > 0)", got, len(quick))
	}
	if len(quick) != int(stats.Completed) {
		t.Errorf("bounded: %d success lines, the simulator completed %d", len(quick), stats.Completed)
	}
	// Exactly the TTFTs the histogram observed (float sums of the same values).
	if h := histSum(final, exporters.MetricTimeToFirstTokenSeconds, bounded); math.Abs(h-ttftSum) > 1e-9*float64(len(quick)) {
		t.Errorf("bounded: sum of ttft_seconds %v, TTFT histogram sum %v", ttftSum, h)
	}
}

func TestRequestLogFlags(t *testing.T) {
	dir := t.TempDir()
	for _, bad := range []string{filepath.Join(dir, "missing", "requests.jsonl"), dir} {
		code, _, errOut := runCLI("run", "--web.listen-address=127.0.0.1:0", "--request-log", bad)
		if code != 1 || !strings.Contains(errOut, "--request-log") || !strings.Contains(errOut, bad) {
			t.Errorf("--request-log %s: exit %d, stderr %q; want 1 naming the flag and the path", bad, code, errOut)
		}
	}
	if code, _, errOut := runCLI("run", "--request-log.max-bytes", "lots"); code != 2 || !strings.Contains(errOut, "lots") {
		t.Errorf("bad --request-log.max-bytes: exit %d, stderr %q; want 2", code, errOut)
	}
}
