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
// a dispatcher that starts workflow runs on an open-loop schedule.
type workloadRunner struct {
	cfg     config.Workload
	agents  []*agentRunner // parallel to cfg.Agents
	sink    observe.Sink
	log     *zap.Logger
	started atomic.Bool // the first run was dispatched

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// start launches the workload under parent. It returns at once. When the
// workload's duration is over no new run starts, and the runs in flight
// finish (a run ends early only when parent ends: shutdown or reload), so
// the end of a bounded workload does not show up as canceled requests.
func (w *workloadRunner) start(parent context.Context) {
	runCtx, cancel := context.WithCancel(parent)
	w.cancel = cancel
	arrivals, stopArrivals := runCtx, context.CancelFunc(func() {})
	if w.cfg.Duration > 0 {
		arrivals, stopArrivals = context.WithTimeout(runCtx, w.cfg.Duration)
	}
	w.log.Info("workload starting", zap.String("arrival", w.cfg.Arrival.Mode), zap.Duration("duration", w.cfg.Duration))
	if w.cfg.Arrival.Mode == config.ArrivalClosed {
		for i, wa := range w.cfg.Agents {
			for r := range wa.Replicas {
				w.wg.Go(func() { w.agents[i].closedLoop(arrivals, runCtx, r) })
			}
		}
		w.started.Store(true)
	} else {
		w.wg.Go(func() { w.openLoop(arrivals, runCtx) })
	}
	go func() {
		// Log the end of a bounded workload once, whatever ended it.
		w.wg.Wait()
		stopArrivals()
		if parent.Err() == nil {
			w.log.Info("workload finished")
		}
	}()
}

// stop cancels the workload and waits for its runs to end, at most until
// ctx ends. It reports whether everything ended in time.
func (w *workloadRunner) stop(ctx context.Context) bool {
	w.cancel()
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// openLoop starts workflow runs at the paced schedule, whatever the
// previous runs are doing, up to max_in_flight at once. Each arrival goes to
// the workload's agents in turn, weighted by their replica counts.
func (w *workloadRunner) openLoop(arrivals, runCtx context.Context) {
	arr := w.cfg.Arrival
	var pacer Pacer
	if arr.Mode == config.ArrivalPoisson {
		seed := arr.Seed
		if seed == 0 {
			seed = time.Now().UnixNano()
		}
		pacer = NewPoissonPacer(arr.Rate, seed)
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
			ar.runOnce(runCtx, 0, no)
		})
		w.started.Store(true)
	}
}
