package gpu

import (
	"bytes"
	"maps"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/chimeraforge/chimeraforge/internal/testtool"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestInitFailure(t *testing.T) {
	for _, ret := range []nvml.Return{nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED, nvml.ERROR_NO_PERMISSION} {
		t.Run(ret.Error(), func(t *testing.T) {
			core, logs := observer.New(zap.DebugLevel)
			// Only InitFunc is set: any other call, Shutdown included,
			// would panic.
			lib := &mock.Interface{InitFunc: func() nvml.Return { return ret }}
			c := New(lib, Options{Logger: zap.New(core)})
			reg := register(t, c)
			for range 3 {
				got := series(t, reg)
				if want := map[string]float64{MetricCollectorUp: 0}; !maps.Equal(got, want) {
					t.Fatalf("series:%s", diff(got, want))
				}
				if got, want := names(t, reg), []string{MetricCollectorUp, MetricScrapeDurationSeconds}; !slices.Equal(got, want) {
					t.Fatalf("families %v, want %v", got, want)
				}
			}
			c.Close()
			if got := series(t, reg); got[MetricCollectorUp] != 0 {
				t.Errorf("after Close: up = %g", got[MetricCollectorUp])
			}
			if n := logs.Len(); n != 1 {
				t.Fatalf("%d log lines, want 1: %v", n, logs.All())
			}
			if e := logs.All()[0]; !strings.Contains(e.Message, "GPU metrics disabled") || e.ContextMap()["nvml"] != ret.Error() {
				t.Errorf("log line %q %v", e.Message, e.ContextMap())
			}
			if n := len(lib.InitCalls()); n != 1 {
				t.Errorf("Init called %d times, want 1", n)
			}
		})
	}
}

// TestReal runs the system NVML: where libnvidia-ml.so.1 is absent (CI)
// it must degrade to up 0 with one log line, not crash.
func TestReal(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	c := New(Real(), Options{Logger: zap.New(core)})
	defer c.Close()
	reg := register(t, c)
	for range 2 {
		series(t, reg)
	}
	if up := series(t, reg)[MetricCollectorUp]; up == 1 {
		t.Logf("NVML initialised on this machine: %v", series(t, reg))
		return
	}
	if n := logs.Len(); n != 1 {
		t.Errorf("%d log lines, want 1: %v", n, logs.All())
	}
	t.Logf("without NVML: %s", logs.All()[0].ContextMap()["nvml"])
}

func TestAllSupported(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	lib := newLib(fullDevice())
	c := New(lib, Options{Logger: zap.New(core)})
	reg := register(t, c)
	for range 2 { // a second scrape gives the same series
		if got, want := series(t, reg), fullSeries(); !maps.Equal(got, want) {
			t.Fatalf("series:%s", diff(got, want))
		}
	}
	if got := errorCounts(c); len(got) != 0 {
		t.Errorf("errors_total: %v", got)
	}
	// Every call's counter is exported from the start, at 0.
	if n := testutil.CollectAndCount(c, MetricErrorsTotal); n != len(Calls) {
		t.Errorf("%d errors_total series, want %d", n, len(Calls))
	}
	if n := logs.Len(); n != 0 {
		t.Errorf("log lines: %v", logs.All())
	}
	c.Close()
	c.Close()
	if n := len(lib.ShutdownCalls()); n != 1 {
		t.Errorf("Shutdown called %d times, want 1", n)
	}
	if got, want := series(t, reg), map[string]float64{MetricCollectorUp: 0}; !maps.Equal(got, want) {
		t.Errorf("after Close:%s", diff(got, want))
	}
}

// TestDeviceCallFails makes each device call fail, first as not supported
// (the series goes, silently), then with another error (the series goes and
// errors_total{call} counts it).
func TestDeviceCallFails(t *testing.T) {
	has := func(subs ...string) func(string) bool {
		return func(key string) bool {
			for _, s := range subs {
				if strings.Contains(key, s) {
					return true
				}
			}
			return false
		}
	}
	cases := []struct {
		name string
		call string
		fail func(d *mock.Device, ret nvml.Return)
		drop func(key string) bool // series that go
		// rename rewrites the keys of the series that stay, for a label
		// that becomes empty.
		rename func(key string) string
	}{
		{
			name: "utilization", call: CallDeviceGetUtilizationRates,
			fail: func(d *mock.Device, ret nvml.Return) {
				d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, ret }
			},
			drop: has(MetricUtilizationRatio),
		},
		{
			name: "memory", call: CallDeviceGetMemoryInfo,
			fail: func(d *mock.Device, ret nvml.Return) {
				d.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, ret }
			},
			drop: has(MetricMemoryUsedBytes, MetricMemoryTotalBytes),
		},
		{
			name: "power", call: CallDeviceGetPowerUsage,
			fail: func(d *mock.Device, ret nvml.Return) {
				d.GetPowerUsageFunc = func() (uint32, nvml.Return) { return 0, ret }
			},
			drop: has(MetricPowerWatts + "{"),
		},
		{
			name: "power limit", call: CallDeviceGetEnforcedPowerLimit,
			fail: func(d *mock.Device, ret nvml.Return) {
				d.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) { return 0, ret }
			},
			drop: has(MetricPowerLimitWatts),
		},
		{
			name: "temperature", call: CallDeviceGetTemperature,
			fail: func(d *mock.Device, ret nvml.Return) {
				d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 0, ret }
			},
			drop: has(MetricTemperatureCelsius),
		},
		{
			name: "sm clock", call: CallDeviceGetClockInfo,
			fail: func(d *mock.Device, ret nvml.Return) {
				d.GetClockInfoFunc = func(nvml.ClockType) (uint32, nvml.Return) { return 0, ret }
			},
			drop: has(MetricSMClockHertz),
		},
		{
			name: "throttle reasons", call: CallDeviceGetCurrentClocksEventReasons,
			fail: func(d *mock.Device, ret nvml.Return) {
				d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) { return 0, ret }
			},
			drop: has(MetricThrottleReasons),
		},
		{
			// pid 100 is also in the graphics list, so it stays.
			name: "compute processes", call: CallDeviceGetComputeRunningProcesses,
			fail: func(d *mock.Device, ret nvml.Return) {
				d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, ret }
			},
			drop: has(`pid="200"`),
		},
		{
			name: "graphics processes", call: CallDeviceGetGraphicsRunningProcesses,
			fail: func(d *mock.Device, ret nvml.Return) {
				d.GetGraphicsRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, ret }
			},
			drop: has(),
		},
		{
			name: "name", call: CallDeviceGetName,
			fail: func(d *mock.Device, ret nvml.Return) {
				d.GetNameFunc = func() (string, nvml.Return) { return "", ret }
			},
			drop:   has(),
			rename: func(k string) string { return strings.Replace(k, `name="`+testName+`"`, `name=""`, 1) },
		},
		{
			name: "uuid", call: CallDeviceGetUUID,
			fail: func(d *mock.Device, ret nvml.Return) {
				d.GetUUIDFunc = func() (string, nvml.Return) { return "", ret }
			},
			drop:   has(),
			rename: func(k string) string { return strings.Replace(k, `uuid="`+testUUID+`"`, `uuid=""`, 1) },
		},
	}
	for _, tc := range cases {
		for _, ret := range []nvml.Return{nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_UNKNOWN, nvml.ERROR_GPU_IS_LOST} {
			t.Run(tc.name+"/"+ret.Error(), func(t *testing.T) {
				core, logs := observer.New(zap.InfoLevel) // debug lines only
				d := fullDevice()
				tc.fail(d, ret)
				c := New(newLib(d), Options{Logger: zap.New(core)})
				reg := register(t, c)
				want := map[string]float64{}
				for k, v := range fullSeries() {
					if tc.drop(k) {
						continue
					}
					if tc.rename != nil {
						k = tc.rename(k)
					}
					want[k] = v
				}
				for range 2 {
					if got := series(t, reg); !maps.Equal(got, want) {
						t.Fatalf("series:%s", diff(got, want))
					}
				}
				wantErrors := map[string]float64{}
				if ret != nvml.ERROR_NOT_SUPPORTED {
					wantErrors[tc.call] = 2 // two scrapes
				}
				if got := errorCounts(c); !maps.Equal(got, wantErrors) {
					t.Errorf("errors_total %v, want %v", got, wantErrors)
				}
				if logs.Len() != 0 {
					t.Errorf("log lines above debug: %v", logs.All())
				}
			})
		}
	}
}

func TestDeviceListFails(t *testing.T) {
	t.Run("count", func(t *testing.T) {
		lib := newLib(fullDevice())
		lib.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
		c := New(lib, Options{})
		reg := register(t, c)
		if got, want := series(t, reg), map[string]float64{MetricCollectorUp: 1}; !maps.Equal(got, want) {
			t.Errorf("series:%s", diff(got, want))
		}
		if got, want := errorCounts(c), map[string]float64{CallDeviceGetCount: 1}; !maps.Equal(got, want) {
			t.Errorf("errors_total %v, want %v", got, want)
		}
	})
	t.Run("one handle of two", func(t *testing.T) {
		lib := newLib(fullDevice(), fullDevice())
		lib.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
			if i == 0 {
				return nil, nvml.ERROR_GPU_IS_LOST
			}
			return fullDevice(), nvml.SUCCESS
		}
		c := New(lib, Options{})
		reg := register(t, c)
		want := map[string]float64{}
		for k, v := range fullSeries() {
			want[strings.Replace(k, `gpu="0"`, `gpu="1"`, 1)] = v
		}
		if got := series(t, reg); !maps.Equal(got, want) {
			t.Errorf("series:%s", diff(got, want))
		}
		if got, want := errorCounts(c), map[string]float64{CallDeviceGetHandleByIndex: 1}; !maps.Equal(got, want) {
			t.Errorf("errors_total %v, want %v", got, want)
		}
	})
}

// TestMissingSymbols covers older and newer drivers: without
// nvmlDeviceGetCurrentClocksEventReasons the deprecated throttle call is
// used; without nvmlDeviceGetTemperature the temperature is left out. The
// mock panics if the absent function were called.
func TestMissingSymbols(t *testing.T) {
	d := fullDevice()
	d.GetCurrentClocksThrottleReasonsFunc = d.GetCurrentClocksEventReasonsFunc
	d.GetCurrentClocksEventReasonsFunc = nil
	d.GetTemperatureFunc = nil
	lib := newLib(d)
	missingSymbols(lib, CallDeviceGetCurrentClocksEventReasons, CallDeviceGetTemperature)
	c := New(lib, Options{})
	reg := register(t, c)
	want := fullSeries()
	for k := range want {
		if strings.HasPrefix(k, MetricTemperatureCelsius) {
			delete(want, k)
		}
	}
	if got := series(t, reg); !maps.Equal(got, want) {
		t.Errorf("series:%s", diff(got, want))
	}

	d.GetCurrentClocksThrottleReasonsFunc = func() (uint64, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	series(t, reg)
	if got, want := errorCounts(c), map[string]float64{CallDeviceGetCurrentClocksThrottleReasons: 1}; !maps.Equal(got, want) {
		t.Errorf("errors_total %v, want %v", got, want)
	}
}

func TestThrottleReasons(t *testing.T) {
	all := []string{}
	for _, r := range ThrottleReasons {
		all = append(all, r.Name)
	}
	cases := []struct {
		bits uint64
		want []string // reasons at 1
	}{
		{nvml.ClocksEventReasonNone, nil},
		{nvml.ClocksEventReasonGpuIdle, []string{"gpu_idle"}},
		{nvml.ClocksEventReasonApplicationsClocksSetting, []string{"applications_clocks_setting"}},
		{nvml.ClocksEventReasonSwPowerCap, []string{"sw_power_cap"}},
		{nvml.ClocksThrottleReasonHwSlowdown, []string{"hw_slowdown"}},
		{nvml.ClocksEventReasonSyncBoost, []string{"sync_boost"}},
		{nvml.ClocksEventReasonSwThermalSlowdown, []string{"sw_thermal_slowdown"}},
		{nvml.ClocksThrottleReasonHwThermalSlowdown, []string{"hw_thermal_slowdown"}},
		{nvml.ClocksThrottleReasonHwPowerBrakeSlowdown, []string{"hw_power_brake_slowdown"}},
		{nvml.ClocksEventReasonDisplayClockSetting, []string{"display_clock_setting"}},
		{nvml.ClocksEventReasonSwPowerCap | nvml.ClocksThrottleReasonHwSlowdown, []string{"sw_power_cap", "hw_slowdown"}},
		{nvml.ClocksEventReasonBoardLimit | nvml.ClocksEventReasonReliability | 1<<40, nil}, // unknown bits are ignored
		{nvml.ClocksEventReasonAll, all},
	}
	for _, tc := range cases {
		d := fullDevice()
		d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) { return tc.bits, nvml.SUCCESS }
		c := New(newLib(d), Options{})
		got := map[string]float64{}
		for k, v := range series(t, register(t, c)) {
			for _, r := range all {
				if k == throttleKey("0", testName, testUUID, r) {
					got[r] = v
				}
			}
		}
		want := map[string]float64{}
		for _, r := range all {
			want[r] = 0
		}
		for _, r := range tc.want {
			want[r] = 1
		}
		if !maps.Equal(got, want) {
			t.Errorf("bits %#x:%s", tc.bits, diff(got, want))
		}
	}
}

func TestProcessMemory(t *testing.T) {
	key := func(pid, target string) string {
		return MetricProcessMemoryBytes + `{gpu="0",pid="` + pid + `",target="` + target + `",uuid="` + testUUID + `"}`
	}
	cases := []struct {
		name      string
		processes func(uint32) (string, bool)
		compute   []nvml.ProcessInfo
		graphics  []nvml.ProcessInfo
		want      map[string]float64
	}{
		{
			name: "no attribution",
			compute: []nvml.ProcessInfo{
				{Pid: 100, UsedGpuMemory: 1 * gib}, {Pid: 200, UsedGpuMemory: 2 * gib},
			},
			want: map[string]float64{key("100", ""): 1 * gib, key("200", ""): 2 * gib},
		},
		{
			name: "attribution",
			processes: func(pid uint32) (string, bool) {
				if pid == 100 {
					return "gpu-box", true
				}
				return "ignored", false
			},
			compute: []nvml.ProcessInfo{
				{Pid: 100, UsedGpuMemory: 1 * gib}, {Pid: 200, UsedGpuMemory: 2 * gib},
			},
			want: map[string]float64{key("100", "gpu-box"): 1 * gib, key("200", ""): 2 * gib},
		},
		{
			name: "one pid in two MIG instances is summed",
			compute: []nvml.ProcessInfo{
				{Pid: 100, UsedGpuMemory: 1 * gib, GpuInstanceId: 1}, {Pid: 100, UsedGpuMemory: 3 * gib, GpuInstanceId: 2},
			},
			want: map[string]float64{key("100", ""): 4 * gib},
		},
		{
			name:     "compute and graphics: the larger, once",
			compute:  []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: 1 * gib}},
			graphics: []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: 2 * gib}, {Pid: 300, UsedGpuMemory: 5}},
			want:     map[string]float64{key("100", ""): 2 * gib, key("300", ""): 5},
		},
		{
			name:    "memory not available is left out",
			compute: []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: ^uint64(0)}, {Pid: 200, UsedGpuMemory: 0}},
			want:    map[string]float64{key("200", ""): 0},
		},
		{
			name: "no processes",
			want: map[string]float64{},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := fullDevice()
			d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return tc.compute, nvml.SUCCESS }
			d.GetGraphicsRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return tc.graphics, nvml.SUCCESS }
			c := New(newLib(d), Options{Processes: tc.processes})
			got := map[string]float64{}
			for k, v := range series(t, register(t, c)) {
				if strings.HasPrefix(k, MetricProcessMemoryBytes) {
					got[k] = v
				}
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("series:%s", diff(got, tc.want))
			}
		})
	}
}

// TestConcurrentCollectAndClose runs scrapes beside Close under -race: no
// NVML call may run after Shutdown.
func TestConcurrentCollectAndClose(t *testing.T) {
	var mu sync.Mutex
	shut := false
	d := fullDevice()
	get := d.GetUtilizationRatesFunc
	d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		mu.Lock()
		defer mu.Unlock()
		if shut {
			t.Error("NVML called after Shutdown")
		}
		return get()
	}
	lib := newLib(d, d)
	lib.ShutdownFunc = func() nvml.Return {
		mu.Lock()
		defer mu.Unlock()
		shut = true
		return nvml.SUCCESS
	}
	c := New(lib, Options{Processes: func(uint32) (string, bool) { return "t", true }})
	reg := register(t, c)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 20 {
				if _, err := reg.Gather(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Go(c.Close)
	wg.Wait()
	if got := series(t, reg)[MetricCollectorUp]; got != 0 {
		t.Errorf("up after Close = %g", got)
	}
}

// exposition renders reg as /metrics serves it in the text format.
func exposition(t *testing.T, c *Collector) []byte {
	t.Helper()
	rr := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", "text/plain")
	promhttp.HandlerFor(register(t, c), promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).ServeHTTP(rr, req)
	if rr.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rr.Code, rr.Body)
	}
	return rr.Body.Bytes()
}

func lintCollectors(t *testing.T) map[string]*Collector {
	full := New(newLib(fullDevice(), fullDevice()), Options{Processes: func(uint32) (string, bool) { return "local", true }})
	down := New(&mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}, Options{})
	sim := New(Simulated(func() []SimDevice {
		return []SimDevice{{UtilizationRatio: 0.5, MemoryUsedBytes: gib, MemoryTotalBytes: 8 * gib, Processes: []SimProcess{{PID: 1, MemoryBytes: gib}}}}
	}), Options{})
	t.Cleanup(sim.Close)
	t.Cleanup(full.Close)
	return map[string]*Collector{"full": full, "down": down, "simulated": sim}
}

func TestLint(t *testing.T) {
	for name, c := range lintCollectors(t) {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s: %s", name, p.Metric, p.Text)
		}
	}
}

func TestPromtool(t *testing.T) {
	promtool := testtool.LookPath(t, "promtool", "prometheus")
	for name, c := range lintCollectors(t) {
		cmd := exec.CommandContext(t.Context(), promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(exposition(t, c))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: promtool check metrics: %v\n%s", name, err, out)
		}
	}
}
