package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/chimeraforge/chimeraforge/config"
	"github.com/chimeraforge/chimeraforge/ollamasim"
)

// simHost runs the embedded simulators a configuration declares, each on
// its own loopback port.
type simHost struct {
	log *zap.Logger
	// mu guards instances only, never held while a simulator starts or
	// stops: a scrape reading the simulated GPUs must not wait for a
	// reload or a shutdown to drain the simulators' streams.
	mu        sync.RWMutex
	instances map[string]*runningSim
}

type runningSim struct {
	srv  *ollamasim.Server
	http *http.Server
	addr string
	done chan struct{}
}

func newSimHost(log *zap.Logger) *simHost {
	return &simHost{log: log, instances: map[string]*runningSim{}}
}

// SimConfig maps the configuration of one instance to the simulator's own,
// with gpus holding the shared GPUs by name.
func SimConfig(ic config.SimInstance, gpus map[string]*ollamasim.GPU) ollamasim.Config {
	models := make([]ollamasim.Model, 0, len(ic.Models))
	for _, m := range ic.Models {
		models = append(models, ollamasim.Model{Name: m.Name, SizeBytes: m.SizeBytes})
	}
	return ollamasim.Config{
		Name:           ic.Name,
		GPU:            gpus[ic.GPU],
		NumParallel:    ic.NumParallel,
		MaxQueue:       ic.MaxQueue,
		PromptEvalRate: ic.PromptEvalRate,
		Jitter:         offIfZero(ic.Jitter),
		LoadDelay:      offIfZero(ic.LoadDelay),
		Seed:           ic.Seed,
		Version:        ic.Version,
		Models:         models,
		Faults: ollamasim.Faults{
			ErrorRatio:    ic.Faults.ErrorRatio,
			StallRatio:    ic.Faults.StallRatio,
			StallDuration: ic.Faults.StallDuration,
			DropRatio:     ic.Faults.DropRatio,
		},
	}
}

// NewGPUs builds the shared simulated GPUs of a simulation, by name.
func NewGPUs(s config.Simulation) map[string]*ollamasim.GPU {
	gpus := make(map[string]*ollamasim.GPU, len(s.GPUs))
	for _, g := range s.GPUs {
		gpus[g.Name] = ollamasim.NewGPU(ollamasim.GPUConfig{
			Name: g.Name, DecodeRate: g.DecodeRate, ConcurrencyGain: offIfZero(g.ConcurrencyGain), MemoryBytes: g.MemoryBytes,
		})
	}
	return gpus
}

// replace stops every running simulator and starts those of s.
func (h *simHost) replace(ctx context.Context, s config.Simulation) error {
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.closeAll(cctx)
	gpus := NewGPUs(s)
	for _, ic := range s.Instances {
		srv, err := ollamasim.New(SimConfig(ic, gpus))
		if err != nil {
			return fmt.Errorf("simulator %s: %w", ic.Name, err)
		}
		l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
		if err != nil {
			srv.Close()
			return fmt.Errorf("simulator %s: listen: %w", ic.Name, err)
		}
		rs := &runningSim{
			srv:  srv,
			http: &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second},
			addr: l.Addr().String(),
			done: make(chan struct{}),
		}
		go func() {
			defer close(rs.done)
			if err := rs.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				h.log.Error("simulator stopped", zap.String("simulator", ic.Name), zap.Error(err))
			}
		}()
		h.mu.Lock()
		h.instances[ic.Name] = rs
		h.mu.Unlock()
		h.log.Info("simulator started", zap.String("simulator", ic.Name), zap.String("address", rs.addr), zap.String("gpu", ic.GPU))
	}
	return nil
}

func (h *simHost) addr(name string) (string, bool) {
	h.mu.RLock()
	rs, ok := h.instances[name]
	h.mu.RUnlock()
	if !ok {
		return "", false
	}
	return rs.addr, true
}

// server returns the running simulator name, for tests that compare what it
// sent with what the daemon measured.
func (h *simHost) server(name string) *ollamasim.Server {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if rs, ok := h.instances[name]; ok {
		return rs.srv
	}
	return nil
}

// closeAll stops every simulator: gracefully until ctx ends, then at once.
func (h *simHost) closeAll(ctx context.Context) {
	h.mu.Lock()
	running := h.instances
	h.instances = map[string]*runningSim{}
	h.mu.Unlock()
	for _, rs := range running {
		if err := rs.http.Shutdown(ctx); err != nil {
			_ = rs.http.Close()
		}
		<-rs.done
		rs.srv.Close()
	}
}

// offIfZero translates an explicit 0 in the configuration (whose defaults
// were already applied by config) into the simulator's "none" (negative),
// since the simulator reads 0 as "use my default".
func offIfZero[T ~int64 | ~float64](v T) T {
	if v == 0 {
		return -1
	}
	return v
}

// SimulatedGPU is the state of one simulated GPU and of the instances that
// run on it, for the demo's GPU collector.
type SimulatedGPU struct {
	Stats     ollamasim.GPUStats
	Instances []SimulatedInstance
}

// SimulatedInstance is one simulated Ollama server on a simulated GPU.
type SimulatedInstance struct {
	Name      string
	VRAMBytes int64
}

// SimulatedGPUs returns the running simulated GPUs in a stable order (by
// name); instances without a GPU of their own name each have a private one.
func (d *Daemon) SimulatedGPUs() []SimulatedGPU {
	// Not d.mu: it is held while a reload or shutdown drains workloads.
	d.sims.mu.RLock()
	servers := make(map[string]*ollamasim.Server, len(d.sims.instances))
	for name, rs := range d.sims.instances {
		servers[name] = rs.srv
	}
	d.sims.mu.RUnlock()
	byGPU := map[*ollamasim.GPU]*SimulatedGPU{}
	var order []*ollamasim.GPU
	names := make([]string, 0, len(servers))
	for name := range servers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		srv := servers[name]
		g := srv.GPU()
		sg, ok := byGPU[g]
		if !ok {
			sg = &SimulatedGPU{Stats: g.Stats()}
			byGPU[g] = sg
			order = append(order, g)
		}
		sg.Instances = append(sg.Instances, SimulatedInstance{Name: name, VRAMBytes: srv.Stats().VRAMBytes})
	}
	out := make([]SimulatedGPU, 0, len(order))
	for _, g := range order {
		out = append(out, *byGPU[g])
	}
	slices.SortFunc(out, func(a, b SimulatedGPU) int { return strings.Compare(a.Stats.Name, b.Stats.Name) })
	return out
}
