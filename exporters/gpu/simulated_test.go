package gpu

import (
	"maps"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

func TestSimulated(t *testing.T) {
	var mu sync.Mutex
	devs := []SimDevice{{
		UtilizationRatio: 0.25, MemoryUsedBytes: 2 * gib, MemoryTotalBytes: 8 * gib,
		Processes: []SimProcess{{PID: 4242, MemoryBytes: 2 * gib}},
	}}
	set := func(d []SimDevice) {
		mu.Lock()
		defer mu.Unlock()
		devs = d
	}
	lib := Simulated(func() []SimDevice {
		mu.Lock()
		defer mu.Unlock()
		return devs
	})
	c := New(lib, Options{Processes: func(pid uint32) (string, bool) { return "sim", pid == 4242 }})
	defer c.Close()
	reg := register(t, c)

	dev := func(i string) string { return `{gpu="` + i + `",name="simulated",uuid="GPU-simulated-` + i + `"}` }
	throttle := func(i string, idle bool) map[string]float64 {
		m := map[string]float64{}
		for _, r := range ThrottleReasons {
			v := 0.0
			if r.Name == "gpu_idle" && idle {
				v = 1
			}
			m[throttleKey(i, "simulated", "GPU-simulated-"+i, r.Name)] = v
		}
		return m
	}
	want := map[string]float64{
		MetricCollectorUp:                   1,
		MetricUtilizationRatio + dev("0"):   0.25,
		MetricMemoryUsedBytes + dev("0"):    2 * gib,
		MetricMemoryTotalBytes + dev("0"):   8 * gib,
		MetricPowerWatts + dev("0"):         50 + 0.25*250,
		MetricPowerLimitWatts + dev("0"):    300,
		MetricTemperatureCelsius + dev("0"): 35 + 10,
		MetricSMClockHertz + dev("0"):       1.98e9,
		MetricProcessMemoryBytes + `{gpu="0",pid="4242",target="sim",uuid="GPU-simulated-0"}`: 2 * gib,
	}
	maps.Copy(want, throttle("0", false))
	if got := series(t, reg); !maps.Equal(got, want) {
		t.Fatalf("first scrape:%s", diff(got, want))
	}

	// The next scrape follows the closure: device 0 goes idle and frees
	// its memory, device 1 appears.
	set([]SimDevice{
		{UtilizationRatio: 0, MemoryTotalBytes: 8 * gib},
		{UtilizationRatio: 1, MemoryUsedBytes: 24 * gib, MemoryTotalBytes: 24 * gib, Processes: []SimProcess{{PID: 7, MemoryBytes: 24 * gib}}},
	})
	want = map[string]float64{
		MetricCollectorUp:                   1,
		MetricUtilizationRatio + dev("0"):   0,
		MetricMemoryUsedBytes + dev("0"):    0,
		MetricMemoryTotalBytes + dev("0"):   8 * gib,
		MetricPowerWatts + dev("0"):         50,
		MetricPowerLimitWatts + dev("0"):    300,
		MetricTemperatureCelsius + dev("0"): 35,
		MetricSMClockHertz + dev("0"):       1.98e9,
		MetricUtilizationRatio + dev("1"):   1,
		MetricMemoryUsedBytes + dev("1"):    24 * gib,
		MetricMemoryTotalBytes + dev("1"):   24 * gib,
		MetricPowerWatts + dev("1"):         300,
		MetricPowerLimitWatts + dev("1"):    300,
		MetricTemperatureCelsius + dev("1"): 75,
		MetricSMClockHertz + dev("1"):       1.98e9,
		MetricProcessMemoryBytes + `{gpu="1",pid="7",target="",uuid="GPU-simulated-1"}`: 24 * gib,
	}
	maps.Copy(want, throttle("0", true))
	maps.Copy(want, throttle("1", false))
	if got := series(t, reg); !maps.Equal(got, want) {
		t.Fatalf("second scrape:%s", diff(got, want))
	}
	if got := errorCounts(c); len(got) != 0 {
		t.Errorf("errors_total: %v", got)
	}
}

// TestSimulatedShrinks checks a handle whose device has gone: its calls
// answer ERROR_GPU_IS_LOST instead of panicking on an index out of range.
func TestSimulatedShrinks(t *testing.T) {
	var mu sync.Mutex
	devs := []SimDevice{{}, {}}
	lib := Simulated(func() []SimDevice {
		mu.Lock()
		defer mu.Unlock()
		return devs
	})
	if ret := lib.Init(); ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	d, ret := lib.DeviceGetHandleByIndex(1)
	if ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	mu.Lock()
	devs = devs[:1]
	mu.Unlock()
	if _, ret := d.GetMemoryInfo(); ret != nvml.ERROR_GPU_IS_LOST {
		t.Errorf("GetMemoryInfo on a gone device: %v", ret)
	}
	if _, ret := lib.DeviceGetHandleByIndex(1); ret != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("DeviceGetHandleByIndex(1) of 1: %v", ret)
	}
	if name, _ := d.GetName(); name != "simulated" {
		t.Errorf("name %q", name)
	}
	if ret := lib.Shutdown(); ret != nvml.SUCCESS {
		t.Error(ret)
	}
}
