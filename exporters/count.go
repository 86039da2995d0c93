package exporters

import (
	"math"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// countVec is a counter family for counts a server reports (tokens). A
// client_golang counter keeps integral increments in a uint64 that wraps at
// 2⁶⁴, and every float64 from 2⁵³ up is integral: a server that reports
// absurd counts (eval_count 2⁶³, twice) would take such a counter back to
// 0, which Prometheus reads as a reset. countVec adds in float64 instead:
// exact up to 2⁵³ in total (centuries of tokens at any real rate), rounded
// beyond that, and never going back.
type countVec struct {
	desc   *prometheus.Desc
	labels []string

	mu     sync.Mutex
	series map[string]*count // by label values joined with countSep
}

const countSep = "\xff"

func newCountVec(name, help string, labels []string) *countVec {
	return &countVec{
		desc:   prometheus.NewDesc(name, help, labels, nil),
		labels: labels,
		series: map[string]*count{},
	}
}

// WithLabelValues returns the series of the label values, in the order of
// the family's labels, creating it at 0.
func (v *countVec) WithLabelValues(values ...string) *count {
	key := strings.Join(values, countSep)
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.series[key]
	if !ok {
		c = &count{desc: v.desc, values: append([]string(nil), values...)}
		v.series[key] = c
	}
	return c
}

// DeletePartialMatch deletes every series whose labels include match and
// returns how many it deleted.
func (v *countVec) DeletePartialMatch(match prometheus.Labels) int {
	idx := make(map[int]string, len(match))
	for name, value := range match {
		i := -1
		for j, l := range v.labels {
			if l == name {
				i = j
			}
		}
		if i < 0 {
			return 0
		}
		idx[i] = value
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for key, c := range v.series {
		matches := true
		for i, value := range idx {
			matches = matches && c.values[i] == value
		}
		if matches {
			delete(v.series, key)
			n++
		}
	}
	return n
}

// Describe implements prometheus.Collector.
func (v *countVec) Describe(ch chan<- *prometheus.Desc) { ch <- v.desc }

// Collect implements prometheus.Collector.
func (v *countVec) Collect(ch chan<- prometheus.Metric) {
	v.mu.Lock()
	series := make([]*count, 0, len(v.series))
	for _, c := range v.series {
		series = append(series, c)
	}
	v.mu.Unlock()
	for _, c := range series {
		c.Collect(ch)
	}
}

// count is one series of a countVec.
type count struct {
	desc   *prometheus.Desc
	values []string
	bits   atomic.Uint64 // float64
}

// Add adds x, which must not be negative. It does not allocate.
func (c *count) Add(x float64) {
	for {
		old := c.bits.Load()
		if c.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+x)) {
			return
		}
	}
}

// Value is the series' current value.
func (c *count) Value() float64 { return math.Float64frombits(c.bits.Load()) }

// Describe implements prometheus.Collector, so that one series can be
// gathered alone (testutil.ToFloat64).
func (c *count) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *count) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, c.Value(), c.values...)
}
