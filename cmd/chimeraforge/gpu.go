package main

import (
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"go.uber.org/zap"

	"github.com/chimeraforge/chimeraforge/config"
	"github.com/chimeraforge/chimeraforge/daemon"
	"github.com/chimeraforge/chimeraforge/exporters/gpu"
)

// simPIDBase numbers the simulated "processes" (one per simulated Ollama
// instance) far above real PIDs' usual range; they are labelled as such by
// the simulated GPU's name.
const simPIDBase = 4_000_000

// newGPUCollector picks the GPU the collector reads: the machine's NVML when
// it initialises; otherwise, when the configuration simulates GPUs (the
// built-in demo), the simulated ones, so the GPU panels have data anywhere;
// otherwise NVML again, which then exports chimeraforge_gpu_collector_up 0
// after one log line. Per-process memory is attributed to the targets that
// are local Ollama servers (loopback URLs) or simulated instances.
func newGPUCollector(cfg *config.Config, d *daemon.Daemon, log *zap.Logger) *gpu.Collector {
	real := gpu.Real()
	if ret := real.Init(); ret == nvml.SUCCESS {
		_ = real.Shutdown()
		return gpu.New(real, gpu.Options{Logger: log, Processes: gpu.OllamaProcesses(loopbackPorts(cfg))})
	}
	if len(cfg.Simulation.Instances) == 0 {
		return gpu.New(real, gpu.Options{Logger: log})
	}
	log.Info("no NVIDIA GPU here: the GPU collector reads the simulated GPUs (name=\"simulated\")")
	sim := &simulatedGPUs{daemon: d, last: map[string]busySample{}}
	owner := map[string]string{} // simulated instance → target that points at it
	for _, t := range cfg.Targets {
		if name, ok := t.SimName(); ok {
			owner[name] = t.Name
		}
	}
	return gpu.New(gpu.Simulated(sim.devices), gpu.Options{Logger: log, Processes: sim.processes(owner)})
}

// loopbackPorts maps each target served on this machine to its port.
func loopbackPorts(cfg *config.Config) map[string]int {
	out := map[string]int{}
	for _, t := range cfg.Targets {
		u, err := url.Parse(t.URL)
		if err != nil {
			continue
		}
		host := u.Hostname()
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			continue
		}
		port, err := strconv.Atoi(u.Port())
		if err != nil {
			continue
		}
		out[t.Name] = port
	}
	return out
}

// simulatedGPUs turns the simulator's GPU state into simulated NVML
// devices: utilization is the share of wall time since the previous read
// that the GPU was decoding, memory follows the loaded models.
type simulatedGPUs struct {
	daemon *daemon.Daemon

	mu    sync.Mutex
	last  map[string]busySample // by GPU name
	names []string              // simulated instance per PID offset
}

type busySample struct {
	at   time.Time
	busy time.Duration
}

func (s *simulatedGPUs) devices() []gpu.SimDevice {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.names = s.names[:0]
	var out []gpu.SimDevice
	for _, g := range s.daemon.SimulatedGPUs() {
		dev := gpu.SimDevice{MemoryUsedBytes: uint64(max(0, g.Stats.UsedMemoryBytes)), MemoryTotalBytes: uint64(max(0, g.Stats.MemoryBytes))}
		if prev, ok := s.last[g.Stats.Name]; ok && now.After(prev.at) {
			dev.UtilizationRatio = min(1, max(0, float64(g.Stats.BusyTime-prev.busy)/float64(now.Sub(prev.at))))
		}
		s.last[g.Stats.Name] = busySample{at: now, busy: g.Stats.BusyTime}
		for _, in := range g.Instances {
			if in.VRAMBytes <= 0 {
				continue
			}
			dev.Processes = append(dev.Processes, gpu.SimProcess{PID: uint32(simPIDBase + len(s.names)), MemoryBytes: uint64(in.VRAMBytes)})
			s.names = append(s.names, in.Name)
		}
		out = append(out, dev)
	}
	return out
}

func (s *simulatedGPUs) processes(owner map[string]string) func(pid uint32) (string, bool) {
	return func(pid uint32) (string, bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		i := int(pid) - simPIDBase
		if i < 0 || i >= len(s.names) {
			return "", false
		}
		t, ok := owner[s.names[i]]
		return t, ok
	}
}
