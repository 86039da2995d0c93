package promtest

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// Sample is one element of an instant query's result.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// String renders the sample as {a="b", …} => value.
func (s Sample) String() string {
	return fmt.Sprintf("%s => %g", labelString(s.Labels), s.Value)
}

// Query evaluates an instant PromQL expression at the current time and
// returns the result, sorted by labels. A scalar result is one sample with
// no labels. It fails the test on an error, on warnings, on a range-vector
// or string result, and on a native-histogram sample (query it through
// histogram_count(), histogram_sum() or histogram_quantile()).
func (s *Server) Query(t testing.TB, expr string) []Sample {
	t.Helper()
	out, err := s.query(expr)
	if err != nil {
		t.Fatalf("promtest: %v", err)
	}
	return out
}

// Scalar evaluates expr and requires exactly one sample; it returns its
// value.
func (s *Server) Scalar(t testing.TB, expr string) float64 {
	t.Helper()
	out := s.Query(t, expr)
	if len(out) != 1 {
		t.Fatalf("promtest: %s: want exactly 1 sample, got %d%s", expr, len(out), listSamples(out))
	}
	return out[0].Value
}

// WaitQuery evaluates expr until it returns at least one sample, and
// returns that result; it fails the test when limit passes first or the
// query is invalid. Use it for series that appear a rule evaluation after
// the scrape that feeds them (recording rules, ALERTS).
func (s *Server) WaitQuery(t testing.TB, expr string, limit time.Duration) []Sample {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		out, err := s.query(expr)
		if err != nil {
			t.Fatalf("promtest: %v", err)
		}
		if len(out) > 0 {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("promtest: %s returned no samples within %v", expr, limit)
		}
		time.Sleep(s.pollEvery())
	}
}

// WaitScraped waits, at most limit, until every target given to Start has
// been scraped successfully at least n times, and fails the test otherwise.
//
// It counts successes from Prometheus's own record: each scrape writes
// up{job="promtest",instance=TARGET}, 1 on success and 0 on failure, in the
// same commit as the samples it scraped, so
//
//	sum by (instance) (sum_over_time(up{job="promtest"}[SINCE_START]))
//
// is the number of successful scrapes whose samples are already queryable.
// Failed scrapes (a target not serving yet, a timeout) add 0, so a target
// may be started before or after Prometheus. The targets API was not used:
// its lastScrape and health describe only the latest attempt, not a count,
// and are updated apart from the sample commit. On timeout the message
// gives each target's count and its last scrape error.
func (s *Server) WaitScraped(t testing.TB, n int, limit time.Duration) {
	t.Helper()
	if len(s.targets) == 0 || n <= 0 {
		return
	}
	deadline := time.Now().Add(limit)
	for {
		counts, err := s.scrapes()
		if err != nil {
			t.Fatalf("promtest: %v", err)
		}
		done := true
		for _, tg := range s.targets {
			if counts[tg] < n {
				done = false
				break
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, tg := range s.targets {
				fmt.Fprintf(&b, "\n  %s: %d successful scrape(s)", tg, counts[tg])
			}
			t.Fatalf("promtest: targets not scraped %d times within %v:%s%s", n, limit, b.String(), s.targetErrors())
		}
		time.Sleep(s.pollEvery())
	}
}

// scrapes returns the number of successful scrapes so far, by instance.
func (s *Server) scrapes() (map[string]int, error) {
	// The range covers everything since the process started.
	since := int(time.Since(s.started)/time.Second) + 60
	expr := fmt.Sprintf(`sum by (instance) (sum_over_time(up{job=%q}[%ds]))`, Job, since)
	out, err := s.query(expr)
	if err != nil {
		return nil, err
	}
	counts := make(map[string]int, len(out))
	for _, smp := range out {
		counts[smp.Labels["instance"]] = int(math.Round(smp.Value))
	}
	return counts, nil
}

// targetErrors describes each active target's health and last error, for
// a failure message.
func (s *Server) targetErrors() string {
	ctx, cancel := context.WithTimeout(context.Background(), queryLimit)
	defer cancel()
	res, err := s.api.Targets(ctx)
	if err != nil {
		return fmt.Sprintf("\n  (targets API: %v)", err)
	}
	var b strings.Builder
	active := make(map[string]bool, len(res.Active))
	for _, at := range res.Active {
		active[string(at.Labels["instance"])] = true
		fmt.Fprintf(&b, "\n  target %s: health %s, last scrape %s, last error %q",
			at.ScrapeURL, at.Health, at.LastScrape.Format(time.RFC3339Nano), at.LastError)
	}
	for _, tg := range s.targets {
		if !active[tg] {
			fmt.Fprintf(&b, "\n  target %s: not active yet (Prometheus 2.42 activates targets about 5s after start)", tg)
		}
	}
	return b.String()
}

func (s *Server) pollEvery() time.Duration {
	return min(max(s.interval/4, 20*time.Millisecond), 250*time.Millisecond)
}

// query evaluates expr now; errors name the expression.
func (s *Server) query(expr string) ([]Sample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), queryLimit)
	defer cancel()
	val, warnings, _, err := s.api.Query(ctx, expr, time.Now())
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", expr, err)
	}
	if len(warnings) > 0 {
		return nil, fmt.Errorf("query %s: warnings: %s", expr, strings.Join(warnings, "; "))
	}
	switch v := val.(type) {
	case model.Vector:
		out := make([]Sample, 0, len(v))
		for _, smp := range v {
			if smp.Histogram != nil {
				return nil, fmt.Errorf("query %s: %s is a native histogram; query histogram_count(), histogram_sum() or histogram_quantile() of it", expr, smp.Metric)
			}
			labels := make(map[string]string, len(smp.Metric))
			for k, lv := range smp.Metric {
				labels[string(k)] = string(lv)
			}
			out = append(out, Sample{Labels: labels, Value: float64(smp.Value)})
		}
		sort.Slice(out, func(i, j int) bool { return labelString(out[i].Labels) < labelString(out[j].Labels) })
		return out, nil
	case *model.Scalar:
		return []Sample{{Labels: map[string]string{}, Value: float64(v.Value)}}, nil
	default:
		return nil, fmt.Errorf("query %s: result is a %s, want an instant vector or a scalar", expr, val.Type())
	}
}

func labelString(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, labels[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func listSamples(out []Sample) string {
	var b strings.Builder
	for _, smp := range out {
		b.WriteString("\n  ")
		b.WriteString(smp.String())
	}
	return b.String()
}

// RangeSeries evaluates expr as a range query over the last span at the
// given step, as a Grafana panel does, and returns how many series have at
// least one point, float or native histogram. Unlike Query it returns
// errors (and warnings) instead of failing the test, so a caller can
// report every bad expression at once.
func (s *Server) RangeSeries(expr string, span, step time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), queryLimit)
	defer cancel()
	end := time.Now()
	val, warnings, _, err := s.api.QueryRange(ctx, expr, v1.Range{Start: end.Add(-span), End: end, Step: step})
	if err != nil {
		return 0, fmt.Errorf("query_range %s: %w", expr, err)
	}
	if len(warnings) > 0 {
		return 0, fmt.Errorf("query_range %s: warnings: %s", expr, strings.Join(warnings, "; "))
	}
	m, ok := val.(model.Matrix)
	if !ok {
		return 0, fmt.Errorf("query_range %s: result is a %s, want a matrix", expr, val.Type())
	}
	n := 0
	for _, ss := range m {
		if len(ss.Values)+len(ss.Histograms) > 0 {
			n++
		}
	}
	return n, nil
}

// RuleProblems returns, for every loaded rule whose last evaluation failed
// (health not "ok", or an error), "name: error"; rules not evaluated yet
// ("unknown") count as problems too, so call it after a few evaluations.
func (s *Server) RuleProblems() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), queryLimit)
	defer cancel()
	res, err := s.api.Rules(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	var out []string
	for _, g := range res.Groups {
		for _, r := range g.Rules {
			var name string
			var health v1.RuleHealth
			var lastErr string
			switch r := r.(type) {
			case v1.RecordingRule:
				name, health, lastErr = r.Name, r.Health, r.LastError
			case v1.AlertingRule:
				name, health, lastErr = r.Name, r.Health, r.LastError
			default:
				return nil, fmt.Errorf("rules: group %s: unexpected rule type %T", g.Name, r)
			}
			if health != v1.RuleHealthGood || lastErr != "" {
				out = append(out, fmt.Sprintf("%s/%s: health %q: %s", g.Name, name, health, lastErr))
			}
		}
	}
	return out, nil
}
