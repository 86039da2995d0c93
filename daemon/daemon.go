// Package daemon drives the configured agent workloads against Ollama
// servers and produces one observation per call and per workflow run. It
// never imports Prometheus: observations leave through an observe.Sink.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/chimeraforge/chimeraforge/config"
	"github.com/chimeraforge/chimeraforge/observe"
	"github.com/chimeraforge/chimeraforge/ollamasim"
)

// Forgetter is implemented by sinks that can drop the series of an agent
// that a reload removed from a workload.
type Forgetter interface {
	Forget(workload, agent string)
}

// Daemon runs every workload of its configuration until stopped, and swaps
// configurations on Reload.
type Daemon struct {
	sink observe.Sink
	log  *zap.Logger

	mu        sync.Mutex
	cfg       *config.Config
	ctx       context.Context // Run's context; nil before Run
	sims      *simHost
	targets   map[string]*target
	workloads map[string]*workloadRunner
	polling   sync.WaitGroup // target pollers; they take mu, so never wait for them holding it
	ready     atomic.Bool
}

// New returns a daemon for cfg, which must come from config.Load.
func New(cfg *config.Config, sink observe.Sink, log *zap.Logger) *Daemon {
	return &Daemon{
		sink:      sink,
		log:       log,
		cfg:       cfg,
		sims:      newSimHost(log),
		targets:   map[string]*target{},
		workloads: map[string]*workloadRunner{},
	}
}

// Run starts the simulators, targets and workloads of the configuration and
// blocks until ctx ends. Then it cancels every in-flight request and waits
// for the workloads to end, at most global.shutdown_timeout.
func (d *Daemon) Run(ctx context.Context) error {
	d.mu.Lock()
	d.ctx = ctx
	err := d.apply(d.cfg, true)
	d.mu.Unlock()
	if err != nil {
		return errors.Join(err, d.shutdown())
	}
	<-ctx.Done()
	return d.shutdown()
}

// Calibrate requests a calibration of workload, or of every workload when
// workload is "". It returns at once; the calibration runs in the
// background (chimeraforge_calibrating shows it).
func (d *Daemon) Calibrate(workload string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ctx == nil {
		return errors.New("daemon not running")
	}
	if workload == "" {
		for _, w := range d.workloads {
			w.requestCalibration()
		}
		return nil
	}
	w, ok := d.workloads[workload]
	if !ok {
		return fmt.Errorf("unknown workload %q", workload)
	}
	w.requestCalibration()
	return nil
}

// shutdown stops the target pollers, then every workload within the
// shutdown timeout, then the simulators.
func (d *Daemon) shutdown() error {
	d.mu.Lock()
	for _, t := range d.targets {
		t.close()
	}
	d.mu.Unlock()
	d.polling.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	sctx, cancel := context.WithTimeout(context.Background(), d.cfg.Global.ShutdownTimeout)
	defer cancel()
	d.log.Info("stopping: canceling in-flight requests", zap.Duration("bound", d.cfg.Global.ShutdownTimeout))
	for _, w := range d.workloads {
		w.cancel() // all at once, then wait for each
	}
	var err error
	for name, w := range d.workloads {
		if !w.stop(sctx) {
			err = fmt.Errorf("workload %s did not stop within %s", name, d.cfg.Global.ShutdownTimeout)
		}
	}
	d.log.Debug("workloads stopped")
	d.sims.closeAll(sctx)
	d.log.Debug("simulators stopped")
	return err
}

// Reload swaps in cfg, which must come from config.Load. Workloads whose
// configuration (including their agents and targets) did not change keep
// running untouched; changed ones restart; removed ones stop and their
// series are dropped. Reload before Run only replaces the configuration.
func (d *Daemon) Reload(cfg *config.Config) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ctx == nil {
		d.cfg = cfg
		return nil
	}
	return d.apply(cfg, false)
}

// Ready reports whether every target answered /api/version at least once,
// or every workload has dispatched its first run.
func (d *Daemon) Ready() bool {
	if d.ready.Load() {
		return true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ctx == nil {
		return false
	}
	answered, started := true, true
	for _, t := range d.targets {
		answered = answered && t.answered()
	}
	for _, w := range d.workloads {
		started = started && w.started.Load()
	}
	if answered || started {
		d.ready.Store(true)
	}
	return d.ready.Load()
}

// apply moves the running state to cfg. Called with d.mu held. It first
// decides what changed, stops what must stop, then starts what is new, so
// that no workload ever talks to a simulator that is being replaced.
func (d *Daemon) apply(cfg *config.Config, initial bool) error {
	old := d.cfg
	simChanged := initial || !reflect.DeepEqual(old.Simulation, cfg.Simulation)
	if s := cfg.Global.Shard; initial || s != old.Global.Shard {
		// A changed shard changes global, so every workload restarts below
		// with its new share.
		fields := []zap.Field{zap.Int("shard_index", s.Index), zap.Int("shard_count", s.Count)}
		if initial {
			d.log.Info("running this shard of the load", fields...)
		} else {
			d.log.Info("shard changed; every workload restarts with its new share", append(fields,
				zap.Int("previous_shard_index", old.Global.Shard.Index), zap.Int("previous_shard_count", old.Global.Shard.Count))...)
		}
		if r, ok := d.sink.(ShardReporter); ok {
			r.Shard(s.Index, s.Count)
		}
	}

	changedTargets := map[string]bool{}
	for _, tc := range cfg.Targets {
		prev, ok := d.targets[tc.Name]
		_, sim := tc.SimName()
		if initial || !ok || (simChanged && sim) || !reflect.DeepEqual(prev.cfg, tc) {
			changedTargets[tc.Name] = true
		}
	}
	next := make(map[string]*workloadRunner, len(cfg.Workloads))
	for i := range cfg.Workloads {
		wc := &cfg.Workloads[i]
		if w, ok := d.workloads[wc.Name]; ok && !initial && sameWorkload(old, cfg, wc, changedTargets) {
			next[wc.Name] = w
		}
	}

	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.Global.ShutdownTimeout)
	defer cancel()
	for name, w := range d.workloads {
		if next[name] == w {
			continue
		}
		if !w.stop(stopCtx) {
			d.log.Warn("workload did not stop in time; its runs end in the background", zap.String("workload", name))
		}
		d.forgetRemoved(w, cfg)
	}
	d.workloads = next

	if simChanged {
		if err := d.sims.replace(d.ctx, cfg.Simulation); err != nil {
			return fmt.Errorf("start simulators: %w", err)
		}
	}
	targets := make(map[string]*target, len(cfg.Targets))
	for _, tc := range cfg.Targets {
		if !changedTargets[tc.Name] {
			targets[tc.Name] = d.targets[tc.Name]
			continue
		}
		base, err := d.resolve(&tc)
		if err != nil {
			return fmt.Errorf("target %s: %w", tc.Name, err)
		}
		t := newTarget(tc, base)
		t.log = d.log.With(zap.String("target", tc.Name))
		targets[tc.Name] = t
	}
	for name, t := range d.targets {
		if targets[name] != t {
			t.close()
		}
	}
	d.targets, d.cfg = targets, cfg

	for i := range cfg.Workloads {
		wc := &cfg.Workloads[i]
		if _, ok := next[wc.Name]; ok {
			continue
		}
		w := d.newWorkload(cfg, wc, targets)
		next[wc.Name] = w
		w.start(d.ctx)
	}
	for name := range changedTargets {
		t := targets[name]
		pctx, stop := context.WithCancel(d.ctx)
		t.stopPolling = stop
		retry := cfg.Global.ReadinessProbeInterval
		d.polling.Go(func() { d.pollTarget(pctx, t, retry) })
	}
	for name := range d.removedTargets(old, cfg) {
		d.sink.TargetRemoved(name)
	}
	return nil
}

// newWorkload returns the runner of this shard's share of workload wc.
func (d *Daemon) newWorkload(cfg *config.Config, wc *config.Workload, targets map[string]*target) *workloadRunner {
	sh := shareOf(*wc, cfg.Global.Shard)
	w := &workloadRunner{cfg: sh.cfg, replicas: sh.replicas, shard: cfg.Global.Shard, sink: d.sink,
		log: d.log.With(zap.String("workload", wc.Name))}
	for _, wa := range sh.cfg.Agents {
		a, _ := cfg.Agent(wa.Agent)
		ts := make([]*target, 0, len(a.TargetNames()))
		for _, tn := range a.TargetNames() {
			ts = append(ts, targets[tn])
		}
		th := thresholds{modelReload: cfg.Global.ModelReloadThreshold, queueWait: cfg.Global.QueueWaitThreshold}
		w.agents = append(w.agents, newAgentRunner(wc.Name, a, ts, d.sink, d.log, th))
	}
	return w
}

// forgetRemoved drops the series of the agents that the stopped workload w
// ran on this shard and that cfg no longer runs here: agents removed from
// the workload, or dealt to other shards after a change of global.shard.
func (d *Daemon) forgetRemoved(w *workloadRunner, cfg *config.Config) {
	f, ok := d.sink.(Forgetter)
	if !ok {
		return
	}
	keep := map[string]bool{}
	if wc, ok := cfg.Workload(w.cfg.Name); ok {
		for _, wa := range shareOf(*wc, cfg.Global.Shard).cfg.Agents {
			keep[wa.Agent] = true
		}
	}
	for _, wa := range w.cfg.Agents {
		if !keep[wa.Agent] {
			f.Forget(w.cfg.Name, wa.Agent)
		}
	}
}

// removedTargets names the targets of old that cfg no longer has.
func (d *Daemon) removedTargets(old, cfg *config.Config) map[string]bool {
	gone := map[string]bool{}
	if old == cfg {
		return gone
	}
	for _, t := range old.Targets {
		if _, ok := cfg.Target(t.Name); !ok {
			gone[t.Name] = true
		}
	}
	return gone
}

// resolve turns a target's URL into the address to dial; sim://NAME becomes
// the loopback address of the embedded simulator NAME.
func (d *Daemon) resolve(tc *config.Target) (*url.URL, error) {
	name, sim := tc.SimName()
	if !sim {
		u, err := url.Parse(tc.URL)
		if err != nil {
			return nil, fmt.Errorf("parse url: %w", err)
		}
		return u, nil
	}
	addr, ok := d.sims.addr(name)
	if !ok {
		return nil, errors.New("no running simulator " + name)
	}
	return &url.URL{Scheme: "http", Host: addr}, nil
}

// sameWorkload reports whether workload wc runs exactly as before: same
// workload settings, same agents, same targets, same global settings.
func sameWorkload(old, cfg *config.Config, wc *config.Workload, changedTargets map[string]bool) bool {
	if !reflect.DeepEqual(old.Global, cfg.Global) {
		return false
	}
	var ow *config.Workload
	for i := range old.Workloads {
		if old.Workloads[i].Name == wc.Name {
			ow = &old.Workloads[i]
		}
	}
	if ow == nil || !reflect.DeepEqual(*ow, *wc) {
		return false
	}
	for _, wa := range wc.Agents {
		oa, ok1 := old.Agent(wa.Agent)
		na, ok2 := cfg.Agent(wa.Agent)
		if !ok1 || !ok2 || !sameAgent(oa, na) {
			return false
		}
		for _, tn := range na.TargetNames() {
			if changedTargets[tn] {
				return false
			}
		}
	}
	return true
}

// sameAgent compares two agents by their configuration; parsed templates are
// compared through their source text.
func sameAgent(a, b *config.Agent) bool {
	if len(a.Workflow) != len(b.Workflow) {
		return false
	}
	for i := range a.Workflow {
		x, y := a.Workflow[i], b.Workflow[i]
		if x.Name != y.Name || x.System != y.System || x.Prompt != y.Prompt {
			return false
		}
	}
	ac, bc := *a, *b
	ac.Workflow, bc.Workflow = nil, nil
	return reflect.DeepEqual(ac, bc)
}

// Simulator returns the embedded simulator instance name, or nil. Tests use
// it to compare what the simulator sent with what was measured.
func (d *Daemon) Simulator(name string) *ollamasim.Server {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sims.server(name)
}
