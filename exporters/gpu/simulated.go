package gpu

import (
	"math"
	"strconv"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// SimDevice is what one simulated GPU reports.
type SimDevice struct {
	UtilizationRatio                  float64 // 0..1; NVML reports whole percents, so it is rounded
	MemoryUsedBytes, MemoryTotalBytes uint64
	Processes                         []SimProcess
}

// SimProcess is a process using a simulated GPU.
type SimProcess struct {
	PID         uint32
	MemoryBytes uint64
}

// Simulated GPUs' fixed figures; power and temperature follow utilisation
// so that a demo dashboard moves with the load.
const (
	simIdleWatts     = 50
	simLimitWatts    = 300
	simIdleCelsius   = 35
	simLoadedCelsius = 75
	simSMClockMHz    = 1980
)

// Simulated returns an nvml.Interface for the built-in demo, built on the mock package,
// whose devices report what devices() returns at each call. Device name is always
// "simulated" and UUIDs "GPU-simulated-<index>" so nobody mistakes it for a real GPU.
//
// Beyond SimDevice's fields, a simulated GPU draws 50 W plus its utilisation
// times the rest of a 300 W limit, runs at 35 °C plus 40 °C times its
// utilisation, holds its SM clock at 1980 MHz, and reports the throttle
// reason gpu_idle when its utilisation is 0. devices must be safe for
// concurrent use. Only the calls the Collector makes are simulated; others
// panic.
func Simulated(devices func() []SimDevice) nvml.Interface {
	return &simLib{
		Interface: &mock.Interface{},
		devices:   devices,
	}
}

// simLib answers the library-level calls itself instead of through
// mock.Interface's func fields, because the mock records every call it
// answers and a demo daemon runs for days. Each handle is a fresh
// mock.Device, so its records go with it.
type simLib struct {
	*mock.Interface
	devices func() []SimDevice
}

func (*simLib) Init() nvml.Return     { return nvml.SUCCESS }
func (*simLib) Shutdown() nvml.Return { return nvml.SUCCESS }

func (*simLib) Extensions() nvml.ExtendedInterface {
	return &mock.ExtendedInterface{LookupSymbolFunc: func(string) error { return nil }}
}

func (s *simLib) DeviceGetCount() (int, nvml.Return) { return len(s.devices()), nvml.SUCCESS }

func (s *simLib) DeviceGetHandleByIndex(index int) (nvml.Device, nvml.Return) {
	if index < 0 || index >= len(s.devices()) {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	// get reads the device afresh at each call; a device that has gone
	// since the handle was taken reads as lost.
	get := func() (SimDevice, nvml.Return) {
		ds := s.devices()
		if index >= len(ds) {
			return SimDevice{}, nvml.ERROR_GPU_IS_LOST
		}
		return ds[index], nvml.SUCCESS
	}
	percent := func(d SimDevice) uint32 {
		return uint32(math.Round(100 * min(max(d.UtilizationRatio, 0), 1)))
	}
	return &mock.Device{
		GetNameFunc: func() (string, nvml.Return) { return "simulated", nvml.SUCCESS },
		GetUUIDFunc: func() (string, nvml.Return) {
			return "GPU-simulated-" + strconv.Itoa(index), nvml.SUCCESS
		},
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
			d, ret := get()
			return nvml.Utilization{Gpu: percent(d)}, ret
		},
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			d, ret := get()
			free := d.MemoryTotalBytes - min(d.MemoryUsedBytes, d.MemoryTotalBytes)
			return nvml.Memory{Total: d.MemoryTotalBytes, Used: d.MemoryUsedBytes, Free: free}, ret
		},
		GetPowerUsageFunc: func() (uint32, nvml.Return) {
			d, ret := get()
			return simIdleWatts*1000 + percent(d)*(simLimitWatts-simIdleWatts)*10, ret // mW
		},
		GetEnforcedPowerLimitFunc: func() (uint32, nvml.Return) { return 1000 * simLimitWatts, nvml.SUCCESS },
		GetTemperatureFunc: func(nvml.TemperatureSensors) (uint32, nvml.Return) {
			d, ret := get()
			return simIdleCelsius + percent(d)*(simLoadedCelsius-simIdleCelsius)/100, ret
		},
		GetClockInfoFunc: func(nvml.ClockType) (uint32, nvml.Return) { return simSMClockMHz, nvml.SUCCESS },
		GetCurrentClocksEventReasonsFunc: func() (uint64, nvml.Return) {
			d, ret := get()
			if percent(d) == 0 {
				return nvml.ClocksEventReasonGpuIdle, ret
			}
			return nvml.ClocksEventReasonNone, ret
		},
		GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) {
			d, ret := get()
			out := make([]nvml.ProcessInfo, 0, len(d.Processes))
			for _, p := range d.Processes {
				out = append(out, nvml.ProcessInfo{Pid: p.PID, UsedGpuMemory: p.MemoryBytes})
			}
			return out, ret
		},
		GetGraphicsRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.SUCCESS },
	}, nvml.SUCCESS
}
