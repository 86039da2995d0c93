// Package gpu exports NVIDIA GPU state read through NVML: utilisation,
// memory, power, temperature, SM clock, throttle reasons, and the GPU memory
// of each process, attributed to the Ollama target it serves.
//
// The collector degrades instead of failing: without the NVML library, a
// driver or a GPU it says so once in the log and exports only
// chimeraforge_gpu_collector_up 0; a metric a device does not support is
// left out for that device; any other failed call leaves out that one
// series and counts chimeraforge_gpu_errors_total{call}.
package gpu

import (
	"strconv"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Options configures a Collector.
type Options struct {
	Logger *zap.Logger
	// Processes maps a PID to the Ollama target it serves, for per-process memory
	// attribution; nil means no attribution (label target="").
	Processes func(pid uint32) (target string, ok bool)
}

// Collector is a prometheus.Collector over an NVML library.
type Collector struct {
	lib       nvml.Interface
	log       *zap.Logger
	processes func(pid uint32) (string, bool)

	// eventReasons is true when the library has
	// nvmlDeviceGetCurrentClocksEventReasons (drivers from R535); older
	// ones have only the deprecated ...ThrottleReasons. temperature is
	// false when the library lacks nvmlDeviceGetTemperature, deprecated
	// since NVML 13.
	eventReasons, temperature bool

	// mu is held for reading by Collect and for writing by Close, so that
	// no NVML call runs during or after Shutdown.
	mu    sync.RWMutex
	ready bool // Init succeeded and Close has not run

	errors *prometheus.CounterVec

	upDesc, durationDesc, utilDesc, memUsedDesc, memTotalDesc, powerDesc,
	powerLimitDesc, tempDesc, clockDesc, throttleDesc, procMemDesc *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// Real returns the system NVML (nvml.New()). Nothing is loaded until
// New calls its Init, which fails cleanly where libnvidia-ml.so.1 is absent.
func Real() nvml.Interface { return nvml.New() }

// New returns a collector for lib. It calls lib.Init once; if that fails (no library,
// no driver, no GPU) it logs ONE line and the collector exports only
// chimeraforge_gpu_collector_up 0 (plus its scrape duration) — never a crash, never a
// log line per scrape. Close calls Shutdown.
//
// After a successful Init, New asks lib.Extensions().LookupSymbol whether
// the library has nvmlDeviceGetCurrentClocksEventReasons, falling back to
// the deprecated nvmlDeviceGetCurrentClocksThrottleReasons where it does
// not, and nvmlDeviceGetTemperature, leaving the temperature out where it
// does not: calling a symbol the library lacks would crash the process.
func New(lib nvml.Interface, o Options) *Collector {
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	device := []string{LabelGPU, LabelUUID, LabelName}
	gauge := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	c := &Collector{
		lib:       lib,
		log:       log,
		processes: o.Processes,
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricErrorsTotal,
			Help: "NVML calls that failed with an error other than 'not supported', by NVML function.",
		}, []string{LabelCall}),
		upDesc:         gauge(MetricCollectorUp, "1 if NVML initialised and the GPU collector reads devices, 0 if it is disabled (no library, driver or GPU)."),
		durationDesc:   gauge(MetricScrapeDurationSeconds, "Time the GPU collector took to read NVML on this scrape."),
		utilDesc:       gauge(MetricUtilizationRatio, "Fraction of the last sample period during which a kernel ran on the GPU (NVML utilization.gpu / 100).", device...),
		memUsedDesc:    gauge(MetricMemoryUsedBytes, "GPU memory in use (allocated), as NVML reports it.", device...),
		memTotalDesc:   gauge(MetricMemoryTotalBytes, "Total GPU memory.", device...),
		powerDesc:      gauge(MetricPowerWatts, "Power drawn by the GPU and its memory.", device...),
		powerLimitDesc: gauge(MetricPowerLimitWatts, "Power limit the driver enforces on the GPU.", device...),
		tempDesc:       gauge(MetricTemperatureCelsius, "GPU core temperature.", device...),
		clockDesc:      gauge(MetricSMClockHertz, "Current streaming multiprocessor (SM) clock.", device...),
		throttleDesc:   gauge(MetricThrottleReasons, "1 if this reason currently holds the GPU clocks down, else 0.", append(device, LabelReason)...),
		procMemDesc: gauge(MetricProcessMemoryBytes, "GPU memory used by a process running on the GPU, with the Ollama target it serves (target=\"\" when unknown).",
			LabelGPU, LabelUUID, LabelPID, LabelTarget),
	}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		log.Info("GPU metrics disabled: NVML did not initialise (no NVIDIA library, driver or GPU)", zap.Stringer("nvml", ret))
		return c
	}
	c.ready = true
	ext := lib.Extensions()
	c.eventReasons = ext.LookupSymbol(CallDeviceGetCurrentClocksEventReasons) == nil
	c.temperature = ext.LookupSymbol(CallDeviceGetTemperature) == nil
	for _, call := range Calls {
		c.errors.WithLabelValues(call)
	}
	return c
}

// Close shuts NVML down (when New initialised it). The collector then exports
// chimeraforge_gpu_collector_up 0. Close waits for a running Collect and
// may be called more than once.
func (c *Collector) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ready {
		return
	}
	c.ready = false
	if ret := c.lib.Shutdown(); ret != nvml.SUCCESS {
		c.log.Debug("NVML shutdown failed", zap.Stringer("nvml", ret))
	}
}

// Describe sends the descriptors of every metric the collector can export.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.upDesc, c.durationDesc, c.utilDesc, c.memUsedDesc, c.memTotalDesc, c.powerDesc,
		c.powerLimitDesc, c.tempDesc, c.clockDesc, c.throttleDesc, c.procMemDesc,
	} {
		ch <- d
	}
	c.errors.Describe(ch)
}

// Collect reads every device through NVML and sends its metrics. It is safe
// for concurrent use; each scrape makes a fixed number of local NVML calls
// per device.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	start := time.Now()
	c.mu.RLock()
	up := c.ready
	if up {
		c.collectDevices(ch)
	}
	c.mu.RUnlock()
	ch <- prometheus.MustNewConstMetric(c.upDesc, prometheus.GaugeValue, boolFloat(up))
	if up {
		c.errors.Collect(ch)
	}
	ch <- prometheus.MustNewConstMetric(c.durationDesc, prometheus.GaugeValue, time.Since(start).Seconds())
}

// ok reports whether ret is SUCCESS. A call the device or driver does not
// support is silently skipped; any other failure is counted and logged at
// debug level.
func (c *Collector) ok(call, gpu string, ret nvml.Return) bool {
	switch ret {
	case nvml.SUCCESS:
		return true
	case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_FUNCTION_NOT_FOUND:
		return false
	}
	c.errors.WithLabelValues(call).Inc()
	c.log.Debug("NVML call failed", zap.String("call", call), zap.String("gpu", gpu), zap.Stringer("nvml", ret))
	return false
}

func (c *Collector) collectDevices(ch chan<- prometheus.Metric) {
	n, ret := c.lib.DeviceGetCount()
	if !c.ok(CallDeviceGetCount, "", ret) {
		return
	}
	for i := range n {
		gpu := strconv.Itoa(i)
		dev, ret := c.lib.DeviceGetHandleByIndex(i)
		if !c.ok(CallDeviceGetHandleByIndex, gpu, ret) {
			continue
		}
		c.collectDevice(ch, gpu, dev)
	}
}

func (c *Collector) collectDevice(ch chan<- prometheus.Metric, gpu string, dev nvml.Device) {
	// A name or UUID that cannot be read leaves its label empty rather
	// than losing the device's series.
	name, ret := dev.GetName()
	if !c.ok(CallDeviceGetName, gpu, ret) {
		name = ""
	}
	uuid, ret := dev.GetUUID()
	if !c.ok(CallDeviceGetUUID, gpu, ret) {
		uuid = ""
	}
	gauge := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{gpu, uuid, name}, extra...)...)
	}

	if u, ret := dev.GetUtilizationRates(); c.ok(CallDeviceGetUtilizationRates, gpu, ret) {
		gauge(c.utilDesc, float64(u.Gpu)/100)
	}
	if m, ret := dev.GetMemoryInfo(); c.ok(CallDeviceGetMemoryInfo, gpu, ret) {
		gauge(c.memUsedDesc, float64(m.Used))
		gauge(c.memTotalDesc, float64(m.Total))
	}
	if mw, ret := dev.GetPowerUsage(); c.ok(CallDeviceGetPowerUsage, gpu, ret) {
		gauge(c.powerDesc, float64(mw)/1000)
	}
	if mw, ret := dev.GetEnforcedPowerLimit(); c.ok(CallDeviceGetEnforcedPowerLimit, gpu, ret) {
		gauge(c.powerLimitDesc, float64(mw)/1000)
	}
	if c.temperature {
		if t, ret := dev.GetTemperature(nvml.TEMPERATURE_GPU); c.ok(CallDeviceGetTemperature, gpu, ret) {
			gauge(c.tempDesc, float64(t))
		}
	}
	if mhz, ret := dev.GetClockInfo(nvml.CLOCK_SM); c.ok(CallDeviceGetClockInfo, gpu, ret) {
		gauge(c.clockDesc, float64(mhz)*1e6)
	}

	var reasons uint64
	call := CallDeviceGetCurrentClocksEventReasons
	if c.eventReasons {
		reasons, ret = dev.GetCurrentClocksEventReasons()
	} else {
		call = CallDeviceGetCurrentClocksThrottleReasons
		reasons, ret = dev.GetCurrentClocksThrottleReasons()
	}
	if c.ok(call, gpu, ret) {
		for _, r := range ThrottleReasons {
			gauge(c.throttleDesc, boolFloat(reasons&r.Bit != 0), r.Name)
		}
	}

	for _, p := range c.processMemory(gpu, dev) {
		target := ""
		if c.processes != nil {
			if t, ok := c.processes(p.pid); ok {
				target = t
			}
		}
		ch <- prometheus.MustNewConstMetric(c.procMemDesc, prometheus.GaugeValue, float64(p.bytes),
			gpu, uuid, strconv.FormatUint(uint64(p.pid), 10), target)
	}
}

type procMem struct {
	pid   uint32
	bytes uint64
}

// processMemory merges the compute and graphics process lists of dev into
// one entry per PID, so no series is sent twice. Within one list the
// entries of a PID are summed (MIG instances hold separate memory); across
// the lists the larger figure is taken, since NVML reports a process's
// memory in each list it appears in. Entries whose memory NVML cannot see
// (VALUE_NOT_AVAILABLE, e.g. without permission) are left out.
func (c *Collector) processMemory(gpu string, dev nvml.Device) []procMem {
	var out []procMem
	index := map[uint32]int{}
	add := func(call string, infos []nvml.ProcessInfo, ret nvml.Return) {
		if !c.ok(call, gpu, ret) {
			return
		}
		list := map[uint32]uint64{}
		var order []uint32
		for _, p := range infos {
			if p.UsedGpuMemory == notAvailable {
				continue
			}
			if _, seen := list[p.Pid]; !seen {
				order = append(order, p.Pid)
			}
			list[p.Pid] += p.UsedGpuMemory
		}
		for _, pid := range order {
			if i, seen := index[pid]; seen {
				out[i].bytes = max(out[i].bytes, list[pid])
				continue
			}
			index[pid] = len(out)
			out = append(out, procMem{pid, list[pid]})
		}
	}
	infos, ret := dev.GetComputeRunningProcesses()
	add(CallDeviceGetComputeRunningProcesses, infos, ret)
	infos, ret = dev.GetGraphicsRunningProcesses()
	add(CallDeviceGetGraphicsRunningProcesses, infos, ret)
	return out
}

// notAvailable is NVML_VALUE_NOT_AVAILABLE as an unsigned long long.
const notAvailable = ^uint64(0)

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
