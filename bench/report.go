package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"time"
)

func ms(v float64) string {
	if math.Abs(v) < 5e-6 { // no "-0.00"
		v = 0
	}
	return fmt.Sprintf("%.2f", v*1e3)
}

// q is one figure of s in milliseconds, or a dash when s is empty.
func q(s summary, v float64) string {
	if s.N == 0 {
		return "–"
	}
	return ms(v)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func ratio(a, b float64) string {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// writeReport prints the report as Markdown tables.
func writeReport(w io.Writer, rep *report) {
	fmt.Fprintf(w, "## Steps (%s, %s window)\n\n", rep.Started.Format(time.RFC3339), rep.Settings["window"])
	fmt.Fprintln(w, "| step | client | tokens/s (ideal) | client CPU cores | sim CPU cores | CPU s per M tokens | allocs per token | peak RSS | goroutines | requests (failed) | TTFT error p50 / p99 / max ms | mean gap error p50 / p99 ms | max gap error p99 / max ms | out of CPU |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rep.Steps {
		fmt.Fprintf(w, "| %s | %s | %.0f (%.0f) | %.3f | %.3f | %.2f | %.2f | %s | %d | %d (%d) | %s / %s / %s | %s / %s | %s / %s | %s |\n",
			r.Step, r.Client, r.TokensPerSec, r.Ideal, r.ClientCores, r.SimCores, r.CPUPerMTokens, r.AllocsPerTok,
			mib(r.PeakRSS), r.Goroutines, r.Requests, r.Failed,
			q(r.TTFTErr, r.TTFTErr.P50), q(r.TTFTErr, r.TTFTErr.P99), q(r.TTFTErr, r.TTFTErr.Max),
			q(r.MeanGapErr, r.MeanGapErr.P50), q(r.MeanGapErr, r.MeanGapErr.P99),
			q(r.MaxGapErr, r.MaxGapErr.P99), q(r.MaxGapErr, r.MaxGapErr.Max), r.limited())
	}

	fmt.Fprint(w, "\n## Daemon ÷ floor, per step\n\n")
	fmt.Fprintln(w, "| step | CPU per M tokens | allocs per token | peak RSS | memory per stream (daemon / floor) | goroutines | TTFT error p99 (daemon / floor ms) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	base := map[string]result{}
	for _, r := range rep.Steps {
		if _, ok := base[r.Client]; !ok {
			base[r.Client] = r
		}
	}
	for _, d := range rep.Steps {
		if d.Client != "daemon" {
			continue
		}
		j := slices.IndexFunc(rep.Steps, func(f result) bool { return f.Client == "floor" && f.Step == d.Step })
		if j < 0 {
			continue
		}
		f := rep.Steps[j]
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s / %s | %s | %s / %s |\n", d.Step,
			ratio(d.CPUPerMTokens, f.CPUPerMTokens), ratio(d.AllocsPerTok, f.AllocsPerTok),
			ratio(float64(d.PeakRSS), float64(f.PeakRSS)),
			perStream(d, base["daemon"]), perStream(f, base["floor"]),
			ratio(float64(d.Goroutines), float64(f.Goroutines)), q(d.TTFTErr, d.TTFTErr.P99), q(f.TTFTErr, f.TTFTErr.P99))
	}

	if len(rep.Startup) > 0 {
		first := make([]float64, len(rep.Startup))
		ready := make([]float64, len(rep.Startup))
		for i, s := range rep.Startup {
			first[i], ready[i] = s.FirstRequest.Seconds(), s.Ready.Seconds()
		}
		f, r := summarize(first), summarize(ready)
		fmt.Fprintf(w, "\n## Start-up (%d starts)\n\n| from process start to | median ms | max ms |\n|---|---|---|\n", len(rep.Startup))
		fmt.Fprintf(w, "| first request arriving at the target | %s | %s |\n", q(f, f.P50), q(f, f.Max))
		fmt.Fprintf(w, "| /readyz answering 200 | %s | %s |\n", q(r, r.P50), q(r, r.Max))
	}
	if rep.IdleRSS != nil && rep.DemoRSS != nil {
		fmt.Fprintln(w, "\n## Memory\n\n| daemon | RSS | peak RSS |\n|---|---|---|")
		fmt.Fprintf(w, "| idle (configured, nothing to send) | %s | %s |\n", mib(rep.IdleRSS.RSS), mib(rep.IdleRSS.Peak))
		fmt.Fprintf(w, "| built-in demo | %s | %s |\n", mib(rep.DemoRSS.RSS), mib(rep.DemoRSS.Peak))
	}
}

// perStream is the peak memory each stream beyond the first step's adds:
// (peak RSS − the first step's peak RSS) ÷ (streams − the first step's).
func perStream(r, first result) string {
	n := r.Step.Concurrency - first.Step.Concurrency
	if n <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f KiB", float64(r.PeakRSS-first.PeakRSS)/float64(n)/1024)
}
