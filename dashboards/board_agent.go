package dashboards

import (
	"fmt"

	"github.com/chimeraforge/chimeraforge/exporters"
)

// agentBoard shows the requests of each agent and workflow step: latency
// distributions, where the time goes (queue, load, prefill, decode) and
// how requests end.
func agentBoard() (Board, error) {
	requests := match(exporters.LabelWorkload, exporters.LabelAgent, exporters.LabelTarget, exporters.LabelStep)
	const by = stepBy
	const perStep = "{{agent}} / {{step}}"
	nativeOrClassic := "The native histogram is shown when Prometheus ingests native histograms (query A), else the classic buckets (query B, empty while A has data)."

	// perSecond is sum by (agent, step) of the rate of a counter.
	perSecond := func(metric string) string {
		return fmt.Sprintf("sum by (%s) (%s)", by, rate(metric, requests))
	}
	// ratio divides the rates of two counters, per agent and step.
	ratio := func(num, den string) string {
		return perSecond(num) + "\n/\n" + perSecond(den)
	}

	l := newBoard(UIDAgent, "Chimeraforge / Agent detail",
		"The requests of each agent and workflow step: latency distributions, queue wait, model loads, server-reported prefill and decode speed, and how requests end.")
	l.db.
		WithVariable(datasourceVar()).
		WithVariable(workloadVar()).
		WithVariable(agentVar()).
		WithVariable(targetVar(exporters.LabelWorkload, exporters.LabelAgent)).
		WithVariable(stepVar()).
		Annotation(versionChangeAnnotation()).
		Annotation(calibrationAnnotation())

	l.row("Latency distributions",
		heatmapPanel("Time to first token",
			fmt.Sprintf("Client time to first token of the successful requests of the selected agents, steps and targets (%s), as requests per second in each latency bucket. %s",
				exporters.MetricTimeToFirstTokenSeconds, nativeOrClassic),
			exporters.MetricTimeToFirstTokenSeconds, requests),
		heatmapPanel("Inter-token latency",
			fmt.Sprintf("Gaps between consecutive content chunks of a stream, measured by the client (%s), as gaps per second in each latency bucket. %s",
				exporters.MetricInterTokenLatencySeconds, nativeOrClassic),
			exporters.MetricInterTokenLatencySeconds, requests),
	)

	l.row("Latency per agent and step",
		timeseriesPanel("Time to first token p95", unitSeconds,
			fmt.Sprintf("95th percentile of client time to first token per agent and step: histogram_quantile(0.95) over the classic buckets of %s, or over its native histogram where Prometheus ingests it.",
				exporters.MetricTimeToFirstTokenSeconds),
			query(Quantile("0.95", exporters.MetricTimeToFirstTokenSeconds, by, requests, rateInterval), perStep)),
		timeseriesPanel("Request duration p95", unitSeconds,
			fmt.Sprintf("95th percentile of the time from sending a request to the end of its stream or its error, every outcome, per agent and step: histogram_quantile(0.95) over %s, classic buckets or native histogram.",
				exporters.MetricRequestDurationSeconds),
			query(Quantile("0.95", exporters.MetricRequestDurationSeconds, by, requests, rateInterval), perStep)),
		timeseriesPanel("Queue wait", unitSeconds,
			fmt.Sprintf("Estimated time successful requests waited in the server's queue, max(0, TTFT − (load_duration + prompt_eval_duration)), per agent and step (%s). "+
				"Query A is the p95, query B the mean: rate of _sum ÷ rate of _count, or the native histogram's sum ÷ count.",
				exporters.MetricQueueWaitSeconds),
			query(Quantile("0.95", exporters.MetricQueueWaitSeconds, by, requests, rateInterval), perStep+" p95"),
			query(histogramMean(exporters.MetricQueueWaitSeconds, by, requests), perStep+" mean")),
		timeseriesPanel("Model load time", "suffix: s/s",
			fmt.Sprintf("Server-reported model load time per wall-clock second, per agent and step: %s. "+
				"A warm model loads in milliseconds; seconds here mean the server loaded the model again (evicted, keep_alive expired or num_ctx changed).",
				perSecondDoc(exporters.MetricLoadDurationSecondsTotal)),
			query(perSecond(exporters.MetricLoadDurationSecondsTotal), perStep)),
	)

	l.row("Server-reported speed",
		timeseriesPanel("Decode rate", unitTokensPerSec,
			fmt.Sprintf("Generated tokens per second of server-reported eval_duration, per agent and step: %s ÷ %s. "+
				"Queueing and prefill are left out, so it falls only when the server itself generates slower.",
				perSecondDoc(exporters.MetricGeneratedTokensTotal), perSecondDoc(exporters.MetricEvalDurationSecondsTotal)),
			query(ratio(exporters.MetricGeneratedTokensTotal, exporters.MetricEvalDurationSecondsTotal), perStep)),
		timeseriesPanel("Prefill rate", unitTokensPerSec,
			fmt.Sprintf("Prompt tokens per second of server-reported prompt_eval_duration, per agent and step: %s ÷ %s.",
				perSecondDoc(exporters.MetricPromptTokensTotal), perSecondDoc(exporters.MetricPromptEvalDurationSecondsTotal)),
			query(ratio(exporters.MetricPromptTokensTotal, exporters.MetricPromptEvalDurationSecondsTotal), perStep)),
	)

	l.row("Outcomes",
		timeseriesPanel("Requests by outcome", unitReqPerSecond,
			fmt.Sprintf("Requests that ended per second per agent, step and outcome (success, error, canceled): sum by (agent, step, outcome) (rate(%s[$__rate_interval])).",
				exporters.MetricRequestsTotal),
			query(fmt.Sprintf("sum by (%s, outcome) (%s)", by, rate(exporters.MetricRequestsTotal, requests)), perStep+" {{outcome}}")),
		timeseriesPanel("Errors by reason", unitReqPerSecond,
			fmt.Sprintf("Requests that did not succeed per second per agent, step and reason: sum by (agent, step, reason) (rate(%s[$__rate_interval])). "+
				"The reasons are defined in docs/metrics.md.", exporters.MetricRequestErrorsTotal),
			query(fmt.Sprintf("sum by (%s, reason) (%s)", by, rate(exporters.MetricRequestErrorsTotal, requests)), perStep+" {{reason}}")),
	)

	return l.build("chimeraforge-agent.json")
}

// stepBy groups the agent board's figures per agent and workflow step.
const stepBy = exporters.LabelAgent + ", " + exporters.LabelStep

// perSecondDoc is how a description writes the per-step rate of a counter.
func perSecondDoc(metric string) string {
	return fmt.Sprintf("sum by (%s) (rate(%s[%s]))", stepBy, metric, rateInterval)
}

// histogramMean is the mean observation per group: from the classic _sum
// and _count series, or from the native histogram where Prometheus ingests
// it (and then drops the classic series).
func histogramMean(metric, by, matchers string) string {
	native := fmt.Sprintf("sum by (%s) (%s)", by, rate(metric, matchers))
	return fmt.Sprintf(`sum by (%s) (%s)
/
sum by (%s) (%s)
or
histogram_sum(%s) / histogram_count(%s)`,
		by, rate(metric+"_sum", matchers), by, rate(metric+"_count", matchers), native, native)
}
