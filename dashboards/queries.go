// Package dashboards holds the PromQL that Chimeraforge's dashboards and
// rules are built from. Every figure is computed from exported series alone
// (docs/metrics.md), so any Prometheus that scrapes the daemon can
// reproduce it; tests evaluate these exact expressions against a real
// Prometheus.
package dashboards

import "fmt"

// Each function takes the range window, e.g. "5m". A window should span
// many requests: token counters move when a request ends.

// AggregateThroughput is, per workload, the generated tokens per wall-clock
// second summed over its agents.
func AggregateThroughput(window string) string {
	return fmt.Sprintf(`sum by (workload) (rate(chimeraforge_generated_tokens_total[%s]))`, window)
}

// soloEquivalent is, per workload, what its agents would generate per
// second if running together cost nothing: each agent's solo baseline
// (summed over its targets) times the mean number of its replicas running
// over the window. Paused or stopped replicas count for nothing.
//
// The baseline is summed without target and model rather than by
// (workload, agent), so that it keeps every other label (job, instance,
// pod) and matches the agent_active series of the same daemon one to one:
// several daemons running the same agent each contribute their own
// baseline times their own running replicas.
func soloEquivalent(window string) string {
	return fmt.Sprintf(`sum by (workload) (
  sum without (target, model) (chimeraforge_baseline_tokens_per_second)
  * avg_over_time(chimeraforge_agent_active[%s])
)`, window)
}

// Efficiency is aggregate throughput divided by the sum of the solo
// baselines of the agents that ran: 1.0 means running together costs
// nothing; with two agents, 0.5 means no gain at all over running them one
// after the other.
func Efficiency(window string) string {
	return fmt.Sprintf("(%s)\n/\n(%s)", AggregateThroughput(window), soloEquivalent(window))
}

// Speedup is aggregate throughput divided by the mean solo baseline of the
// workload's agents that ran: how many agents' worth of solo throughput the
// workload achieves together. Where several daemons run the workload, each
// daemon's agent counts as one agent.
func Speedup(window string) string {
	return fmt.Sprintf(`(%s)
/
avg by (workload) (
  sum without (target, model) (chimeraforge_baseline_tokens_per_second)
  and (avg_over_time(chimeraforge_agent_active[%s]) > 0)
)`, AggregateThroughput(window), window)
}

// ContentionRatio is, per workload and kind, contended requests divided by
// all requests that ended.
func ContentionRatio(window string) string {
	return fmt.Sprintf(`sum by (workload, kind) (rate(chimeraforge_contention_events_total[%s]))
/ on (workload) group_left
sum by (workload) (rate(chimeraforge_requests_total[%s]))`, window, window)
}

// Balance is the figure earlier benchmarks of this workload published as
// "parallel efficiency": (t_1 + … + t_N) / wall / N with every t measured
// while the agents ran together, here the summed busy time of the running
// replicas per wall-clock second, divided by their number. It equals
// (1 + min/max)/2 for two agents: it says how evenly the agents were kept
// busy, can never fall below 0.5, and cannot show a slowdown. Exported for
// comparison with published numbers only; it is not efficiency.
//
// Busy time comes from the run-duration histogram: its classic _sum series,
// or the native histogram's sum where Prometheus ingests native histograms
// (it then drops the classic series).
func Balance(window string) string {
	return fmt.Sprintf(`(
  sum by (workload) (rate(chimeraforge_agent_run_duration_seconds_sum[%s]))
  or
  sum by (workload) (histogram_sum(rate(chimeraforge_agent_run_duration_seconds[%s])))
)
/
sum by (workload) (avg_over_time(chimeraforge_agent_active[%s]))`, window, window, window)
}
