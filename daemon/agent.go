package daemon

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ollama/ollama/api"
	"go.uber.org/zap"

	"github.com/chimeraforge/chimeraforge/config"
	"github.com/chimeraforge/chimeraforge/observe"
)

// A closed-loop replica whose run failed for a reason of its own (a missing
// model, a bad request, a broken stream: not a fault of its target, which
// the target's shared gate paces) backs off exponentially, with jitter, so
// that a failing agent does not spin.
const (
	backoffMin = 250 * time.Millisecond
	backoffMax = 30 * time.Second
)

// runResult is how a workflow run ended, for the loop that started it.
type runResult int

const (
	runOK         runResult = iota // every step succeeded
	runFailed                      // a step failed for a reason of the agent or the request
	runFailedOn                    // a step failed on a fault of its target: its gate paces what follows
	runCanceled                    // the run's context ended
	runNotStarted                  // start ended before the run sent anything: not recorded
)

// agentRunner runs one agent of one workload: it owns the targets the agent
// may use, one recorder per target and workflow step, and the balancing
// state shared by the agent's replicas.
type agentRunner struct {
	workload   string
	agent      *config.Agent
	opts       map[string]any
	targets    []*target
	recs       [][]stepRecorder // [target][step], parallel to targets and agent.Workflow
	seen       []atomic.Bool    // per target: the agent already sent a request there
	rr         atomic.Uint64
	tally      atomic.Pointer[tokenTally] // set while calibrating
	sink       observe.Sink
	log        *zap.Logger
	thresholds thresholds

	mu      sync.Mutex
	failing bool // the last run failed; logs only on a change
}

// stepRecorder is where the calls of one workflow step on one target are
// recorded, with the labels their observations carry.
type stepRecorder struct {
	labels observe.Labels
	rec    observe.Recorder
}

func newAgentRunner(workload string, a *config.Agent, targets []*target, sink observe.Sink, log *zap.Logger, th thresholds) *agentRunner {
	ar := &agentRunner{
		workload:   workload,
		agent:      a,
		opts:       a.Options.Map(),
		targets:    targets,
		recs:       make([][]stepRecorder, len(targets)),
		seen:       make([]atomic.Bool, len(targets)),
		sink:       sink,
		log:        log.With(zap.String("workload", workload), zap.String("agent", a.Name)),
		thresholds: th,
	}
	// Every series of every (target, step) exists from the start, and no
	// call looks a recorder up.
	for i, t := range targets {
		ar.recs[i] = make([]stepRecorder, len(a.Workflow))
		for j := range a.Workflow {
			l := observe.Labels{Workload: workload, Agent: a.Name, Target: t.name, Model: a.Model, Step: a.Workflow[j].Name}
			ar.recs[i][j] = stepRecorder{labels: l, rec: sink.Recorder(l)}
		}
	}
	return ar
}

// pick chooses the target of the next call.
func (ar *agentRunner) pick() int {
	n := len(ar.targets)
	if n == 1 {
		return 0
	}
	if ar.agent.Balance == config.BalanceLeastInFlight {
		best, bestN := 0, ar.targets[0].inFlight.Load()
		for i := 1; i < n; i++ {
			if v := ar.targets[i].inFlight.Load(); v < bestN {
				best, bestN = i, v
			}
		}
		return best
	}
	return int((ar.rr.Add(1) - 1) % uint64(n))
}

// admit picks the target of the next attempt — by the agent's balance,
// among the targets whose gate admits it now, so that a healthy target of
// the agent keeps working while another backs off — and waits while none
// does. It returns false when ctx ends first.
func (ar *agentRunner) admit(ctx context.Context) (int, ticket, bool) {
	n := len(ar.targets)
	for {
		now := time.Now()
		first := ar.pick()
		var soonest time.Time
		var wakes []<-chan struct{}
		for k := range n {
			i := (first + k) % n
			tk, ok, until, wake := ar.targets[i].gate.enter(now)
			if ok {
				return i, tk, true
			}
			if !until.IsZero() && (soonest.IsZero() || until.Before(soonest)) {
				soonest = until
			}
			wakes = append(wakes, wake)
		}
		if !waitGates(ctx, soonest, wakes) {
			return 0, ticket{}, false
		}
	}
}

// stepResult is how one workflow step ended: its last attempt.
type stepResult struct {
	out   string
	obs   observe.Request // the last attempt; zero when none was sent
	ti    int             // the target of the last attempt
	err   error
	sent  bool // an attempt was sent
	fault bool // the last attempt failed on a fault of its target
	// canceled: ctx ended while a retry waited for its target.
	canceled bool
}

// step sends one workflow step and sends it again, up to the target's
// retry.max_attempts in all, while it fails where nothing was generated yet
// (see retryable). Every attempt is a request of its own, recorded with its
// outcome; each re-send is counted as a retry of the attempt it follows.
// The first attempt waits for a target to admit it (the targets' backoff)
// until wait ends; a retry waits at most the failed target's
// retry.backoff_max, or the step ends with the attempt that failed, so that
// a run against a target that is down ends too.
func (ar *agentRunner) step(ctx, wait context.Context, i int, spec callSpec) stepResult {
	var r stepResult
	var again observe.Recorder // the recorder of the attempt being sent again
	var why observe.Reason
	for attempt := 1; ; attempt++ {
		wctx, cancel := wait, context.CancelFunc(func() {})
		if again != nil {
			wctx, cancel = context.WithTimeout(ctx, ar.targets[r.ti].cfg.Retry.BackoffMax)
		}
		ti, tk, ok := ar.admit(wctx)
		cancel()
		if !ok {
			r.canceled = r.sent && ctx.Err() != nil
			return r
		}
		if again != nil {
			again.Retried(why)
		}
		tg, sr := ar.targets[ti], &ar.recs[ti][i]
		obs := observe.Request{Labels: sr.labels}
		first := !ar.seen[ti].Swap(true)
		out, err := call(ctx, tg, spec, sr.rec, &obs, ar.thresholds, first)
		if first && obs.Status == 0 && obs.Reason == observe.ReasonConnect {
			ar.seen[ti].Store(false) // the server never saw it: the next one is still the first
		}
		r = stepResult{out: out, obs: obs, ti: ti, err: err, sent: true, fault: ar.settle(tg, tk, &obs)}
		if attempt >= tg.cfg.Retry.MaxAttempts || !retryable(&obs, err) || ctx.Err() != nil {
			return r
		}
		ar.log.Debug("retrying request", zap.String("step", obs.Step), zap.String("target", obs.Target),
			zap.String("reason", string(obs.Reason)), zap.Int("attempt", attempt), zap.Error(err))
		again, why = sr.rec, obs.Reason
	}
}

// Log a target's failing streak from its second window on: a single fault
// among successes (one 503 on a busy server) is not a streak.
const warnAtWindow = 2

// settle tells the target's gate how an attempt ended, logs the target's
// failing streaks once each, and reports whether the attempt failed on a
// fault of the target.
func (ar *agentRunner) settle(t *target, tk ticket, obs *observe.Request) bool {
	switch {
	case obs.Outcome == observe.OutcomeSuccess:
		if t.gate.succeeded() >= warnAtWindow {
			t.log.Info("target serving again")
		}
		return false
	case targetFault(obs):
		if opened, n, d := t.gate.fault(tk, time.Now()); opened {
			lvl := zap.DebugLevel
			if n == warnAtWindow {
				lvl = zap.WarnLevel
			}
			t.log.Log(lvl, "target failing; every request to it backs off", zap.String("reason", string(obs.Reason)),
				zap.Int("status", obs.Status), zap.Int("window", n), zap.Duration("backoff", d))
		}
		return true
	default:
		t.gate.release(tk)
		return false
	}
}

// runOnce runs the agent's workflow once, step after step, and records the
// run. Waits for its targets' backoff end with ctx; before its first request
// they also end with start, and the run is then dropped unrecorded: a run
// that never sent anything did not start.
func (ar *agentRunner) runOnce(ctx, start context.Context, replica int, runNo uint64) runResult {
	began := time.Now()
	a := ar.agent
	data := config.TemplateData{
		Outputs: make(map[string]string, len(a.Workflow)),
		Vars:    a.Variables,
		Run:     runNo,
		Agent:   a.Name,
		Replica: replica,
	}
	var history []api.Message
	run := observe.Run{Workload: ar.workload, Agent: a.Name, Outcome: observe.OutcomeSuccess}
	result, wait := runOK, start
	for i := range a.Workflow {
		step := &a.Workflow[i]
		data.Step = step.Name
		prompt, err := step.Render(data)
		if err != nil {
			// Validation executed every template once; a failure here is
			// data-dependent. Count the run as failed, never the process.
			ar.log.Warn("render prompt", zap.String("step", step.Name), zap.Error(err))
			run.Outcome, result = observe.OutcomeError, runFailed
			break
		}
		spec := newCallSpec(a, ar.opts, step.System, prompt, history)
		r := ar.step(ctx, wait, i, spec)
		if !r.sent {
			if i == 0 {
				return runNotStarted
			}
			run.Outcome, result = observe.OutcomeCanceled, runCanceled
			break
		}
		wait = ctx
		obs, out := &r.obs, r.out
		if r.canceled {
			run.Outcome, result = observe.OutcomeCanceled, runCanceled
			break
		}
		if obs.Outcome != observe.OutcomeSuccess {
			run.Outcome, result = obs.Outcome, runCanceled
			if obs.Outcome == observe.OutcomeError {
				result = runFailed
				if r.fault {
					result = runFailedOn
				}
				ar.noteFailure(obs.Labels, obs.Reason, r.err)
			}
			break
		}
		run.Steps++
		if t := ar.tally.Load(); t != nil {
			t.tokens[r.ti] += obs.EvalCount
		}
		data.Outputs[step.Name] = out
		data.Previous = out
		if a.KeepHistory {
			if step.System != "" {
				history = append(history, api.Message{Role: "system", Content: step.System})
			}
			history = append(history,
				api.Message{Role: "user", Content: prompt},
				api.Message{Role: "assistant", Content: out})
		}
	}
	run.Duration = time.Since(began)
	ar.sink.RunFinished(run)
	if run.Outcome == observe.OutcomeSuccess {
		ar.noteSuccess()
	}
	return result
}

// noteFailure logs the first failure after a success at warn level and the
// rest at debug, so a target that is down costs one line, not one per run.
func (ar *agentRunner) noteFailure(l observe.Labels, reason observe.Reason, err error) {
	ar.mu.Lock()
	was := ar.failing
	ar.failing = true
	ar.mu.Unlock()
	lvl := zap.WarnLevel
	if was {
		lvl = zap.DebugLevel
	}
	ar.log.Log(lvl, "agent run failing", zap.String("step", l.Step), zap.String("target", l.Target),
		zap.String("reason", string(reason)), zap.Error(err))
}

func (ar *agentRunner) noteSuccess() {
	ar.mu.Lock()
	was := ar.failing
	ar.failing = false
	ar.mu.Unlock()
	if was {
		ar.log.Info("agent runs succeeding again")
	}
}

// closedLoop is one replica of a closed-loop workload: run, think, repeat,
// until arrivals ends; a run in progress then finishes unless runCtx ends.
// Each run holds gate, which a calibration takes to pause the replica.
// After a run that failed for a reason of its own it waits a growing,
// jittered backoff instead of the think time; after one that failed on a
// fault of its target, the target's shared gate paces the next run.
func (ar *agentRunner) closedLoop(arrivals, runCtx context.Context, gate sync.Locker, replica int) {
	var runNo uint64
	backoff := time.Duration(0)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(replica)))
	for arrivals.Err() == nil {
		gate.Lock()
		if arrivals.Err() != nil {
			gate.Unlock()
			return
		}
		runNo++
		wait := ar.agent.ThinkTime
		res := ar.runOnce(runCtx, arrivals, replica, runNo)
		gate.Unlock()
		switch res {
		case runOK:
			backoff = 0
		case runFailed, runCanceled:
			backoff = min(backoffMax, max(backoffMin, 2*backoff))
			// Half fixed, half random: bounded and spread out.
			wait = max(wait, backoff/2+time.Duration(rng.Int64N(int64(backoff/2)+1)))
		case runNotStarted:
			runNo--
		}
		if !sleep(arrivals, wait) {
			return
		}
	}
}

// sleep waits d or until ctx ends; it reports whether the full wait passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// tokenTally counts the tokens of one solo calibration loop, by target. Only
// the calibrating loop runs the agent then, one run at a time.
type tokenTally struct {
	tokens []int // parallel to agentRunner.targets
}

// calibrate measures the agent's solo baseline: one warm-up run (so that a
// cold model load or a reload left by the previous agent is not measured),
// then up to cfg.Runs runs of its own loop, each followed by its think time
// as in the closed loop, ended early by cfg.MaxDuration after at least one.
// The baseline is server-reported generated tokens per wall-clock second.
func (ar *agentRunner) calibrate(ctx context.Context, cfg config.Calibration) observe.Calibration {
	c := observe.Calibration{Workload: ar.workload, Agent: ar.agent.Name, Model: ar.agent.Model}
	if ar.runOnce(ctx, ctx, 0, 0) != runOK {
		c.At = time.Now()
		return c
	}
	t := &tokenTally{tokens: make([]int, len(ar.targets))}
	ar.tally.Store(t)
	defer ar.tally.Store(nil)
	start := time.Now()
	deadline := start.Add(cfg.MaxDuration)
	c.OK = true
	for c.Runs < cfg.Runs {
		if ar.runOnce(ctx, ctx, 0, uint64(c.Runs+1)) != runOK {
			c.OK = false
			break
		}
		c.Runs++
		if !sleep(ctx, ar.agent.ThinkTime) || time.Now().After(deadline) {
			break
		}
	}
	c.Wall = time.Since(start)
	c.At = time.Now()
	c.OK = c.OK && ctx.Err() == nil && c.Runs > 0
	c.TokensPerSecond = make(map[string]float64, len(ar.targets))
	for i, tg := range ar.targets {
		if t.tokens[i] > 0 || len(ar.targets) == 1 {
			c.TokensPerSecond[tg.name] = float64(t.tokens[i]) / c.Wall.Seconds()
		}
	}
	return c
}
