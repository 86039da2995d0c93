package gpu

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	gib      = 1 << 30
	testName = "NVIDIA H100 80GB HBM3"
	testUUID = "GPU-8d2a0f6e-0000-4000-8000-000000000001"
)

// fullDevice returns a mock device on which every call the collector makes
// succeeds, with the values that fullSeries expects.
func fullDevice() *mock.Device {
	return &mock.Device{
		GetNameFunc:             func() (string, nvml.Return) { return testName, nvml.SUCCESS },
		GetUUIDFunc:             func() (string, nvml.Return) { return testUUID, nvml.SUCCESS },
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 37, Memory: 12}, nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: 80 * gib, Used: 10 * gib, Free: 70 * gib}, nvml.SUCCESS
		},
		GetPowerUsageFunc:         func() (uint32, nvml.Return) { return 250500, nvml.SUCCESS },
		GetEnforcedPowerLimitFunc: func() (uint32, nvml.Return) { return 700000, nvml.SUCCESS },
		GetTemperatureFunc: func(s nvml.TemperatureSensors) (uint32, nvml.Return) {
			if s != nvml.TEMPERATURE_GPU {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return 61, nvml.SUCCESS
		},
		GetClockInfoFunc: func(ct nvml.ClockType) (uint32, nvml.Return) {
			if ct != nvml.CLOCK_SM {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return 1980, nvml.SUCCESS
		},
		GetCurrentClocksEventReasonsFunc: func() (uint64, nvml.Return) {
			return nvml.ClocksEventReasonSwPowerCap | nvml.ClocksThrottleReasonHwThermalSlowdown, nvml.SUCCESS
		},
		GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) {
			return []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: 1 * gib}, {Pid: 200, UsedGpuMemory: 2 * gib}}, nvml.SUCCESS
		},
		// A process in both lists is one series, not two.
		GetGraphicsRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) {
			return []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: 1 * gib}}, nvml.SUCCESS
		},
	}
}

// fullSeries is what one fullDevice at index 0 exports, errors_total and the
// scrape duration aside, without process attribution.
func fullSeries() map[string]float64 {
	dev := fmt.Sprintf(`gpu="0",name=%q,uuid=%q`, testName, testUUID)
	s := map[string]float64{
		MetricCollectorUp:                          1,
		MetricUtilizationRatio + "{" + dev + "}":   0.37,
		MetricMemoryUsedBytes + "{" + dev + "}":    10 * gib,
		MetricMemoryTotalBytes + "{" + dev + "}":   80 * gib,
		MetricPowerWatts + "{" + dev + "}":         250.5,
		MetricPowerLimitWatts + "{" + dev + "}":    700,
		MetricTemperatureCelsius + "{" + dev + "}": 61,
		MetricSMClockHertz + "{" + dev + "}":       1.98e9,
		MetricProcessMemoryBytes + fmt.Sprintf(`{gpu="0",pid="100",target="",uuid=%q}`, testUUID): 1 * gib,
		MetricProcessMemoryBytes + fmt.Sprintf(`{gpu="0",pid="200",target="",uuid=%q}`, testUUID): 2 * gib,
	}
	for _, r := range ThrottleReasons {
		v := 0.0
		if r.Name == "sw_power_cap" || r.Name == "hw_thermal_slowdown" {
			v = 1
		}
		s[throttleKey("0", testName, testUUID, r.Name)] = v
	}
	return s
}

// throttleKey is the series key (as series returns it) of one throttle reason.
func throttleKey(gpu, name, uuid, reason string) string {
	return fmt.Sprintf(`%s{gpu=%q,name=%q,reason=%q,uuid=%q}`, MetricThrottleReasons, gpu, name, reason, uuid)
}

// newLib returns a mock library whose Init succeeds, that has every symbol,
// and whose devices are devs.
func newLib(devs ...nvml.Device) *mock.Interface {
	return &mock.Interface{
		InitFunc:     func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc: func() nvml.Return { return nvml.SUCCESS },
		ExtensionsFunc: func() nvml.ExtendedInterface {
			return &mock.ExtendedInterface{LookupSymbolFunc: func(string) error { return nil }}
		},
		DeviceGetCountFunc: func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i < 0 || i >= len(devs) {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return devs[i], nvml.SUCCESS
		},
	}
}

// missingSymbols makes lib's LookupSymbol fail for names.
func missingSymbols(lib *mock.Interface, names ...string) {
	lib.ExtensionsFunc = func() nvml.ExtendedInterface {
		return &mock.ExtendedInterface{LookupSymbolFunc: func(s string) error {
			for _, n := range names {
				if s == n {
					return errors.New("undefined symbol: " + s)
				}
			}
			return nil
		}}
	}
}

// register returns a pedantic registry holding c.
func register(t *testing.T, c *Collector) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatalf("register: %v", err)
	}
	return reg
}

// series gathers reg and returns every sample as `name{a="x",b="y"}` →
// value (labels sorted), leaving out the scrape duration and errors_total.
func series(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case MetricScrapeDurationSeconds, MetricErrorsTotal:
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			sort.Strings(labels)
			key := mf.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			v := m.GetGauge().GetValue()
			if m.GetCounter() != nil {
				v = m.GetCounter().GetValue()
			}
			out[key] = v
		}
	}
	return out
}

// names returns the metric families reg exports.
func names(t *testing.T, reg prometheus.Gatherer) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var out []string
	for _, mf := range mfs {
		out = append(out, mf.GetName())
	}
	return out
}

// errorCounts returns errors_total by call, only the non-zero ones.
func errorCounts(c *Collector) map[string]float64 {
	out := map[string]float64{}
	for _, call := range Calls {
		if v := testutil.ToFloat64(c.errors.WithLabelValues(call)); v != 0 {
			out[call] = v
		}
	}
	return out
}

// diff describes how got differs from want.
func diff(got, want map[string]float64) string {
	var b strings.Builder
	keys := map[string]bool{}
	for k := range got {
		keys[k] = true
	}
	for k := range want {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		g, gok := got[k]
		w, wok := want[k]
		switch {
		case !gok:
			fmt.Fprintf(&b, "\n  missing %s (want %g)", k, w)
		case !wok:
			fmt.Fprintf(&b, "\n  unexpected %s = %g", k, g)
		case g != w:
			fmt.Fprintf(&b, "\n  %s = %g, want %g", k, g, w)
		}
	}
	return b.String()
}
