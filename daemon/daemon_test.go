package daemon

import (
	"context"
	"fmt"
	"maps"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/chimeraforge/chimeraforge/config"
	"github.com/chimeraforge/chimeraforge/observe"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recordingSink keeps every observation, for exact assertions.
type recordingSink struct {
	mu         sync.Mutex
	recorders  map[observe.Labels]int // Recorder calls by label set
	started    map[observe.Labels]int
	startedAt  []time.Time // when each request started, in order
	saturated  map[observe.Labels]int
	retried    map[observe.Labels]map[observe.Reason]int
	gaps       int
	requests   []observe.Request
	mislabeled int // requests whose labels are not their recorder's
	runs       []observe.Run
	delays     []time.Duration
	dropped    int
	forgotten  []string

	active       map[string]int
	calibrations int
	calibrated   []observe.Calibration

	polls          []observe.TargetState
	removedTargets []string
	shards         []string
}

func newRecordingSink() *recordingSink {
	return &recordingSink{recorders: map[observe.Labels]int{}, started: map[observe.Labels]int{},
		saturated: map[observe.Labels]int{}, active: map[string]int{}, retried: map[observe.Labels]map[observe.Reason]int{}}
}

type sinkRecorder struct {
	s *recordingSink
	l observe.Labels
}

func (s *recordingSink) Recorder(l observe.Labels) observe.Recorder {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recorders[l]++
	return sinkRecorder{s, l}
}
func (s *recordingSink) RunFinished(r observe.Run) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.runs = append(s.runs, r)
}
func (s *recordingSink) ScheduleDelay(_ string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delays = append(s.delays, d)
}
func (s *recordingSink) ArrivalDropped(string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropped++
}
func (s *recordingSink) AgentActive(workload, agent string, delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active[workload+"/"+agent] += delta
}
func (s *recordingSink) Calibrating(workload string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.calibrations++
	}
}
func (s *recordingSink) Calibrated(c observe.Calibration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calibrated = append(s.calibrated, c)
}
func (s *recordingSink) TargetPolled(st observe.TargetState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.polls = append(s.polls, st)
}
func (s *recordingSink) TargetRemoved(target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removedTargets = append(s.removedTargets, target)
}
func (s *recordingSink) Forget(workload, agent string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgotten = append(s.forgotten, workload+"/"+agent)
}
func (r sinkRecorder) Started(saturated bool) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	r.s.started[r.l]++
	r.s.startedAt = append(r.s.startedAt, time.Now())
	if saturated {
		r.s.saturated[r.l]++
	}
}
func (r sinkRecorder) TokenGap(time.Duration) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	r.s.gaps++
}
func (r sinkRecorder) Retried(reason observe.Reason) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if r.s.retried[r.l] == nil {
		r.s.retried[r.l] = map[observe.Reason]int{}
	}
	r.s.retried[r.l][reason]++
}
func (r sinkRecorder) Finished(q *observe.Request) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	r.s.requests = append(r.s.requests, *q)
	if q.Labels != r.l {
		r.s.mislabeled++
	}
}

// snapshot returns copies of what was recorded so far.
func (s *recordingSink) snapshot() ([]observe.Request, []observe.Run, int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]observe.Request(nil), s.requests...), append([]observe.Run(nil), s.runs...), len(s.delays), s.dropped
}

func reasons(reqs []observe.Request) map[observe.Reason]int {
	out := map[observe.Reason]int{}
	for _, r := range reqs {
		out[r.Reason]++
	}
	return out
}

func mustConfig(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.LoadBytes(t.Name(), []byte(yaml), nil)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	return cfg
}

// runFor runs a daemon on cfg for d, then stops it and checks it stopped
// within the shutdown timeout.
func runFor(t *testing.T, cfg *config.Config, sink observe.Sink, d time.Duration) *Daemon {
	t.Helper()
	dm := New(cfg, sink, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dm.Run(ctx) }()
	time.Sleep(d)
	stopAt := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(cfg.Global.ShutdownTimeout + 5*time.Second):
		t.Fatalf("Run did not return within the shutdown timeout %s", cfg.Global.ShutdownTimeout)
	}
	if took := time.Since(stopAt); took > cfg.Global.ShutdownTimeout+time.Second {
		t.Errorf("shutdown took %s, bound %s", took, cfg.Global.ShutdownTimeout)
	}
	return dm
}

const simBase = `
global: {shutdown_timeout: 2s, model_reload_threshold: 50ms}
simulation:
  gpus: [{name: g, decode_rate: %v}]
  instances:
    - name: s
      gpu: g
      num_parallel: %d
      load_delay: 10ms
      faults: {stall_ratio: %v, stall_duration: %s}
targets:
  - name: s
    url: sim://s
    num_parallel: %d
    timeouts: {first_token: %s, idle: %s}
`

func TestOpenLoopDropsArrivalsAtCap(t *testing.T) {
	// 20 arrivals/s, each run ~0.5 s long, at most one in flight: most
	// arrivals must be dropped and counted, and every arrival reports its
	// schedule delay.
	cfg := mustConfig(t, fmt.Sprintf(simBase, 40, 1, 0, "1s", 1, "10s", "10s")+`
agents:
  - {name: a, target: s, model: sim-tiny, options: {num_predict: 20}, workflow: [{name: ask, prompt: hi}]}
workloads:
  - name: open
    agents: [{agent: a}]
    arrival: {mode: constant, rate: 20, max_in_flight: 1}
    calibration: {at_start: false}
`)
	sink := newRecordingSink()
	runFor(t, cfg, sink, 1500*time.Millisecond)
	reqs, runs, delays, dropped := sink.snapshot()
	if delays < 20 || delays > 31 {
		t.Errorf("schedule delays recorded for %d arrivals in 1.5 s at 20/s, want 20..31", delays)
	}
	if dropped == 0 || dropped+len(runs) > delays {
		t.Errorf("dropped %d, runs %d, arrivals %d: want drops > 0 and drops + runs <= arrivals", dropped, len(runs), delays)
	}
	if len(reqs) > 5 {
		t.Errorf("%d requests with max_in_flight 1 and ~0.5 s per run in 1.5 s, want <= 5", len(reqs))
	}
}

func TestTimeoutsAndShutdown(t *testing.T) {
	for _, tc := range []struct {
		name       string
		stallRatio float64
		firstToken string
		idle       string
		want       observe.Reason
	}{
		// A stall mid-stream longer than the idle timeout.
		{"idle timeout", 1, "10s", "200ms", observe.ReasonIdleTimeout},
		// A model load (10 ms) plus prompt eval longer than first_token.
		{"first token timeout", 0, "1ms", "10s", observe.ReasonFirstTokenTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustConfig(t, fmt.Sprintf(simBase, 200, 1, tc.stallRatio, "5s", 1, tc.firstToken, tc.idle)+`
agents:
  - {name: a, target: s, model: sim-tiny, options: {num_predict: 40}, workflow: [{name: ask, prompt: hi}]}
workloads:
  - {name: w, agents: [{agent: a}], calibration: {at_start: false}}
`)
			sink := newRecordingSink()
			runFor(t, cfg, sink, time.Second)
			reqs, _, _, _ := sink.snapshot()
			got := reasons(reqs)
			if got[tc.want] == 0 {
				t.Errorf("reasons %v, want some %q", got, tc.want)
			}
			if got[observe.ReasonNone] != 0 {
				t.Errorf("reasons %v: no request should succeed", got)
			}
		})
	}
}

func TestShutdownCancelsInFlight(t *testing.T) {
	// Every stream stalls 5 s; stopping after 300 ms must cancel them at
	// once (shutdown_timeout 2 s is checked by runFor) and count them as
	// canceled, not as errors.
	cfg := mustConfig(t, fmt.Sprintf(simBase, 200, 2, 1, "5s", 2, "10s", "10s")+`
agents:
  - {name: a, target: s, model: sim-tiny, options: {num_predict: 10}, workflow: [{name: ask, prompt: hi}]}
workloads:
  - {name: w, agents: [{agent: a, replicas: 2}], calibration: {at_start: false}}
`)
	sink := newRecordingSink()
	runFor(t, cfg, sink, 300*time.Millisecond)
	reqs, runs, _, _ := sink.snapshot()
	if got := reasons(reqs); got[observe.ReasonCanceled] != 2 || len(reqs) != 2 {
		t.Errorf("reasons %v, want exactly 2 canceled", got)
	}
	for _, r := range runs {
		if r.Outcome != observe.OutcomeCanceled {
			t.Errorf("run outcome %s, want canceled", r.Outcome)
		}
	}
}

func TestFailuresAreClassifiedAndBackedOff(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	cfg := mustConfig(t, fmt.Sprintf(simBase, 200, 1, 0, "1s", 1, "10s", "10s")+fmt.Sprintf(`
  - {name: down, url: "http://%s", timeouts: {connect: 500ms}}
agents:
  - {name: ghost, target: s, model: no-such-model, workflow: [{name: ask, prompt: hi}]}
  - {name: lost, target: down, model: sim-tiny, workflow: [{name: ask, prompt: hi}]}
workloads:
  - {name: w, agents: [{agent: ghost}, {agent: lost}], calibration: {at_start: false}}
`, closed))
	sink := newRecordingSink()
	runFor(t, cfg, sink, 2*time.Second)
	reqs, _, _, _ := sink.snapshot()
	byAgent := map[string]map[observe.Reason]int{}
	for _, r := range reqs {
		if byAgent[r.Agent] == nil {
			byAgent[r.Agent] = map[observe.Reason]int{}
		}
		byAgent[r.Agent][r.Reason]++
	}
	for agent, want := range map[string]observe.Reason{"ghost": observe.ReasonModelNotFound, "lost": observe.ReasonConnect} {
		got := byAgent[agent]
		total := 0
		for _, n := range got {
			total += n
		}
		if got[want] == 0 || got[want] != total {
			t.Errorf("agent %s: reasons %v, want only %q", agent, got, want)
		}
		// Backoff 250 ms, 500 ms, 1 s, ... (each between half and all of
		// it): at most 5 attempts fit in 2 s; without backoff it would be
		// hundreds.
		if total > 5 {
			t.Errorf("agent %s: %d attempts in 2 s: retry storm", agent, total)
		}
	}
}

func TestBalancing(t *testing.T) {
	mk := func(names ...string) []*target {
		var ts []*target
		for _, n := range names {
			ts = append(ts, &target{name: n, numParallel: 1})
		}
		return ts
	}
	sink := newRecordingSink()
	log := zap.NewNop()

	rr := newAgentRunner("w", &config.Agent{Name: "a", Balance: config.BalanceRoundRobin}, mk("x", "y", "z"), sink, log, thresholds{})
	var got []int
	for range 6 {
		got = append(got, rr.pick())
	}
	if fmt.Sprint(got) != "[0 1 2 0 1 2]" {
		t.Errorf("round_robin picks %v, want [0 1 2 0 1 2]", got)
	}

	lf := newAgentRunner("w", &config.Agent{Name: "a", Balance: config.BalanceLeastInFlight}, mk("x", "y", "z"), sink, log, thresholds{})
	lf.targets[0].inFlight.Store(2)
	lf.targets[1].inFlight.Store(1)
	lf.targets[2].inFlight.Store(3)
	if i := lf.pick(); i != 1 {
		t.Errorf("least_in_flight picked %d, want 1 (fewest in flight)", i)
	}
	lf.targets[1].inFlight.Store(5)
	if i := lf.pick(); i != 0 {
		t.Errorf("least_in_flight picked %d, want 0", i)
	}
}

// TestStepsAreRecordedSeparately runs the demo's two-step workflow
// (analysis, then report) on two targets: the daemon asks for one recorder
// per (target, step) when it starts the agent, never per request, and
// records every call under its own step.
func TestStepsAreRecordedSeparately(t *testing.T) {
	cfg := mustConfig(t, fmt.Sprintf(simBase, 400, 4, 0, "1s", 2, "10s", "10s")+`
  - {name: s2, url: sim://s, num_parallel: 2}
agents:
  - name: a
    targets: [s, s2]
    model: sim-tiny
    options: {num_predict: 8}
    workflow:
      - {name: analysis, prompt: "List the risks."}
      - {name: report, prompt: "Summarise: {{.Previous}}"}
workloads:
  - {name: w, duration: 800ms, agents: [{agent: a, replicas: 2}], calibration: {at_start: false}}
`)
	sink := newRecordingSink()
	// The workload ends after 800 ms; its last runs finish, none is canceled.
	runFor(t, cfg, sink, 2*time.Second)
	reqs, runs, _, _ := sink.snapshot()
	sink.mu.Lock()
	recorders, started, mislabeled := sink.recorders, sink.started, sink.mislabeled
	sink.mu.Unlock()

	want := map[observe.Labels]int{}
	for _, target := range []string{"s", "s2"} {
		for _, step := range []string{"analysis", "report"} {
			want[observe.Labels{Workload: "w", Agent: "a", Target: target, Model: "sim-tiny", Step: step}] = 1
		}
	}
	if !maps.Equal(recorders, want) {
		t.Errorf("recorders asked for: %v\nwant one per (target, step): %v", recorders, want)
	}
	if mislabeled != 0 {
		t.Errorf("%d requests recorded with labels other than their recorder's", mislabeled)
	}

	byStep := map[string]int{}
	for _, r := range reqs {
		if r.Outcome != observe.OutcomeSuccess {
			t.Errorf("request %+v did not succeed", r.Labels)
		}
		byStep[r.Step]++
	}
	succeeded := 0
	for _, r := range runs {
		if r.Outcome == observe.OutcomeSuccess && r.Steps == 2 {
			succeeded++
		}
	}
	t.Logf("%d runs, requests by step %v", len(runs), byStep)
	if succeeded == 0 || succeeded != len(runs) {
		t.Fatalf("%d of %d runs completed both steps, want all, > 0", succeeded, len(runs))
	}
	// Every run sent one request per step: the steps are counted apart and
	// add up to every request.
	if byStep["analysis"] != succeeded || byStep["report"] != succeeded || len(byStep) != 2 {
		t.Errorf("requests by step %v, want analysis and report %d each", byStep, succeeded)
	}
	if byStep["analysis"]+byStep["report"] != len(reqs) {
		t.Errorf("requests by step %v do not add up to %d requests", byStep, len(reqs))
	}
	nStarted := 0
	for _, n := range started {
		nStarted += n
	}
	if nStarted != len(reqs) {
		t.Errorf("%d requests started, %d finished", nStarted, len(reqs))
	}
}

func TestSlotSaturation(t *testing.T) {
	tg := &target{numParallel: 2}
	var got []bool
	for range 3 {
		got = append(got, tg.acquire())
	}
	tg.release()
	got = append(got, tg.acquire())
	if fmt.Sprint(got) != "[false false true true]" {
		t.Errorf("saturation with num_parallel 2: %v, want [false false true true]", got)
	}
}

// A scrape reads the simulated GPUs while a reload or shutdown holds the
// daemon's lock to drain workloads: it must not wait for the drain.
func TestSimulatedGPUsDoNotWaitForTheDaemonLock(t *testing.T) {
	cfg := mustConfig(t, fmt.Sprintf(simBase, 40, 1, 0, "1s", 1, "10s", "10s")+`
agents:
  - {name: a, target: s, model: sim-tiny, options: {num_predict: 5}, workflow: [{name: ask, prompt: hi}]}
workloads:
  - name: w
    agents: [{agent: a}]
    calibration: {at_start: false}
`)
	dm := New(cfg, newRecordingSink(), zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dm.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(dm.SimulatedGPUs()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no simulated GPU within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	dm.mu.Lock()
	got := make(chan []SimulatedGPU, 1)
	go func() { got <- dm.SimulatedGPUs() }()
	select {
	case g := <-got:
		if len(g) != 1 || len(g[0].Instances) != 1 || g[0].Instances[0].Name != "s" {
			t.Errorf("SimulatedGPUs = %+v, want one GPU with instance s", g)
		}
	case <-time.After(2 * time.Second):
		t.Error("SimulatedGPUs waited for the daemon's lock")
	}
	dm.mu.Unlock()
}
