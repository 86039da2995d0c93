package dashboards

import (
	"fmt"
	"strings"

	"github.com/chimeraforge/chimeraforge/exporters"
	"github.com/chimeraforge/chimeraforge/exporters/gpu"
)

// Recording rules: the figures the dashboards and alerts share, named
// level:metric:operations as Prometheus' naming guide recommends. Each is
// aggregated by workload (and quantile or kind), so that it sums across
// daemon replicas and instances.
const (
	RecTokensRate5m         = "workload:chimeraforge_generated_tokens:rate5m"
	RecTokensRate1h         = "workload:chimeraforge_generated_tokens:rate1h"
	RecRequestsRate5m       = "workload:chimeraforge_requests:rate5m"
	RecErrorRatio5m         = "workload:chimeraforge_request_errors:ratio_rate5m"
	RecEfficiency5m         = "workload:chimeraforge_efficiency:ratio5m"
	RecSpeedup5m            = "workload:chimeraforge_speedup:ratio5m"
	RecBalance5m            = "workload:chimeraforge_balance:ratio5m"
	RecContentionRatio5m    = "workload_kind:chimeraforge_contention:ratio_rate5m"
	RecTTFTQuantile5m       = "workload_quantile:chimeraforge_time_to_first_token_seconds:histogram_quantile5m"
	RecTTFTQuantile1h       = "workload_quantile:chimeraforge_time_to_first_token_seconds:histogram_quantile1h"
	RecScheduleDelayP99_5m  = "workload:chimeraforge_schedule_delay_seconds:p99_5m"
	RecVersionChanges1h     = "workload:chimeraforge_ollama_version_changes:increase1h"
	RecTokensBeforeChange   = "workload:chimeraforge_generated_tokens:rate1h_before_version_change"
	RecTTFTP95BeforeChange  = "workload_quantile:chimeraforge_time_to_first_token_seconds:histogram_quantile1h_before_version_change"
	beforeVersionChangeHold = "7d"
	holdInWords             = "7 days"
)

// TTFTQuantiles are the quantiles RecTTFTQuantile5m records, as the values
// of its quantile label.
var TTFTQuantiles = []string{"0.5", "0.95", "0.99"}

// Thresholds are the alerting thresholds. The defaults are documented in
// docs/alerts.md with the reasoning behind each.
type Thresholds struct {
	// ThroughputRegression: alert when the 1 h throughput falls below this
	// fraction of the comparison window.
	ThroughputRegression float64
	// TTFTRegression: alert when the 1 h TTFT p95 rises above this multiple
	// of the comparison window.
	TTFTRegression float64
	// Efficiency: alert when a workload's efficiency stays below this.
	Efficiency float64
	// ContentionRatio: alert when this fraction of a workload's requests
	// show one kind of contention.
	ContentionRatio float64
	// ErrorRatio: alert when this fraction of a workload's requests fail.
	ErrorRatio float64
	// GPUTemperature in degrees Celsius.
	GPUTemperature float64
	// ScheduleDelay in seconds: open-loop p99 lateness that means the
	// daemon no longer delivers the configured load.
	ScheduleDelay float64
}

// DefaultThresholds are the thresholds the committed rules use.
var DefaultThresholds = Thresholds{
	ThroughputRegression: 0.8,
	TTFTRegression:       1.25,
	Efficiency:           0.6,
	ContentionRatio:      0.5,
	ErrorRatio:           0.05,
	GPUTemperature:       85,
	ScheduleDelay:        1,
}

// RuleFile is a Prometheus rule file.
type RuleFile struct {
	Groups []RuleGroup `yaml:"groups"`
}

// RuleGroup is one group of rules, evaluated in order.
type RuleGroup struct {
	Name  string `yaml:"name"`
	Rules []Rule `yaml:"rules"`
}

// Rule is a recording rule (Record set) or an alerting rule (Alert set).
type Rule struct {
	Record      string            `yaml:"record,omitempty"`
	Alert       string            `yaml:"alert,omitempty"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

// RunbookBase is where each alert's runbook_url points: the alert's
// section of docs/alerts.md.
const RunbookBase = "https://github.com/chimeraforge/chimeraforge/blob/main/docs/alerts.md#"

// Quantile is the q-quantile of a histogram aggregated by the given
// labels, from classic buckets or, where Prometheus ingests native
// histograms (and then drops the classic series), from the native
// histogram. sel is a label selector without braces, possibly empty.
func Quantile(q, metric, by, sel, window string) string {
	if sel != "" {
		sel = "{" + sel + "}"
	}
	return fmt.Sprintf(`histogram_quantile(%s, sum by (%s, le) (rate(%s_bucket%s[%s])))
or
histogram_quantile(%s, sum by (%s) (rate(%s%s[%s])))`,
		q, by, metric, sel, window, q, by, metric, sel, window)
}

// Rules returns the recording and alerting rules with the given
// thresholds.
func Rules(th Thresholds) RuleFile {
	return RuleFile{Groups: []RuleGroup{
		{Name: "chimeraforge.recording", Rules: recordingRules()},
		{Name: "chimeraforge.version_change", Rules: versionChangeRules()},
		{Name: "chimeraforge.alerts", Rules: alertRules(th)},
	}}
}

func recordingRules() []Rule {
	rules := []Rule{
		{Record: RecTokensRate5m, Expr: AggregateThroughput("5m")},
		{Record: RecTokensRate1h, Expr: AggregateThroughput("1h")},
		{Record: RecRequestsRate5m, Expr: fmt.Sprintf(`sum by (workload) (rate(%s[5m]))`, exporters.MetricRequestsTotal)},
		{Record: RecErrorRatio5m, Expr: ErrorRatio("5m")},
		{Record: RecEfficiency5m, Expr: Efficiency("5m")},
		{Record: RecSpeedup5m, Expr: Speedup("5m")},
		{Record: RecBalance5m, Expr: Balance("5m")},
		{Record: RecContentionRatio5m, Expr: ContentionRatio("5m")},
	}
	for _, q := range TTFTQuantiles {
		rules = append(rules, Rule{
			Record: RecTTFTQuantile5m,
			Expr:   Quantile(q, exporters.MetricTimeToFirstTokenSeconds, "workload", "", "5m"),
			Labels: map[string]string{"quantile": q},
		})
	}
	rules = append(rules,
		Rule{
			Record: RecTTFTQuantile1h,
			Expr:   Quantile("0.95", exporters.MetricTimeToFirstTokenSeconds, "workload", "", "1h"),
			Labels: map[string]string{"quantile": "0.95"},
		},
		Rule{
			Record: RecScheduleDelayP99_5m,
			Expr:   Quantile("0.99", exporters.MetricScheduleDelaySeconds, "workload", "", "5m"),
		},
	)
	return rules
}

// versionChangeRules hold the 1 h throughput and TTFT p95 of the hour
// before the last Ollama version change of any target of a workload.
//
// While a change lies less than 1 h back, the held value is taken from
// 1 h earlier (offset 1h), so that it never covers the new version; once
// the change is more than 1 h old, the rule re-reads its own last value,
// for as long as the change is less than 7 days old. The alerts compare the
// current hour, which then lies wholly after the change, with it.
func versionChangeRules() []Rule {
	hold := func(record, current, sel string) Rule {
		return Rule{
			Record: record,
			Expr: fmt.Sprintf(`(
  %s offset 1h
  and on (workload) (%s > 0)
)
or
(
  last_over_time(%s%s[%s])
  and on (workload) (%s > 0)
)`, current, RecVersionChanges1h, record, sel, beforeVersionChangeHold, workloadVersionChanges(beforeVersionChangeHold)),
		}
	}
	return []Rule{
		{Record: RecVersionChanges1h, Expr: workloadVersionChanges("1h")},
		hold(RecTokensBeforeChange, RecTokensRate1h, ""),
		hold(RecTTFTP95BeforeChange, RecTTFTQuantile1h+`{quantile="0.95"}`, `{quantile="0.95"}`),
	}
}

// workloadVersionChanges is, per workload, the most version changes any
// of its targets reported over window. A workload's targets are the
// targets of its in-flight series, which exist from the start; the max by
// target keeps one series per target where several daemons watch it.
func workloadVersionChanges(window string) string {
	return fmt.Sprintf(`max by (workload) (
  group by (workload, target) (%s)
  * on (target) group_left
  max by (target) (increase(%s[%s]))
)`, exporters.MetricRequestsInFlight, exporters.MetricOllamaVersionChangesTotal, window)
}

// ErrorRatio is, per workload, failed requests divided by all requests that
// ended (canceled ones count in neither numerator nor as failures).
func ErrorRatio(window string) string {
	return fmt.Sprintf(`sum by (workload) (rate(%s{outcome="error"}[%s]))
/
sum by (workload) (rate(%s[%s]))`, exporters.MetricRequestsTotal, window, exporters.MetricRequestsTotal, window)
}

func alert(name, severity, forDur, expr, summary, description string) Rule {
	return Rule{
		Alert:  name,
		Expr:   expr,
		For:    forDur,
		Labels: map[string]string{"severity": severity},
		Annotations: map[string]string{
			"summary":     summary,
			"description": description,
			"runbook_url": RunbookBase + strings.ToLower(name),
		},
	}
}

func num(f float64) string { return fmt.Sprintf("%g", f) }

func pct(f float64) string { return fmt.Sprintf("%g%%", f*100) }

func alertRules(th Thresholds) []Rule {
	return []Rule{
		alert("ChimeraforgeThroughputRegressionAfterUpgrade", "warning", "15m",
			fmt.Sprintf(`%s
< %s * %s
unless on (workload) (%s > 0)`, RecTokensRate1h, num(th.ThroughputRegression), RecTokensBeforeChange, RecVersionChanges1h),
			"Workload {{ $labels.workload }} generates fewer tokens/s since an Ollama version change.",
			fmt.Sprintf("Aggregate throughput over the last hour is {{ $value | humanize }} tokens/s, below %s of the hour before the last version change of one of its targets.", pct(th.ThroughputRegression))),
		alert("ChimeraforgeThroughputRegressionWeekOverWeek", "warning", "30m",
			fmt.Sprintf(`%s
< %s * (%s offset 1w)`, RecTokensRate1h, num(th.ThroughputRegression), RecTokensRate1h),
			"Workload {{ $labels.workload }} generates fewer tokens/s than a week ago.",
			fmt.Sprintf("Aggregate throughput over the last hour is {{ $value | humanize }} tokens/s, below %s of the same hour a week ago.", pct(th.ThroughputRegression))),
		alert("ChimeraforgeTTFTRegressionAfterUpgrade", "warning", "15m",
			fmt.Sprintf(`%s{quantile="0.95"}
> %s * %s
unless on (workload) (%s > 0)`, RecTTFTQuantile1h, num(th.TTFTRegression), RecTTFTP95BeforeChange, RecVersionChanges1h),
			"Time to first token of workload {{ $labels.workload }} rose after an Ollama version change.",
			fmt.Sprintf("TTFT p95 over the last hour is {{ $value | humanizeDuration }}, above %g× the p95 of the hour before the last version change of one of its targets.", th.TTFTRegression)),
		alert("ChimeraforgeTTFTRegressionWeekOverWeek", "warning", "30m",
			fmt.Sprintf(`%s{quantile="0.95"}
> %s * (%s{quantile="0.95"} offset 1w)`, RecTTFTQuantile1h, num(th.TTFTRegression), RecTTFTQuantile1h),
			"Time to first token of workload {{ $labels.workload }} is higher than a week ago.",
			fmt.Sprintf("TTFT p95 over the last hour is {{ $value | humanizeDuration }}, above %g× the p95 of the same hour a week ago.", th.TTFTRegression)),
		alert("ChimeraforgeEfficiencyLow", "warning", "15m",
			fmt.Sprintf(`%s < %s`, RecEfficiency5m, num(th.Efficiency)),
			"Agents of workload {{ $labels.workload }} slow each other down.",
			fmt.Sprintf("Efficiency (aggregate throughput ÷ sum of solo baselines) is {{ $value | printf \"%%.2f\" }}, below %s: running the agents together costs more than %s of their solo throughput.", num(th.Efficiency), pct(1-th.Efficiency))),
		alert("ChimeraforgeContentionHigh", "warning", "15m",
			fmt.Sprintf(`%s > %s`, RecContentionRatio5m, num(th.ContentionRatio)),
			"Requests of workload {{ $labels.workload }} contend: {{ $labels.kind }}.",
			fmt.Sprintf("{{ $value | humanizePercentage }} of the workload's requests showed %s contention over 5 minutes (threshold %s).", "{{ $labels.kind }}", pct(th.ContentionRatio))),
		alert("ChimeraforgeErrorRatioHigh", "warning", "10m",
			fmt.Sprintf(`%s > %s`, RecErrorRatio5m, num(th.ErrorRatio)),
			"Requests of workload {{ $labels.workload }} fail.",
			fmt.Sprintf("{{ $value | humanizePercentage }} of the workload's requests ended in an error over 5 minutes (threshold %s). chimeraforge_request_errors_total says why.", pct(th.ErrorRatio))),
		alert("ChimeraforgeTargetDown", "critical", "2m",
			fmt.Sprintf(`%s == 0`, exporters.MetricOllamaUp),
			"Ollama target {{ $labels.target }} does not answer.",
			"The daemon's polls of /api/version and /api/ps on target {{ $labels.target }} have failed for 2 minutes."),
		alert("ChimeraforgeModelSpilledToCPU", "warning", "5m",
			fmt.Sprintf(`%s < 1
unless on (target) (max by (target) (max_over_time(%s[1d])) == 0)`, exporters.MetricOllamaModelVRAMRatio, exporters.MetricOllamaModelVRAMRatio),
			"Model {{ $labels.model }} on {{ $labels.target }} is not wholly in GPU memory.",
			"Only {{ $value | humanizePercentage }} of the model is in GPU memory (/api/ps size_vram ÷ size); the rest runs on the CPU, many times slower. Targets that had no model in GPU memory for a day (CPU-only servers) are left out."),
		alert("ChimeraforgeWorkloadStalled", "critical", "10m",
			fmt.Sprintf(`%s == 0
and on (workload) (sum by (workload) (%s) > 0)`, RecTokensRate5m, exporters.MetricAgentActive),
			"Workload {{ $labels.workload }} generates no tokens.",
			"The workload has running agent replicas but generated no token for 10 minutes."),
		alert("ChimeraforgeGPUHot", "warning", "5m",
			fmt.Sprintf(`%s > %s
or
max without (reason) (%s{reason=~"sw_thermal_slowdown|hw_thermal_slowdown|hw_slowdown"}) == 1`,
				gpu.MetricTemperatureCelsius, num(th.GPUTemperature), gpu.MetricThrottleReasons),
			"GPU {{ $labels.gpu }} ({{ $labels.name }}) is hot or thermally throttled.",
			fmt.Sprintf("The GPU is above %s °C or NVML reports a thermal or hardware slowdown: its clocks, and every figure measured on it, are held down.", num(th.GPUTemperature))),
		alert("ChimeraforgeConfigReloadFailed", "warning", "5m",
			fmt.Sprintf(`%s == 0`, exporters.MetricConfigLastReloadSuccessful),
			"Chimeraforge could not load its new configuration.",
			"The last configuration reload failed; the daemon keeps running the previous configuration. Its log names the key and the file."),
		alert("ChimeraforgeLoadBelowSchedule", "warning", "10m",
			fmt.Sprintf(`%s > %s
or
sum by (workload) (rate(%s[5m])) > 0`, RecScheduleDelayP99_5m, num(th.ScheduleDelay), exporters.MetricArrivalsDroppedTotal),
			"Workload {{ $labels.workload }} runs below its configured arrival rate.",
			fmt.Sprintf("Open-loop arrivals start late (schedule delay p99 above %ss) or are dropped at arrival.max_in_flight: the load the servers see is lower than configured.", num(th.ScheduleDelay))),
	}
}
