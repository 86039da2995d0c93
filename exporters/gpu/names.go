package gpu

import "github.com/NVIDIA/go-nvml/pkg/nvml"

// Metric names. Dashboards, rules and docs/metrics.md refer to these
// constants so that the names cannot drift apart.
const (
	MetricCollectorUp           = "chimeraforge_gpu_collector_up"
	MetricScrapeDurationSeconds = "chimeraforge_gpu_scrape_duration_seconds"
	MetricUtilizationRatio      = "chimeraforge_gpu_utilization_ratio"
	MetricMemoryUsedBytes       = "chimeraforge_gpu_memory_used_bytes"
	MetricMemoryTotalBytes      = "chimeraforge_gpu_memory_total_bytes"
	MetricPowerWatts            = "chimeraforge_gpu_power_watts"
	MetricPowerLimitWatts       = "chimeraforge_gpu_power_limit_watts"
	MetricTemperatureCelsius    = "chimeraforge_gpu_temperature_celsius"
	MetricSMClockHertz          = "chimeraforge_gpu_sm_clock_hertz"
	MetricThrottleReasons       = "chimeraforge_gpu_throttle_reasons"
	MetricProcessMemoryBytes    = "chimeraforge_gpu_process_memory_bytes"
	MetricErrorsTotal           = "chimeraforge_gpu_errors_total"
)

// Label names.
const (
	LabelGPU    = "gpu"    // device index, as NVML numbers devices
	LabelUUID   = "uuid"   // NVML device UUID, stable across reboots
	LabelName   = "name"   // product name
	LabelReason = "reason" // a throttle reason, one of the names in ThrottleReasons
	LabelPID    = "pid"    // host process ID
	LabelTarget = "target" // the Ollama target a process serves, "" when unknown
	LabelCall   = "call"   // the NVML function that failed, one of Calls
)

// NVML functions the collector calls, as the values of the call label of
// MetricErrorsTotal: the C names, as NVML's documentation spells them.
const (
	CallDeviceGetCount                        = "nvmlDeviceGetCount"
	CallDeviceGetHandleByIndex                = "nvmlDeviceGetHandleByIndex"
	CallDeviceGetName                         = "nvmlDeviceGetName"
	CallDeviceGetUUID                         = "nvmlDeviceGetUUID"
	CallDeviceGetUtilizationRates             = "nvmlDeviceGetUtilizationRates"
	CallDeviceGetMemoryInfo                   = "nvmlDeviceGetMemoryInfo"
	CallDeviceGetPowerUsage                   = "nvmlDeviceGetPowerUsage"
	CallDeviceGetEnforcedPowerLimit           = "nvmlDeviceGetEnforcedPowerLimit"
	CallDeviceGetTemperature                  = "nvmlDeviceGetTemperature"
	CallDeviceGetClockInfo                    = "nvmlDeviceGetClockInfo"
	CallDeviceGetCurrentClocksEventReasons    = "nvmlDeviceGetCurrentClocksEventReasons"
	CallDeviceGetCurrentClocksThrottleReasons = "nvmlDeviceGetCurrentClocksThrottleReasons"
	CallDeviceGetComputeRunningProcesses      = "nvmlDeviceGetComputeRunningProcesses"
	CallDeviceGetGraphicsRunningProcesses     = "nvmlDeviceGetGraphicsRunningProcesses"
)

// Calls lists every value the call label of MetricErrorsTotal can take; each
// series is exported from the first scrape, at 0.
var Calls = []string{
	CallDeviceGetCount,
	CallDeviceGetHandleByIndex,
	CallDeviceGetName,
	CallDeviceGetUUID,
	CallDeviceGetUtilizationRates,
	CallDeviceGetMemoryInfo,
	CallDeviceGetPowerUsage,
	CallDeviceGetEnforcedPowerLimit,
	CallDeviceGetTemperature,
	CallDeviceGetClockInfo,
	CallDeviceGetCurrentClocksEventReasons,
	CallDeviceGetCurrentClocksThrottleReasons,
	CallDeviceGetComputeRunningProcesses,
	CallDeviceGetGraphicsRunningProcesses,
}

// ThrottleReason names one bit of NVML's clocks event (throttle) reasons.
type ThrottleReason struct {
	Name string
	Bit  uint64
}

// ThrottleReasons are the reasons exported by MetricThrottleReasons, every one
// of them on every scrape (0 or 1) so that the series are stable. Bits NVML
// sets beyond these are ignored.
var ThrottleReasons = []ThrottleReason{
	{"gpu_idle", nvml.ClocksEventReasonGpuIdle},
	{"applications_clocks_setting", nvml.ClocksEventReasonApplicationsClocksSetting},
	{"sw_power_cap", nvml.ClocksEventReasonSwPowerCap},
	{"hw_slowdown", nvml.ClocksThrottleReasonHwSlowdown},
	{"sync_boost", nvml.ClocksEventReasonSyncBoost},
	{"sw_thermal_slowdown", nvml.ClocksEventReasonSwThermalSlowdown},
	{"hw_thermal_slowdown", nvml.ClocksThrottleReasonHwThermalSlowdown},
	{"hw_power_brake_slowdown", nvml.ClocksThrottleReasonHwPowerBrakeSlowdown},
	{"display_clock_setting", nvml.ClocksEventReasonDisplayClockSetting},
}
