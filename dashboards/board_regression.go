package dashboards

import (
	"fmt"

	"github.com/chimeraforge/chimeraforge/exporters"
)

// regressionBoard answers "did the upgrade make it slower?" two ways:
// against the same hour $compare ago, and against the hour before the last
// Ollama version change. Both use the 1 h recording rules the regression
// alerts use, so the board shows what the alerts see.
func regressionBoard() (Board, error) {
	workload := match(exporters.LabelWorkload)
	const perWorkload = "{{workload}}"
	const offset = " offset $" + varCompare

	tokensNow := sel(RecTokensRate1h, workload)
	ttftNow := sel(RecTTFTQuantile1h, workload+`, quantile="0.95"`)
	tokensBefore := sel(RecTokensBeforeChange, workload)
	ttftBefore := sel(RecTTFTP95BeforeChange, workload)
	// divide matches per workload: the TTFT series also carry quantile.
	divide := func(a, b string) string { return a + "\n/ on (workload)\n" + b }

	slower := thresholds("red", step{DefaultThresholds.ThroughputRegression, "green"})
	later := thresholds("green", step{DefaultThresholds.TTFTRegression, "red"})

	l := newBoard(UIDRegression, "Chimeraforge / Upgrade regression",
		"Throughput and time to first token of each workload against the same hour $compare ago and against the hour before the last Ollama version change of one of its targets: the figures the regression alerts compare.")
	l.db.
		WithVariable(datasourceVar()).
		WithVariable(workloadVar()).
		WithVariable(targetVar(exporters.LabelWorkload)).
		WithVariable(compareVar()).
		Annotation(versionChangeAnnotation())

	l.row("Against $compare ago",
		timeseriesPanel("Throughput: last hour and $compare earlier", unitTokensPerSec,
			fmt.Sprintf("Aggregate throughput over the last hour (recording rule %s) and the same figure $compare earlier (offset $compare). "+
				"The week-over-week alert fires when it falls below %g%% of the same hour a week ago.", RecTokensRate1h, DefaultThresholds.ThroughputRegression*100),
			query(tokensNow, perWorkload+" last hour"),
			query(tokensNow+offset, perWorkload+" $compare earlier")),
		timeseriesPanel("TTFT p95: last hour and $compare earlier", unitSeconds,
			fmt.Sprintf(`Client time to first token p95 over the last hour (recording rule %s{quantile="0.95"}) and the same figure $compare earlier (offset $compare). `+
				"The week-over-week alert fires when it rises above %g× the same hour a week ago.", RecTTFTQuantile1h, DefaultThresholds.TTFTRegression),
			query(ttftNow, perWorkload+" last hour"),
			query(ttftNow+offset, perWorkload+" $compare earlier")),
		timeseriesPanel("Throughput: last hour ÷ $compare earlier", unitRatio,
			fmt.Sprintf("Last hour's aggregate throughput ÷ the same figure $compare earlier: %s / (%s offset $compare); below 1 the workload is slower than then, red below %g (the alert threshold). %s",
				RecTokensRate1h, RecTokensRate1h, DefaultThresholds.ThroughputRegression, EmptyUntilCompareHistory),
			query(divide(tokensNow, tokensNow+offset), perWorkload)).
			Thresholds(slower).
			ThresholdsStyle(thresholdLines()),
		timeseriesPanel("TTFT p95: last hour ÷ $compare earlier", unitRatio,
			fmt.Sprintf("Last hour's time to first token p95 ÷ the same figure $compare earlier, from %s; above 1 first tokens come later than then, red above %g (the alert threshold). %s",
				RecTTFTQuantile1h, DefaultThresholds.TTFTRegression, EmptyUntilCompareHistory),
			query(divide(ttftNow, ttftNow+offset), perWorkload)).
			Thresholds(later).
			ThresholdsStyle(thresholdLines()),
	)

	l.row("Before and after the last Ollama version change",
		textPanel("How the before-change figures are held",
			"Explains how the recording rules hold the figures of the hour before the last Ollama version change, which the panels of this row and the upgrade alerts compare with.",
			heldExplanation()).
			Height(9),
		timeseriesPanel("Throughput: before the change and last hour", unitTokensPerSec,
			fmt.Sprintf("Aggregate throughput of the hour before the last Ollama version change of a target of the workload (recording rule %s) and of the last hour (%s). %s",
				RecTokensBeforeChange, RecTokensRate1h, EmptyUntilVersionChange),
			query(tokensBefore, perWorkload+" before the change"),
			query(tokensNow, perWorkload+" last hour")),
		timeseriesPanel("TTFT p95: before the change and last hour", unitSeconds,
			fmt.Sprintf("Client time to first token p95 of the hour before the last Ollama version change of a target of the workload (recording rule %s) and of the last hour (%s). %s",
				RecTTFTP95BeforeChange, RecTTFTQuantile1h, EmptyUntilVersionChange),
			query(ttftBefore, perWorkload+" before the change"),
			query(ttftNow, perWorkload+" last hour")),
		timeseriesPanel("Throughput: last hour ÷ before the change", unitRatio,
			fmt.Sprintf("Last hour's aggregate throughput ÷ that of the hour before the last version change: %s / %s; red below %g, where the upgrade alert fires once the change is an hour old. %s",
				RecTokensRate1h, RecTokensBeforeChange, DefaultThresholds.ThroughputRegression, EmptyUntilVersionChange),
			query(divide(tokensNow, tokensBefore), perWorkload)).
			Thresholds(slower).
			ThresholdsStyle(thresholdLines()),
		timeseriesPanel("TTFT p95: last hour ÷ before the change", unitRatio,
			fmt.Sprintf(`Last hour's time to first token p95 ÷ that of the hour before the last version change: %s{quantile="0.95"} / %s; red above %g, where the upgrade alert fires once the change is an hour old. %s`,
				RecTTFTQuantile1h, RecTTFTP95BeforeChange, DefaultThresholds.TTFTRegression, EmptyUntilVersionChange),
			query(divide(ttftNow, ttftBefore), perWorkload)).
			Thresholds(later).
			ThresholdsStyle(thresholdLines()),
	)

	return l.build("chimeraforge-regression.json")
}

// heldExplanation is the text panel's Markdown: how versionChangeRules
// hold the figures of the hour before a version change.
func heldExplanation() string {
	return fmt.Sprintf(`The figures of the hour **before the last Ollama version change** of any target of a workload (the targets of its requests) are recording rules: `+"`%s`"+` and `+"`%s`"+`.

* While the change is less than an hour old (`+"`%s > 0`"+`), each rule records the current 1 h figure as it was an hour earlier (`+"`offset 1h`"+`), so the hour it covers always ends before the change.
* Once the change is more than an hour old, each rule re-reads its own last value (`+"`last_over_time(…[%s])`"+`): it keeps the hour just before the change while the last hour lies wholly after it, for %s after the change or until the next one, whichever comes first. After that the comparison is no longer about the upgrade, and the panels empty.
* The upgrade alerts compare the last hour with the held value, and only once the change is an hour old.

%s Until then these panels have nothing to compare.`,
		RecTokensBeforeChange, RecTTFTP95BeforeChange, RecVersionChanges1h,
		beforeVersionChangeHold, holdInWords, EmptyUntilVersionChange)
}
