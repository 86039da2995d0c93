package exporters

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/chimeraforge/chimeraforge/exporters/gpu"
	"github.com/chimeraforge/chimeraforge/exporters/requestlog"
	"github.com/chimeraforge/chimeraforge/observe"
)

const metricsDoc = "../docs/metrics.md"

var docTableHeader = []string{"Metric", "Type", "Labels", "Unit", "Meaning and formula"}

// docMetric is one row of the metric table of docs/metrics.md.
type docMetric struct {
	typ    string
	labels []string // sorted
	line   int
}

// fullRegistry registers everything the daemon registers, optional metrics
// included, with at least one series in every family; opts go to
// NewMetrics.
func fullRegistry(t testing.TB, opts ...Option) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReload(reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := NewBuildInfo(reg); err != nil {
		t.Fatal(err)
	}
	if err := RegisterRuntime(reg); err != nil {
		t.Fatal(err)
	}
	// The GPU collector, on a simulated device with one process, so that
	// every one of its families has a series.
	gc := gpu.New(gpu.Simulated(func() []gpu.SimDevice {
		return []gpu.SimDevice{{UtilizationRatio: 0.5, MemoryUsedBytes: 1 << 30, MemoryTotalBytes: 1 << 34,
			Processes: []gpu.SimProcess{{PID: 42, MemoryBytes: 1 << 30}}}}
	}), gpu.Options{})
	t.Cleanup(gc.Close)
	if err := reg.Register(gc); err != nil {
		t.Fatal(err)
	}
	r.Observe(true, time.Now())
	rec := m.Recorder(testLabels)
	rec.Started(true)
	rec.TokenGap(30 * time.Millisecond)
	rec.Retried(observe.ReasonConnect)
	rec.Finished(&observe.Request{
		Labels: testLabels, Outcome: observe.OutcomeSuccess, Duration: time.Second, FirstToken: true,
		TimeToFirst: 200 * time.Millisecond, QueueWait: 10 * time.Millisecond, Done: true,
		EvalCount: 30, PromptEvalCount: 12, EvalDuration: 900 * time.Millisecond,
		PromptEvalDuration: 50 * time.Millisecond, LoadDuration: 2 * time.Millisecond,
	})
	m.RunFinished(observe.Run{Workload: testLabels.Workload, Agent: testLabels.Agent, Outcome: observe.OutcomeSuccess, Duration: time.Second, Steps: 1})
	m.ScheduleDelay(testLabels.Workload, time.Millisecond)
	m.TargetPolled(observe.TargetState{Target: testLabels.Target, Up: true, Version: "0.17.4",
		Models: []observe.LoadedModel{{Name: testLabels.Model, SizeBytes: 1, VRAMBytes: 1, ContextLength: 2048, ExpiresAt: time.Now()}}})
	m.Calibrated(observe.Calibration{Workload: testLabels.Workload, Agent: testLabels.Agent, Model: testLabels.Model,
		OK: true, Runs: 1, Wall: time.Second, TokensPerSecond: map[string]float64{testLabels.Target: 10}, At: time.Now()})
	m.ArrivalDropped(testLabels.Workload)
	m.Shard(0, 1)
	// The request log's counters, registered only with --request-log.
	rl := requestlog.New(t.Context(), io.Discard, requestlog.Options{})
	t.Cleanup(func() { _ = rl.Close() })
	if err := reg.Register(rl); err != nil {
		t.Fatal(err)
	}
	return reg
}

func TestMetricsDocMatchesRegistry(t *testing.T) {
	doc := parseMetricsDoc(t, metricsDoc)
	mfs, err := fullRegistry(t).Gather()
	if err != nil {
		t.Fatal(err)
	}
	var problems []string
	registered := map[string]bool{}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "chimeraforge_") {
			continue // go_* and process_*: one row for the standard collectors
		}
		registered[name] = true
		d, ok := doc[name]
		if !ok {
			problems = append(problems, "registered but not documented: "+name)
			continue
		}
		if typ := typeName(mf.GetType()); typ != d.typ {
			problems = append(problems, fmt.Sprintf("%s:%d: %s: documented as %s, registered as %s", metricsDoc, d.line, name, d.typ, typ))
		}
		if labels := labelNames(mf); !slices.Equal(labels, d.labels) {
			problems = append(problems, fmt.Sprintf("%s:%d: %s: documented labels %q, registered %q", metricsDoc, d.line, name, d.labels, labels))
		}
	}
	for name, d := range doc {
		if !registered[name] {
			problems = append(problems, fmt.Sprintf("%s:%d: documented but not registered: %s", metricsDoc, d.line, name))
		}
	}
	slices.Sort(problems)
	for _, p := range problems {
		t.Error(p)
	}
	if len(doc) == 0 {
		t.Error("no chimeraforge_* rows found in " + metricsDoc)
	}
}

// TestNameConstantsDocumented keeps names.go and the document in step too:
// every Metric* constant has a row.
func TestNameConstantsDocumented(t *testing.T) {
	doc := parseMetricsDoc(t, metricsDoc)
	for _, name := range []string{
		MetricRequestsTotal, MetricRequestErrorsTotal, MetricRequestRetriesTotal, MetricGeneratedTokensTotal, MetricPromptTokensTotal,
		MetricEvalDurationSecondsTotal, MetricPromptEvalDurationSecondsTotal, MetricLoadDurationSecondsTotal,
		MetricContentionEventsTotal, MetricAgentRunsTotal, MetricArrivalsDroppedTotal,
		MetricTimeToFirstTokenSeconds, MetricInterTokenLatencySeconds, MetricRequestDurationSeconds,
		MetricQueueWaitSeconds, MetricAgentRunDurationSeconds, MetricScheduleDelaySeconds,
		MetricRequestsInFlight, MetricShardInfo, MetricConfigLastReloadSuccessful, MetricConfigLastReloadSuccessTimestampSeconds,
		MetricBuildInfo, requestlog.MetricLinesTotal, requestlog.MetricDroppedLinesTotal,
	} {
		if _, ok := doc[name]; !ok {
			t.Errorf("constant %s has no row in %s", name, metricsDoc)
		}
	}
}

var backticked = regexp.MustCompile("`([^`]*)`")

// parseMetricsDoc reads the table of docs/metrics.md whose header is
// docTableHeader and returns its chimeraforge_* rows by metric name.
func parseMetricsDoc(t *testing.T, path string) map[string]docMetric {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("read the metric contract: %v", err)
	}
	defer func() { _ = f.Close() }()
	rows := map[string]docMetric{}
	inTable, tables := false, 0
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(text, "|") {
			inTable = false
			continue
		}
		cells := splitRow(text)
		if !inTable {
			if slices.Equal(cells, docTableHeader) {
				inTable = true
				tables++
			}
			continue
		}
		if strings.Trim(strings.Join(cells, ""), "-: ") == "" {
			continue // the delimiter row
		}
		if len(cells) != len(docTableHeader) {
			t.Errorf("%s:%d: %d cells, want %d", path, line, len(cells), len(docTableHeader))
			continue
		}
		names := backticked.FindAllStringSubmatch(cells[0], -1)
		if len(names) == 0 {
			t.Errorf("%s:%d: no `metric_name` in the first cell", path, line)
			continue
		}
		name := names[0][1]
		if !strings.HasPrefix(name, "chimeraforge_") {
			continue
		}
		if len(names) != 1 {
			t.Errorf("%s:%d: one metric per row, found %d", path, line, len(names))
		}
		if _, dup := rows[name]; dup {
			t.Errorf("%s:%d: %s documented twice", path, line, name)
		}
		var labels []string
		for _, m := range backticked.FindAllStringSubmatch(cells[2], -1) {
			labels = append(labels, m[1])
		}
		slices.Sort(labels)
		rows[name] = docMetric{typ: cells[1], labels: labels, line: line}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if tables != 1 {
		t.Errorf("%s: %d tables with header %q, want 1", path, tables, docTableHeader)
	}
	return rows
}

// splitRow splits a markdown table row into trimmed cells; `\|` is a pipe
// inside a cell.
func splitRow(row string) []string {
	row = strings.TrimSuffix(strings.TrimPrefix(row, "|"), "|")
	var cells []string
	var cell strings.Builder
	for i := 0; i < len(row); i++ {
		switch {
		case row[i] == '\\' && i+1 < len(row) && row[i+1] == '|':
			cell.WriteByte('|')
			i++
		case row[i] == '|':
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
		default:
			cell.WriteByte(row[i])
		}
	}
	return append(cells, strings.TrimSpace(cell.String()))
}

func typeName(t dto.MetricType) string {
	switch t {
	case dto.MetricType_COUNTER:
		return "counter"
	case dto.MetricType_GAUGE:
		return "gauge"
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return "histogram"
	case dto.MetricType_SUMMARY:
		return "summary"
	default:
		return "untyped"
	}
}

// labelNames returns the sorted label names of the family's first series.
func labelNames(mf *dto.MetricFamily) []string {
	var names []string
	if ms := mf.GetMetric(); len(ms) > 0 {
		for _, lp := range ms[0].GetLabel() {
			names = append(names, lp.GetName())
		}
	}
	slices.Sort(names)
	return names
}
