package soak

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Proc is the kernel's view of a process (see ReadProc).
type Proc struct {
	FDs          int
	RSSBytes     int64         // VmRSS: resident now
	PeakRSSBytes int64         // VmHWM: the most resident at any time so far
	Threads      int           // OS threads
	CPU          time.Duration // user plus system CPU time used so far
}

// Scrape is one parsed /metrics exposition (text format).
type Scrape struct {
	At       time.Time     // when the request was sent
	Took     time.Duration // how long the answer took
	Families map[string]*dto.MetricFamily
}

// ParseScrape parses an exposition in the Prometheus text format.
func ParseScrape(text string) (*Scrape, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	return &Scrape{Families: mfs}, nil
}

// Get returns the value of the first series of family name (a gauge,
// counter or untyped value; for a histogram or summary its sample count),
// and whether the family has one.
func (s *Scrape) Get(name string) (float64, bool) {
	mf, ok := s.Families[name]
	if !ok || len(mf.GetMetric()) == 0 {
		return 0, false
	}
	return value(mf.GetMetric()[0]), true
}

// Sum adds the values of the series of family name whose labels include
// every pair of match (histograms and summaries: their sample counts).
func (s *Scrape) Sum(name string, match map[string]string) float64 {
	var total float64
	for _, m := range s.Families[name].GetMetric() {
		if HasLabels(m, match) {
			total += value(m)
		}
	}
	return total
}

// SumBy adds the series of family name by the value of label, over the
// series whose labels include match.
func (s *Scrape) SumBy(name, label string, match map[string]string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range s.Families[name].GetMetric() {
		if !HasLabels(m, match) {
			continue
		}
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label {
				out[lp.GetValue()] += value(m)
			}
		}
	}
	return out
}

// Count returns how many series family name has whose labels include match
// (a histogram counts once per label set, not per bucket).
func (s *Scrape) Count(name string, match map[string]string) int {
	n := 0
	for _, m := range s.Families[name].GetMetric() {
		if HasLabels(m, match) {
			n++
		}
	}
	return n
}

// BucketCount returns the cumulative count of the classic bucket le of
// histogram name, summed over the series whose labels include match.
func (s *Scrape) BucketCount(name string, le float64, match map[string]string) float64 {
	var total float64
	for _, m := range s.Families[name].GetMetric() {
		if !HasLabels(m, match) || m.GetHistogram() == nil {
			continue
		}
		for _, b := range m.GetHistogram().GetBucket() {
			if b.GetUpperBound() == le {
				total += float64(b.GetCumulativeCount())
			}
		}
	}
	return total
}

// Series returns the identity of every series, name{label="value",…} with
// the labels sorted; a histogram or summary is one series per label set.
func (s *Scrape) Series() map[string]bool {
	out := map[string]bool{}
	for name, mf := range s.Families {
		for _, m := range mf.GetMetric() {
			out[Key(name, m.GetLabel(), "", "")] = true
		}
	}
	return out
}

// Monotonic returns the value of every series that must never go down
// while the process runs: counters, and the count, sum and every classic
// bucket of histograms and summaries.
func (s *Scrape) Monotonic() map[string]float64 {
	out := map[string]float64{}
	for name, mf := range s.Families {
		for _, m := range mf.GetMetric() {
			ls := m.GetLabel()
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[Key(name, ls, "", "")] = m.GetCounter().GetValue()
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				out[Key(name+"_count", ls, "", "")] = float64(h.GetSampleCount())
				out[Key(name+"_sum", ls, "", "")] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					out[Key(name+"_bucket", ls, "le", strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64))] = float64(b.GetCumulativeCount())
				}
			case dto.MetricType_SUMMARY:
				sm := m.GetSummary()
				out[Key(name+"_count", ls, "", "")] = float64(sm.GetSampleCount())
				out[Key(name+"_sum", ls, "", "")] = sm.GetSampleSum()
			}
		}
	}
	return out
}

// Regression is a series that must not go down and did, between two
// scrapes of the same process.
type Regression struct {
	Series   string
	From, To float64
	// Histogram is set for the count, sum and buckets of a histogram: the
	// client library resets a native histogram that outgrows its bucket
	// limit, classic count, sum and buckets included, at most once per
	// its NativeHistogramMinResetDuration. Only a run longer than that can
	// legitimately see one.
	Histogram bool
}

func (r Regression) String() string {
	return fmt.Sprintf("%s went from %v to %v", r.Series, r.From, r.To)
}

// Regressions compares prev with next, scraped later from the same process:
// every monotonic series present in both whose value went down. A series
// absent from either (new, or deleted by a reload that removed its agent)
// is not compared.
func Regressions(prev, next *Scrape) []Regression {
	a, b := prev.Monotonic(), next.Monotonic()
	hist := map[string]bool{}
	for name, mf := range next.Families {
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			hist[name] = true
		}
	}
	var out []Regression
	for k, to := range b {
		from, ok := a[k]
		if !ok || to >= from || (math.IsNaN(from) && math.IsNaN(to)) {
			continue
		}
		name, _, _ := strings.Cut(k, "{")
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count"), "_sum")
		out = append(out, Regression{Series: k, From: from, To: to, Histogram: hist[base] && base != name})
	}
	slices.SortFunc(out, func(x, y Regression) int { return strings.Compare(x.Series, y.Series) })
	return out
}

// Diff returns the keys of b missing from a (added) and those of a missing
// from b (removed), sorted.
func Diff(a, b map[string]bool) (added, removed []string) {
	for k := range b {
		if !a[k] {
			added = append(added, k)
		}
	}
	for k := range a {
		if !b[k] {
			removed = append(removed, k)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	return added, removed
}

// Key names one series: name{label="value",…}, labels sorted by name, plus
// the extra label (such as a bucket's le) when extraName is not empty.
func Key(name string, labels []*dto.LabelPair, extraName, extraValue string) string {
	pairs := make([]string, 0, len(labels)+1)
	for _, lp := range labels {
		pairs = append(pairs, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
	}
	if extraName != "" {
		pairs = append(pairs, fmt.Sprintf("%s=%q", extraName, extraValue))
	}
	slices.Sort(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	case m.Summary != nil:
		return float64(m.GetSummary().GetSampleCount())
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

// HasLabels reports whether m carries every label of match with its value.
func HasLabels(m *dto.Metric, match map[string]string) bool {
	for k, v := range match {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == k && lp.GetValue() == v {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Flatness is how a sampled quantity (goroutines, open fds, heap) moved
// over a run, after its warm-up: the range of all samples and of each half.
// A leak grows with time, so it lifts the second half above the first:
// its peak (what the process holds busy, which is what runs out) and its
// floor (what it holds at rest, such as the live heap after a collection).
// Noise — requests in flight, garbage not yet collected — moves both halves
// alike.
type Flatness struct {
	Min, Max          float64
	FirstMin, LastMin float64
	FirstMax, LastMax float64
}

// Flat splits samples into a first and a second half; it needs at least
// two.
func Flat(samples []float64) Flatness {
	inf := math.Inf(1)
	f := Flatness{Min: inf, Max: -inf, FirstMin: inf, LastMin: inf, FirstMax: -inf, LastMax: -inf}
	half := len(samples) / 2
	for i, v := range samples {
		f.Min, f.Max = min(f.Min, v), max(f.Max, v)
		if i < half {
			f.FirstMin, f.FirstMax = min(f.FirstMin, v), max(f.FirstMax, v)
		} else {
			f.LastMin, f.LastMax = min(f.LastMin, v), max(f.LastMax, v)
		}
	}
	return f
}

// PeakLimit is how high the second half's maximum may go: the first
// half's, plus rel of it, plus abs.
func (f Flatness) PeakLimit(abs, rel float64) float64 { return f.FirstMax*(1+rel) + abs }

// FloorLimit is how high the second half's minimum may go: the first
// half's, plus rel of it, plus abs.
func (f Flatness) FloorLimit(abs, rel float64) float64 { return f.FirstMin*(1+rel) + abs }

// Scaled divides every figure by by, for printing (bytes as MB).
func (f Flatness) Scaled(by float64) Flatness {
	return Flatness{Min: f.Min / by, Max: f.Max / by, FirstMin: f.FirstMin / by, LastMin: f.LastMin / by,
		FirstMax: f.FirstMax / by, LastMax: f.LastMax / by}
}

func (f Flatness) String() string {
	return fmt.Sprintf("min %.0f max %.0f; first half %.0f–%.0f, second half %.0f–%.0f",
		f.Min, f.Max, f.FirstMin, f.FirstMax, f.LastMin, f.LastMax)
}
