package daemon

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/chimeraforge/chimeraforge/config"
	"github.com/chimeraforge/chimeraforge/observe"
)

// workloadRunner runs one workload: its agents' replicas in closed loop, or
// a dispatcher that starts workflow runs on an open-loop schedule, plus the
// calibrations that measure each agent's solo baseline.
type workloadRunner struct {
	// cfg is the workload as this daemon's shard runs it (see shareOf);
	// replicas are, per agent, the replica numbers it runs (closed loop).
	cfg      config.Workload
	replicas [][]int
	shard    config.Shard
	agents   []*agentRunner // parallel to cfg.Agents and replicas
	sink     observe.Sink
	log      *zap.Logger
	started  atomic.Bool // the first run was dispatched

	// runs is held shared by every workflow run and exclusively by a
	// calibration: taking it waits for the runs in flight to end and holds
	// new ones back until the calibration is over.
	runs   sync.RWMutex
	paused atomic.Bool   // a calibration holds runs: open-loop arrivals are skipped
	calReq chan struct{} // requests a calibration; one pending at most

	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{} // closed once every run has ended and been accounted
}

// start launches the workload under parent. It returns at once. When the
// workload's duration is over no new run starts, and the runs in flight
// finish (a run ends early only when parent ends: shutdown or reload), so
// the end of a bounded workload does not show up as canceled requests.
// With calibration.at_start, every agent is calibrated before the first run.
func (w *workloadRunner) start(parent context.Context) {
	w.calReq = make(chan struct{}, 1)
	w.done = make(chan struct{})
	if len(w.agents) == 0 {
		// A closed-loop workload whose every replica runs on other shards.
		w.log.Info("workload has no replica on this shard; it runs nothing here",
			zap.Int("shard_index", w.shard.Index), zap.Int("shard_count", w.shard.Count))
		w.cancel = func() {}
		w.started.Store(true)
		close(w.done)
		return
	}
	runCtx, cancel := context.WithCancel(parent)
	w.cancel = cancel
	arrivals, stopArrivals := runCtx, context.CancelFunc(func() {})
	if w.cfg.Duration > 0 {
		arrivals, stopArrivals = context.WithTimeout(runCtx, w.cfg.Duration)
	}
	w.log.Info("workload starting", w.shareFields()...)
	for _, wa := range w.cfg.Agents {
		w.sink.AgentActive(w.cfg.Name, wa.Agent, wa.Replicas)
	}
	// Pause before any replica starts, so the first runs wait for it.
	atStart := w.cfg.Calibration.AtStart
	if atStart {
		w.pause()
	}
	w.wg.Go(func() {
		if atStart {
			w.measure(runCtx)
			w.resume()
		}
		w.calibrator(arrivals, runCtx)
	})
	if w.cfg.Arrival.Mode == config.ArrivalClosed {
		delays := rampDelays(w.replicas, w.cfg.RampUp)
		for i, rs := range w.replicas {
			for j, r := range rs {
				w.wg.Go(func() {
					if d := delays[i][j]; d > 0 {
						// The ramp counts from the end of the start
						// calibration, which holds the runs' lock.
						w.runs.RLock()
						w.runs.RUnlock() //nolint:staticcheck // SA2001: only waits for the calibration's write lock
						if !sleep(arrivals, d) {
							return
						}
					}
					w.agents[i].closedLoop(arrivals, runCtx, w.runs.RLocker(), r)
				})
			}
		}
		w.started.Store(true)
	} else {
		w.wg.Go(func() { w.openLoop(arrivals, runCtx) })
	}
	go func() {
		// Log the end of a bounded workload once, whatever ended it.
		defer close(w.done)
		w.wg.Wait()
		stopArrivals()
		for _, wa := range w.cfg.Agents {
			w.sink.AgentActive(w.cfg.Name, wa.Agent, -wa.Replicas)
		}
		if parent.Err() == nil {
			w.log.Info("workload finished")
		}
	}()
}

// shareFields describe, for the start log, what this shard runs.
func (w *workloadRunner) shareFields() []zap.Field {
	f := []zap.Field{zap.String("arrival", w.cfg.Arrival.Mode), zap.Duration("duration", w.cfg.Duration)}
	if w.shard.Count > 1 {
		f = append(f, zap.Int("shard_index", w.shard.Index), zap.Int("shard_count", w.shard.Count))
	}
	if w.cfg.Arrival.Mode == config.ArrivalClosed {
		replicas := make(map[string]int, len(w.cfg.Agents))
		for _, wa := range w.cfg.Agents {
			replicas[wa.Agent] = wa.Replicas
		}
		return append(f, zap.Any("replicas", replicas))
	}
	return append(f, zap.Float64("rate", w.cfg.Arrival.Rate), zap.Int("max_in_flight", w.cfg.Arrival.MaxInFlight))
}

// stop cancels the workload and waits for its runs to end and be
// accounted, at most until ctx ends, so that nothing it records lands after
// a reload has forgotten its series. It reports whether everything ended in
// time.
func (w *workloadRunner) stop(ctx context.Context) bool {
	w.cancel()
	select {
	case <-w.done:
		return true
	case <-ctx.Done():
		return false
	}
}

// requestCalibration asks for a calibration of every agent of the workload;
// a request while one is pending is merged into it.
func (w *workloadRunner) requestCalibration() {
	select {
	case w.calReq <- struct{}{}:
	default:
	}
}

// calibrator runs the calibrations requested (at start, on demand, on a
// Ollama version change) and scheduled (calibration.interval), one at a
// time, until the workload's arrivals end.
func (w *workloadRunner) calibrator(arrivals, runCtx context.Context) {
	var tick <-chan time.Time
	if iv := w.cfg.Calibration.Interval; iv > 0 {
		t := time.NewTicker(iv)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-arrivals.Done():
			return
		case <-w.calReq:
		case <-tick:
		}
		w.pause()
		w.measure(runCtx)
		w.resume()
	}
}

// A calibration measures each agent's solo baseline in turn: pause waits
// for the runs in flight to end and holds new ones back; measure runs one
// agent's own workflow loop (one replica) at a time with every other agent
// paused; resume lets the workload go on. Calibration requests are ordinary
// requests in every metric; chimeraforge_agent_active says who ran, so
// efficiency stays comparable through a calibration (see docs/metrics.md).
func (w *workloadRunner) pause() {
	w.runs.Lock()
	w.paused.Store(true)
	w.sink.Calibrating(w.cfg.Name, true)
	for _, wa := range w.cfg.Agents {
		w.sink.AgentActive(w.cfg.Name, wa.Agent, -wa.Replicas)
	}
}

func (w *workloadRunner) resume() {
	for _, wa := range w.cfg.Agents {
		w.sink.AgentActive(w.cfg.Name, wa.Agent, wa.Replicas)
	}
	w.sink.Calibrating(w.cfg.Name, false)
	w.paused.Store(false)
	w.runs.Unlock()
}

func (w *workloadRunner) measure(ctx context.Context) {
	w.log.Info("calibrating solo baselines")
	for _, ar := range w.agents {
		if ctx.Err() != nil {
			break
		}
		w.sink.AgentActive(w.cfg.Name, ar.agent.Name, 1)
		c := ar.calibrate(ctx, w.cfg.Calibration)
		w.sink.AgentActive(w.cfg.Name, ar.agent.Name, -1)
		if ctx.Err() != nil {
			break // shutdown or reload: neither a result nor a failure
		}
		w.sink.Calibrated(c)
		if c.OK {
			ar.log.Info("solo baseline measured", zap.Int("runs", c.Runs), zap.Duration("wall", c.Wall),
				zap.Any("tokens_per_second", c.TokensPerSecond))
		} else {
			ar.log.Warn("calibration failed; the previous baseline stays", zap.Int("runs", c.Runs))
		}
	}
}

// openLoop starts workflow runs at the paced schedule, whatever the
// previous runs are doing, up to max_in_flight at once (the rate and the cap
// are this shard's part). Each arrival goes to the workload's agents in
// turn, weighted by their replica counts. Arrivals that fall while a
// calibration holds the workload are skipped.
func (w *workloadRunner) openLoop(arrivals, runCtx context.Context) {
	arr := w.cfg.Arrival
	var pacer Pacer
	if arr.Mode == config.ArrivalPoisson {
		seed := arr.Seed
		if seed == 0 {
			seed = time.Now().UnixNano()
		}
		pacer = NewPoissonPacer(arr.Rate, shardSeed(seed, w.shard.Index))
	} else {
		pacer = NewConstantPacer(arr.Rate)
	}
	var order []int // agent index per slot of one weighted round
	for i, wa := range w.cfg.Agents {
		for range wa.Replicas {
			order = append(order, i)
		}
	}
	inFlight := make(chan struct{}, arr.MaxInFlight)
	var runNo uint64
	next := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for n := 0; ; n++ {
		next = next.Add(pacer.Interval())
		timer.Reset(time.Until(next))
		select {
		case <-arrivals.Done():
			return
		case <-timer.C:
		}
		if w.paused.Load() {
			continue
		}
		w.sink.ScheduleDelay(w.cfg.Name, max(0, time.Since(next)))
		select {
		case inFlight <- struct{}{}:
		default:
			w.sink.ArrivalDropped(w.cfg.Name)
			continue
		}
		runNo++
		ar, no := w.agents[order[n%len(order)]], runNo
		w.wg.Go(func() {
			defer func() { <-inFlight }()
			w.runs.RLock()
			defer w.runs.RUnlock()
			ar.runOnce(runCtx, arrivals, 0, no)
		})
		w.started.Store(true)
	}
}

// rampDelays returns, for each replica of replicas (per agent), how long
// after the workload starts it starts: evenly spaced over ramp, the agents'
// replicas interleaved so that every agent ramps up at the same pace.
func rampDelays(replicas [][]int, ramp time.Duration) [][]time.Duration {
	out := make([][]time.Duration, len(replicas))
	total, most := 0, 0
	for i, rs := range replicas {
		out[i] = make([]time.Duration, len(rs))
		total += len(rs)
		most = max(most, len(rs))
	}
	if ramp <= 0 || total == 0 {
		return out
	}
	slot := 0
	for j := range most {
		for i, rs := range replicas {
			if j < len(rs) {
				out[i][j] = time.Duration(int64(ramp) * int64(slot) / int64(total))
				slot++
			}
		}
	}
	return out
}
