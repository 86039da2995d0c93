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

// Failed runs of a closed-loop replica back off exponentially, with jitter,
// so that a server that is down is not hammered by every replica at once.
const (
	backoffMin = 250 * time.Millisecond
	backoffMax = 30 * time.Second
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

// runOnce runs the agent's workflow once, step after step, and records the
// run. It reports whether every step succeeded.
func (ar *agentRunner) runOnce(ctx context.Context, replica int, runNo uint64) bool {
	start := time.Now()
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
	for i := range a.Workflow {
		step := &a.Workflow[i]
		data.Step = step.Name
		prompt, err := step.Render(data)
		if err != nil {
			// Validation executed every template once; a failure here is
			// data-dependent. Count the run as failed, never the process.
			ar.log.Warn("render prompt", zap.String("step", step.Name), zap.Error(err))
			run.Outcome = observe.OutcomeError
			break
		}
		ti := ar.pick()
		spec := newCallSpec(a, ar.opts, step.System, prompt, history)
		sr := &ar.recs[ti][i]
		obs := observe.Request{Labels: sr.labels}
		first := !ar.seen[ti].Swap(true)
		out, err := call(ctx, ar.targets[ti], spec, sr.rec, &obs, ar.thresholds, first)
		if obs.Outcome != observe.OutcomeSuccess {
			run.Outcome = obs.Outcome
			if obs.Outcome == observe.OutcomeError {
				ar.noteFailure(obs.Labels, obs.Reason, err)
			}
			break
		}
		run.Steps++
		if t := ar.tally.Load(); t != nil {
			t.tokens[ti] += obs.EvalCount
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
	run.Duration = time.Since(start)
	ar.sink.RunFinished(run)
	if run.Outcome == observe.OutcomeSuccess {
		ar.noteSuccess()
	}
	return run.Outcome == observe.OutcomeSuccess
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
// After a failed run it waits a growing, jittered backoff instead of the
// think time.
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
		ok := ar.runOnce(runCtx, replica, runNo)
		gate.Unlock()
		if ok {
			backoff = 0
		} else {
			backoff = min(backoffMax, max(backoffMin, 2*backoff))
			// Half fixed, half random: bounded and spread out.
			wait = max(wait, backoff/2+time.Duration(rng.Int64N(int64(backoff/2)+1)))
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
	if !ar.runOnce(ctx, 0, 0) {
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
		if !ar.runOnce(ctx, 0, uint64(c.Runs+1)) {
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
