package exporters

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/chimeraforge/chimeraforge/observe"
)

var testLabels = observe.Labels{Workload: "chat", Agent: "planner", Target: "gpu0", Model: "llama3.2:1b", Step: "outline"}

// newTestMetrics returns Metrics registered with a fresh pedantic registry.
func newTestMetrics(t testing.TB) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatalf("NewMetrics: %v", err)
	}
	return m, reg
}

// gatherFamily returns the family name from reg, or nil if it has no series.
func gatherFamily(t testing.TB, reg prometheus.Gatherer, name string) *dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf
		}
	}
	return nil
}

// labelsMatch reports whether m carries every label of want.
func labelsMatch(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// histogram returns the histogram of family name whose labels include want;
// it fails the test when there is none.
func histogram(t testing.TB, reg prometheus.Gatherer, name string, want map[string]string) *dto.Histogram {
	t.Helper()
	mf := gatherFamily(t, reg, name)
	for _, m := range mf.GetMetric() {
		if labelsMatch(m, want) {
			return m.GetHistogram()
		}
	}
	t.Fatalf("%s%v: no such series", name, want)
	return nil
}

// requestLabelMap is l as Prometheus labels.
func requestLabelMap(l observe.Labels) map[string]string {
	return map[string]string{LabelWorkload: l.Workload, LabelAgent: l.Agent, LabelTarget: l.Target, LabelModel: l.Model, LabelStep: l.Step}
}

// seriesOf counts the series in reg with the labels of want, over all families.
func seriesOf(t testing.TB, reg prometheus.Gatherer, want map[string]string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if labelsMatch(m, want) {
				n++
			}
		}
	}
	return n
}
