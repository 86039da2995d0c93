package dashboards

import (
	"fmt"

	"github.com/chimeraforge/chimeraforge/exporters"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// overviewBoard shows each workload at a glance: throughput, how much the
// agents cost each other, latency, errors and the Ollama versions. The
// figures come from the recording rules, per workload; the raw-series
// panels also follow the agent and target selections.
func overviewBoard() (Board, error) {
	workload := match(exporters.LabelWorkload)
	requests := match(exporters.LabelWorkload, exporters.LabelAgent, exporters.LabelTarget)
	perWorkload := "{{workload}}"

	efficiencyColours := thresholds("red",
		step{DefaultThresholds.Efficiency, "yellow"},
		step{0.9, "green"})
	efficiencyDescription := fmt.Sprintf("Aggregate throughput ÷ the sum of the solo baselines of the agents that ran, each weighted by its mean running replicas: recording rule %s (Efficiency in docs/metrics.md). "+
		"1.0 means running together costs nothing; with two agents 0.5 means no gain over taking turns. "+
		"Red below %g (the alert threshold), yellow below 0.9.", RecEfficiency5m, DefaultThresholds.Efficiency)

	l := newBoard(UIDOverview, "Chimeraforge / Overview",
		"Each workload at a glance: aggregate throughput, efficiency and speedup against the solo baselines, latency, errors, contention and the Ollama versions of its targets.")
	l.db.
		WithVariable(datasourceVar()).
		WithVariable(workloadVar()).
		WithVariable(agentVar()).
		WithVariable(targetVar(exporters.LabelWorkload, exporters.LabelAgent)).
		Annotation(versionChangeAnnotation()).
		Annotation(calibrationAnnotation())

	l.row("Throughput and efficiency",
		timeseriesPanel("Aggregate throughput", unitTokensPerSec,
			fmt.Sprintf("Generated tokens per wall-clock second summed over the workload's agents: recording rule %s, %s. "+
				"Token counters move when a request ends, so the figure steps with long requests.", RecTokensRate5m, AggregateThroughput("5m")),
			query(sel(RecTokensRate5m, workload), perWorkload)),
		timeseriesPanel("Efficiency", unitRatio, efficiencyDescription,
			query(sel(RecEfficiency5m, workload), perWorkload)).
			Thresholds(efficiencyColours).
			ThresholdsStyle(thresholdLines()),
		statPanel("Efficiency now", unitRatio, efficiencyDescription,
			query(sel(RecEfficiency5m, workload), perWorkload)).
			Thresholds(efficiencyColours),
		timeseriesPanel("Speedup", unitTimes,
			fmt.Sprintf("Aggregate throughput ÷ the mean solo baseline of the agents that ran: recording rule %s (Speedup in docs/metrics.md). "+
				"It says how many agents' worth of solo throughput the workload reaches together: 2.0 for two agents that do not slow each other, 1.0 for two that take turns.", RecSpeedup5m),
			query(sel(RecSpeedup5m, workload), perWorkload)).
			Span(9),
		timeseriesPanel("Balance (not efficiency)", unitRatio,
			fmt.Sprintf("Busy time of the running agent replicas per wall-clock second ÷ their number: recording rule %s, the figure earlier benchmarks published as parallel efficiency. "+
				"It is NOT efficiency: it says how evenly the agents were kept busy, never falls below 0.5 with two agents and cannot show a slowdown (Balance in docs/metrics.md).", RecBalance5m),
			query(sel(RecBalance5m, workload), perWorkload)).
			Span(9),
	)

	l.row("Latency and requests",
		timeseriesPanel("Time to first token", unitSeconds,
			fmt.Sprintf("Client time to first token of successful requests, p50, p95 and p99 per workload over 5 minutes: recording rule %s. "+
				"It is histogram_quantile over the classic buckets of %s, or over its native histogram where Prometheus ingests it.", RecTTFTQuantile5m, exporters.MetricTimeToFirstTokenSeconds),
			query(sel(RecTTFTQuantile5m, workload), "{{workload}} quantile {{quantile}}")),
		timeseriesPanel("Request rate", unitReqPerSecond,
			fmt.Sprintf("Requests that ended per second per workload, every outcome: recording rule %s, sum by (workload) (rate(%s[5m])).", RecRequestsRate5m, exporters.MetricRequestsTotal),
			query(sel(RecRequestsRate5m, workload), perWorkload)),
		timeseriesPanel("Error ratio", unitRatio,
			fmt.Sprintf("Failed requests ÷ all requests that ended, per workload over 5 minutes: recording rule %s. "+
				"Requests the daemon canceled are not failures; the alert fires above %g%%.", RecErrorRatio5m, DefaultThresholds.ErrorRatio*100),
			query(sel(RecErrorRatio5m, workload), perWorkload)).
			Span(8).
			Thresholds(thresholds("green", step{DefaultThresholds.ErrorRatio, "red"})).
			ThresholdsStyle(thresholdLines()),
		timeseriesPanel("Errors by reason", unitReqPerSecond,
			fmt.Sprintf("Requests that did not succeed per second, by workload and reason, for the selected agents and targets: sum by (workload, reason) (rate(%s[$__rate_interval])). "+
				"The reasons are defined in docs/metrics.md; canceled counts the requests the daemon canceled itself.", exporters.MetricRequestErrorsTotal),
			query(fmt.Sprintf("sum by (workload, reason) (%s)", rate(exporters.MetricRequestErrorsTotal, requests)), "{{workload}} {{reason}}")).
			Span(8),
		timeseriesPanel("Requests in flight", unitShort,
			fmt.Sprintf("Requests sent and not yet ended per workload, for the selected agents and targets: sum by (workload) (%s).", exporters.MetricRequestsInFlight),
			query(fmt.Sprintf("sum by (workload) (%s)", sel(exporters.MetricRequestsInFlight, requests)), perWorkload)).
			Span(8),
	)

	l.row("Contention and servers",
		timeseriesPanel("Contention ratio by kind", unitRatio,
			fmt.Sprintf("Share of the workload's requests that showed each kind of contention over 5 minutes: recording rule %s, contended requests ÷ all requests that ended. "+
				"The kinds (slot_saturation, queue_rejected, model_reload, queue_wait) are defined in docs/metrics.md.", RecContentionRatio5m),
			query(sel(RecContentionRatio5m, workload), "{{workload}} {{kind}}")),
		tablePanel("Ollama versions",
			fmt.Sprintf("The Ollama version each target of the selected workloads last reported on /api/version, from %s, which keeps it while the target is down. "+
				"A new version is marked on the graphs and recalibrates the workloads that use the target.", exporters.MetricOllamaInfo),
			tableQuery(fmt.Sprintf("max by (target, version) (%s)\nand on (target)\ngroup by (target) (%s)",
				sel(exporters.MetricOllamaInfo, match(exporters.LabelTarget)),
				sel(exporters.MetricRequestsInFlight, requests)))).
			WithTransformation(dashboard.DataTransformerConfig{
				Id: "organize",
				Options: map[string]any{
					"excludeByName": map[string]bool{"Time": true, "Value": true},
					"renameByName":  map[string]string{"target": "Target", "version": "Ollama version"},
				},
			}).
			CellHeight(common.TableCellHeightSm),
	)

	return l.build("chimeraforge-overview.json")
}
