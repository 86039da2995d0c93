package daemon

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/chimeraforge/chimeraforge/internal/hostile"
	"github.com/chimeraforge/chimeraforge/observe"
)

// TestGateSchedule walks a target's gate through a failing streak on a
// made-up clock: one window per round of concurrent faults, one probe per
// window, windows doubling within their jitter up to the maximum, and an
// answer or a success opening it again.
func TestGateSchedule(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, 800 * time.Millisecond
	g := newGate("t", lo, hi)
	now := time.Unix(1000, 0)

	// Open: everyone in, in the same epoch.
	var round []ticket
	for range 5 {
		tk, ok, _, _ := g.enter(now)
		if !ok || tk.probe {
			t.Fatalf("open gate: ok %v probe %v", ok, tk.probe)
		}
		round = append(round, tk)
	}
	// The round fails: the first fault opens window 1, the others do not.
	opened, n, d := g.fault(round[0], now)
	if !opened || n != 1 || d < lo/2 || d > lo {
		t.Fatalf("first fault: opened %v window %d length %s, want window 1 in [%s, %s]", opened, n, d, lo/2, lo)
	}
	for _, tk := range round[1:] {
		if opened, _, _ := g.fault(tk, now); opened {
			t.Fatal("a fault of the same round opened another window")
		}
	}
	until := now.Add(d)
	if _, ok, u, wake := g.enter(now.Add(d / 2)); ok || !u.Equal(until) || wake == nil {
		t.Fatalf("inside the window: ok %v until %v, want to wait until %v", ok, u, until)
	}
	for i := 2; i <= 6; i++ {
		probe, ok, _, _ := g.enter(until)
		if !ok || !probe.probe {
			t.Fatalf("window %d over: ok %v probe %v, want a probe", i-1, ok, probe.probe)
		}
		if _, ok, u, wake := g.enter(until); ok || !u.IsZero() || wake == nil {
			t.Fatalf("probe in flight: a second request was admitted (ok %v, until %v)", ok, u)
		}
		opened, n, d = g.fault(probe, until)
		b := backoff(lo, hi, i)
		if !opened || n != i || d < b/2 || d > b {
			t.Fatalf("probe fault: opened %v window %d length %s, want window %d in [%s, %s]", opened, n, d, i, b/2, b)
		}
		until = until.Add(d)
	}
	if b := backoff(lo, hi, 6); b != hi {
		t.Errorf("backoff(6) = %s, want the maximum %s", b, hi)
	}

	// A probe that ends for a reason of its own frees its place.
	probe, _, _, _ := g.enter(until)
	g.release(probe)
	if next, ok, _, _ := g.enter(until); !ok || !next.probe {
		t.Fatal("after a released probe, the next request is not the probe")
	}
	// An answer opens the gate at once; a later fault starts from where
	// the streak was, a success starts it over.
	g.answered()
	tk, ok, _, _ := g.enter(until)
	if !ok || tk.probe {
		t.Fatal("an answer did not open the gate")
	}
	if _, n, _ = g.fault(tk, until); n != 7 {
		t.Errorf("fault after an answer: window %d, want 7 (the streak goes on until a success)", n)
	}
	if streak := g.succeeded(); streak != 7 {
		t.Errorf("succeeded reported streak %d, want 7", streak)
	}
	tk, _, _, _ = g.enter(until)
	if _, n, d = g.fault(tk, until); n != 1 || d > lo {
		t.Errorf("after a success: window %d of %s, want window 1 again", n, d)
	}
}

// closedURL is a loopback address nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// probesWithin is the most probes a dead target gets in d after its first
// fault: window n lasts at least backoff(n)/2. (With twice the bounds, it is
// the fewest: window n lasts at most backoff(n).)
func probesWithin(lo, hi, d time.Duration) int {
	n, elapsed := 0, time.Duration(0)
	for {
		elapsed += backoff(lo, hi, n+1) / 2
		if elapsed > d {
			return n
		}
		n++
	}
}

// TestNoRetryStorm runs 10 replicas against a port that refuses every
// connection for 3 s. They share the target's backoff: one round of
// attempts, then one probe per window, the windows growing, so the attempts
// are bounded by the schedule, their rate decays, and no two probes fall
// together. Without the shared backoff, each replica would try on its own:
// 10 × (1 + its retries) per window.
func TestNoRetryStorm(t *testing.T) {
	const replicas, run = 10, 3 * time.Second
	const lo, hi = 250 * time.Millisecond, 30 * time.Second
	cfg := mustConfig(t, fmt.Sprintf(`
global: {shutdown_timeout: 2s}
targets:
  - {name: down, url: %q, timeouts: {connect: 200ms}, retry: {max_attempts: 3, backoff_min: %s, backoff_max: %s}}
agents:
  - {name: a, target: down, model: m, workflow: [{name: ask, prompt: hi}]}
workloads:
  - {name: w, agents: [{agent: a, replicas: %d}], calibration: {at_start: false}}
`, closedURL(t), lo, hi, replicas))
	sink := newRecordingSink()
	runFor(t, cfg, sink, run)
	reqs, runs, _, _ := sink.snapshot()
	sink.mu.Lock()
	at := slices.Clone(sink.startedAt)
	var retries int
	for _, byReason := range sink.retried {
		for reason, n := range byReason {
			retries += n
			if reason != observe.ReasonConnect {
				t.Errorf("retried for %q, want only connect", reason)
			}
		}
	}
	sink.mu.Unlock()

	bound := replicas + probesWithin(lo, hi, run)
	// At least: the first attempt, then a probe after each window that
	// fits even at its longest (less one for timer slack).
	least := 1 + probesWithin(2*lo, 2*hi, run) - 1
	t.Logf("%d attempts (bounds %d..%d), %d retries, %d runs", len(at), least, bound, retries, len(runs))
	if len(at) > bound {
		t.Errorf("%d connection attempts in %s, want at most %d (one round, then one probe per window)", len(at), run, bound)
	}
	if len(at) < least {
		t.Errorf("only %d attempts, want at least %d: the daemon stopped probing", len(at), least)
	}
	for _, r := range reqs {
		if r.Reason != observe.ReasonConnect && r.Reason != observe.ReasonCanceled {
			t.Errorf("reason %q, want connect", r.Reason)
		}
	}
	// Every attempt is a request; each re-send is a retry: one request per
	// run (one step each) plus the retries.
	if len(reqs) != len(runs)+retries {
		t.Errorf("%d requests, %d runs, %d retries: want requests = runs + retries", len(reqs), len(runs), retries)
	}
	// Whether a probe carries a retry or another replica's first attempt
	// depends on which waiter the gate admits first (on a slow machine the
	// first fault closes the target before most replicas have sent
	// anything), so the number of retries is not asserted here; the exact
	// retry counts are TestRetriesOnlyBeforeTheStream's.

	// After the first round, the attempts are the probes: at least half a
	// window apart, windows doubling. Jitter keeps them apart; timers
	// firing late only make the gaps longer.
	start := at[0]
	i := 1
	for i < len(at) && at[i].Sub(at[i-1]) < lo/4 {
		i++ // the first round
	}
	for k, j := 1, i; j < len(at); k, j = k+1, j+1 {
		gap := at[j].Sub(at[j-1])
		if min := backoff(lo, hi, k)/2 - 5*time.Millisecond; gap < min {
			t.Errorf("probe %d came %s after the previous attempt, want at least %s (half of window %d)", k, gap, min, k)
		}
	}
	var early, late int
	for _, a := range at {
		if a.Sub(start) < run/2 {
			early++
		} else {
			late++
		}
	}
	if late >= early {
		t.Errorf("%d attempts in the first half, %d in the second: the rate must decay", early, late)
	}
}

// TestBackoffIsPerTarget gives an agent two targets, one refusing
// connections: the dead one backs off while the healthy one takes the
// requests (retries move there), and another agent on the healthy target
// runs undisturbed.
func TestBackoffIsPerTarget(t *testing.T) {
	const replicas, run = 4, 2 * time.Second
	const lo, hi = 250 * time.Millisecond, 30 * time.Second
	cfg := mustConfig(t, fmt.Sprintf(simBase, 2000, 8, 0, "1s", 8, "10s", "10s")+fmt.Sprintf(`
  - {name: down, url: %q, timeouts: {connect: 200ms}, retry: {backoff_min: %s, backoff_max: %s}}
agents:
  - {name: both, targets: [down, s], model: sim-tiny, options: {num_predict: 4}, workflow: [{name: ask, prompt: hi}]}
  - {name: live, target: s, model: sim-tiny, options: {num_predict: 4}, workflow: [{name: ask, prompt: hi}]}
workloads:
  - {name: w, agents: [{agent: both, replicas: %d}, {agent: live}], calibration: {at_start: false}}
`, closedURL(t), lo, hi, replicas))
	sink := newRecordingSink()
	runFor(t, cfg, sink, run)
	reqs, runs, _, _ := sink.snapshot()

	byTarget := map[string]map[observe.Reason]int{"down": {}, "s": {}}
	for _, r := range reqs {
		byTarget[r.Target][r.Reason]++
	}
	down := 0
	for _, n := range byTarget["down"] {
		down += n
	}
	t.Logf("requests by target and reason: %v", byTarget)
	if bound := replicas + probesWithin(lo, hi, run); down > bound {
		t.Errorf("%d requests to the dead target in %s, want at most %d", down, run, bound)
	}
	if byTarget["down"][observe.ReasonConnect] == 0 {
		t.Error("the dead target was never tried")
	}
	if ok := byTarget["s"][observe.ReasonNone]; ok < 20 {
		t.Errorf("%d successes on the healthy target, want it to keep working (>= 20)", ok)
	}
	for reason, n := range byTarget["s"] {
		if reason != observe.ReasonNone && reason != observe.ReasonCanceled {
			t.Errorf("%d requests to the healthy target failed with %q", n, reason)
		}
	}
	for _, r := range runs {
		if r.Outcome == observe.OutcomeError {
			t.Errorf("run of %s failed: a dead target's attempts must be retried on the healthy one", r.Agent)
		}
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	for l, byReason := range sink.retried {
		if l.Target != "down" || l.Agent != "both" {
			t.Errorf("retries recorded under %+v: want only the dead target's", l)
		}
		if byReason[observe.ReasonConnect] == 0 {
			t.Errorf("retries %v, want connect", byReason)
		}
	}
}

// rig is one agent of a configuration with its targets, run without a
// daemon, one run at a time.
type rig struct {
	ar   *agentRunner
	sink *recordingSink
	logs *observer.ObservedLogs
}

func newRig(t *testing.T, yaml string) *rig {
	t.Helper()
	cfg := mustConfig(t, yaml)
	a, ok := cfg.Agent("a")
	if !ok {
		t.Fatal("no agent a")
	}
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	var ts []*target
	for _, name := range a.TargetNames() {
		tc, _ := cfg.Target(name)
		u, err := url.Parse(tc.URL)
		if err != nil {
			t.Fatal(err)
		}
		tg := newTarget(*tc, u)
		tg.log = log.With(zap.String("target", name))
		t.Cleanup(tg.close)
		ts = append(ts, tg)
	}
	sink := newRecordingSink()
	return &rig{ar: newAgentRunner("w", a, ts, sink, log, thresholds{modelReload: time.Second, queueWait: time.Second}), sink: sink, logs: logs}
}

func (r *rig) run(t *testing.T) runResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return r.ar.runOnce(ctx, ctx, 0, 1)
}

func (r *rig) retries() map[observe.Reason]int {
	r.sink.mu.Lock()
	defer r.sink.mu.Unlock()
	out := map[observe.Reason]int{}
	for _, byReason := range r.sink.retried {
		for reason, n := range byReason {
			out[reason] += n
		}
	}
	return out
}

// TestRetriesOnlyBeforeTheStream sends one workflow step against scripted
// failures: what failed before the server generated anything is sent again
// (up to retry.max_attempts) and counted as a retry; what failed once the
// stream started, or cannot succeed on a second try, is an error of the run.
func TestRetriesOnlyBeforeTheStream(t *testing.T) {
	fail := func(times int, sc hostile.Script) func(int64) hostile.Script {
		return func(n int64) hostile.Script {
			if n <= int64(times) {
				return sc
			}
			return hostile.Answer(2, 0)
		}
	}
	tests := []struct {
		name     string
		attempts int // retry.max_attempts
		each     func(int64) hostile.Script
		tls      bool
		want     runResult
		reasons  []observe.Reason // of each attempt, in order
		retried  map[observe.Reason]int
	}{
		{"503 twice, then an answer", 3, fail(2, hostile.Script{hostile.Status(503, "")}), false, runOK,
			[]observe.Reason{observe.ReasonQueueFull, observe.ReasonQueueFull, observe.ReasonNone},
			map[observe.Reason]int{observe.ReasonQueueFull: 2}},
		{"503 with a body three times: attempts run out", 3, fail(3, hostile.Script{hostile.Status(503, `{"error":"server busy"}`)}), false, runFailedOn,
			[]observe.Reason{observe.ReasonQueueFull, observe.ReasonQueueFull, observe.ReasonQueueFull},
			map[observe.Reason]int{observe.ReasonQueueFull: 2}},
		{"429, then an answer", 3, fail(1, hostile.Script{hostile.Status(429, "slow down")}), false, runOK,
			[]observe.Reason{observe.ReasonHTTP4xx, observe.ReasonNone}, map[observe.Reason]int{observe.ReasonHTTP4xx: 1}},
		{"500, then an answer", 3, fail(1, hostile.Script{hostile.Status(500, `{"error":"boom"}`)}), false, runOK,
			[]observe.Reason{observe.ReasonHTTP5xx, observe.ReasonNone}, map[observe.Reason]int{observe.ReasonHTTP5xx: 1}},
		{"closed before the status line, then an answer", 3, fail(1, hostile.Script{hostile.Close()}), false, runOK,
			[]observe.Reason{observe.ReasonConnect, observe.ReasonNone}, map[observe.Reason]int{observe.ReasonConnect: 1}},
		{"max_attempts 1 never retries", 1, fail(1, hostile.Script{hostile.Status(503, "")}), false, runFailedOn,
			[]observe.Reason{observe.ReasonQueueFull}, map[observe.Reason]int{}},
		{"broken after tokens: not retried", 3, fail(1, hostile.Script{hostile.Tokens(2, 0), hostile.Close()}), false, runFailed,
			[]observe.Reason{observe.ReasonStreamBroken}, map[observe.Reason]int{}},
		{"error line mid-stream: not retried", 3, fail(1, hostile.Script{hostile.Tokens(1, 0), hostile.Line(`{"error":"runner crashed"}`)}), false, runFailed,
			[]observe.Reason{observe.ReasonServerError}, map[observe.Reason]int{}},
		{"model not found: not retried", 3, fail(1, hostile.Script{hostile.Status(404, `{"error":"model \"m\" not found, try pulling it first"}`)}), false, runFailed,
			[]observe.Reason{observe.ReasonModelNotFound}, map[observe.Reason]int{}},
		{"bare 404: not retried", 3, fail(1, hostile.Script{hostile.Status(404, "")}), false, runFailed,
			[]observe.Reason{observe.ReasonHTTP4xx}, map[observe.Reason]int{}},
		{"first token timeout: not retried", 3, fail(1, hostile.Script{hostile.Status(200, ""), hostile.Wait(2 * time.Second)}), false, runFailedOn,
			[]observe.Reason{observe.ReasonFirstTokenTimeout}, map[observe.Reason]int{}},
		{"untrusted certificate: not retried", 3, nil, true, runFailedOn,
			[]observe.Reason{observe.ReasonConnect}, map[observe.Reason]int{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var srv *hostile.Server
			if tc.tls {
				srv = hostile.StartTLS(t)
			} else {
				srv = hostile.Start(t)
				srv.SetEach(tc.each)
			}
			r := newRig(t, fmt.Sprintf(`
targets:
  - name: h
    url: %q
    timeouts: {connect: 500ms, first_token: 300ms, idle: 300ms, request: 5s}
    retry: {max_attempts: %d, backoff_min: 20ms, backoff_max: 80ms}
agents:
  - {name: a, target: h, model: m, workflow: [{name: ask, prompt: hi}]}
workloads:
  - {name: w, agents: [{agent: a}]}
`, srv.URL(), tc.attempts))
			if got := r.run(t); got != tc.want {
				t.Errorf("run ended %d, want %d", got, tc.want)
			}
			reqs, runs, _, _ := r.sink.snapshot()
			var reasons []observe.Reason
			for _, q := range reqs {
				reasons = append(reasons, q.Reason)
			}
			if !slices.Equal(reasons, tc.reasons) {
				t.Errorf("attempts ended with %q, want %q", reasons, tc.reasons)
			}
			if got := r.retries(); fmt.Sprint(got) != fmt.Sprint(tc.retried) {
				t.Errorf("retries %v, want %v", got, tc.retried)
			}
			if len(runs) != 1 {
				t.Errorf("%d runs recorded, want 1", len(runs))
			}
		})
	}
}

// TestFailingStreaksLogOnce stops a server for a while, then brings it back
// on the same port: the run fails and recovers by itself, and the log says
// so once for the target and once for the agent, not once per attempt.
func TestFailingStreaksLogOnce(t *testing.T) {
	srv := hostile.Start(t)
	srv.Set(hostile.Answer(2, 0))
	r := newRig(t, fmt.Sprintf(`
targets:
  - {name: h, url: %q, timeouts: {connect: 200ms}, retry: {max_attempts: 2, backoff_min: 10ms, backoff_max: 40ms}}
agents:
  - {name: a, target: h, model: m, workflow: [{name: ask, prompt: hi}]}
workloads:
  - {name: w, agents: [{agent: a}]}
`, srv.URL()))
	if got := r.run(t); got != runOK {
		t.Fatalf("healthy run: %d", got)
	}
	srv.Stop()
	for range 5 {
		if got := r.run(t); got != runFailedOn {
			t.Fatalf("run against a stopped server: %d, want a failure on the target", got)
		}
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := r.run(t); got != runOK {
		t.Fatalf("run after the restart: %d, want success without any restart of ours", got)
	}
	count := func(level zapcore.Level, msg string) int {
		return r.logs.FilterLevelExact(level).FilterMessage(msg).Len()
	}
	for _, c := range []struct {
		level zapcore.Level
		msg   string
	}{
		{zapcore.WarnLevel, "target failing; every request to it backs off"},
		{zapcore.InfoLevel, "target serving again"},
		{zapcore.WarnLevel, "agent run failing"},
		{zapcore.InfoLevel, "agent runs succeeding again"},
	} {
		if n := count(c.level, c.msg); n != 1 {
			t.Errorf("%q logged %d times at %s, want once for the streak", c.msg, n, c.level)
		}
	}
	var lines []string
	for _, e := range r.logs.FilterLevelExact(zapcore.WarnLevel).All() {
		lines = append(lines, e.Message)
	}
	if len(lines) != 2 {
		t.Errorf("warnings %q, want exactly the two above", strings.Join(lines, "; "))
	}
}
