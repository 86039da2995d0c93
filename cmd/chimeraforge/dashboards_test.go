package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chimeraforge/chimeraforge/config"
	"github.com/chimeraforge/chimeraforge/dashboards"
	"github.com/chimeraforge/chimeraforge/internal/promtest"
	"go.yaml.in/yaml/v3"
)

// The generated dashboards and rules, proven against the demo: the daemon
// runs the built-in demo, and two real Prometheus servers scrape it every
// second with the generated rules loaded, one ingesting native histograms
// and one the classic buckets. A second daemon runs the demo with
// global.metrics.classic_histograms false, scraped by a third server that
// ingests native histograms. Every panel query (variables substituted)
// and every recording rule must evaluate without error and, on every
// server, show data; only panels documented as empty until a version
// change may be empty.

// panelQuery is one query of a panel as Grafana would send it.
type panelQuery struct {
	board, panel, refID, expr string
	mayBeEmpty                bool
}

func (q panelQuery) String() string {
	return fmt.Sprintf("%s / %q / %s", q.board, q.panel, q.refID)
}

// gridVars are the values the test gives Grafana's variables: every
// template variable at its All value, the comparison offset short enough
// for a test that runs a minute, and the built-ins as Grafana computes
// them for a 1 s scrape interval.
var gridVars = map[string]string{
	"workload":        ".+",
	"agent":           ".+",
	"target":          ".+",
	"step":            ".+",
	"gpu":             ".+",
	"compare":         "20s",
	"__rate_interval": "4s",
	"__interval":      "1s",
	"__range":         "60s",
	"__range_s":       "60",
	"__interval_ms":   "1000",
}

var varRef = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[a-z]+)?\}|\$([A-Za-z0-9_]+)`)

func substitute(t *testing.T, expr string) string {
	return varRef.ReplaceAllStringFunc(expr, func(m string) string {
		sub := varRef.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		v, ok := gridVars[name]
		if !ok {
			t.Errorf("query uses variable $%s, which the test does not know: %s", name, expr)
		}
		return v
	})
}

// boardQueries walks a dashboard's panels, rows included, its variables
// and its annotations.
func boardQueries(t *testing.T, file string, raw []byte) (queries []panelQuery, variables []string, annotations map[string]string) {
	t.Helper()
	var board struct {
		Title       string            `json:"title"`
		Panels      []json.RawMessage `json:"panels"`
		Annotations struct {
			List []struct {
				Name string `json:"name"`
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
		Templ struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &board); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	type panel struct {
		Title       string            `json:"title"`
		Type        string            `json:"type"`
		Description string            `json:"description"`
		Panels      []json.RawMessage `json:"panels"`
		Targets     []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	}
	var walk func([]json.RawMessage)
	walk = func(raws []json.RawMessage) {
		for _, r := range raws {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("%s: panel: %v", file, err)
			}
			walk(p.Panels)
			for _, tg := range p.Targets {
				queries = append(queries, panelQuery{
					board: board.Title, panel: p.Title, refID: tg.RefID,
					expr:       substitute(t, tg.Expr),
					mayBeEmpty: strings.Contains(p.Description, dashboards.EmptyUntilVersionChange),
				})
			}
		}
	}
	walk(board.Panels)
	for _, v := range board.Templ.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		variables = append(variables, substitute(t, q))
	}
	annotations = map[string]string{}
	for _, a := range board.Annotations.List {
		annotations[a.Name] = substitute(t, a.Expr)
	}
	return queries, variables, annotations
}

// labelValues turns Grafana's label_values(METRIC_SELECTOR, LABEL) into
// PromQL listing the values.
var labelValuesRE = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

func TestDashboardsAndRulesAgainstPrometheus(t *testing.T) {
	files, err := dashboards.Files()
	if err != nil {
		t.Fatal(err)
	}
	rulesYAML := string(files[dashboards.RulesFile])
	var queries []panelQuery
	var varQueries []string
	annotations := map[string]string{}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		q, v, a := boardQueries(t, name, files[name])
		queries = append(queries, q...)
		varQueries = append(varQueries, v...)
		for n, expr := range a {
			if prev, ok := annotations[n]; ok && prev != expr {
				t.Errorf("annotation %q differs between dashboards:\n%s\n%s", n, prev, expr)
			}
			annotations[n] = expr
		}
	}
	if len(queries) < 40 {
		t.Fatalf("only %d panel queries in %d files: the walk is broken", len(queries), len(names))
	}
	var records []string
	var rf dashboards.RuleFile
	if err := yaml.Unmarshal([]byte(rulesYAML), &rf); err != nil {
		t.Fatal(err)
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Record != "" && !slices.Contains(records, r.Record) {
				records = append(records, r.Record)
			}
		}
	}
	const versionAnnotation, calibrationAnnotation = "Ollama version change", "Calibration"
	if len(annotations) != 2 || annotations[versionAnnotation] == "" || annotations[calibrationAnnotation] == "" {
		t.Fatalf("annotations %v: want %q and %q", annotations, versionAnnotation, calibrationAnnotation)
	}
	recordMayBeEmpty := map[string]bool{
		// Held values exist only from an hour after a target's version
		// changed (promtool unit tests in dashboards/testdata cover them).
		dashboards.RecTokensBeforeChange:  true,
		dashboards.RecTTFTP95BeforeChange: true,
		// The demo's workload is closed-loop: it has no arrival schedule.
		dashboards.RecScheduleDelayP99_5m: true,
	}

	// The demo, from a file, so that a reload can change its simulated
	// Ollama version below; and the demo exposing native histograms only.
	began := time.Now()
	demos := map[string]string{"": string(config.DemoYAML), "native-only": nativeOnly(t, string(config.DemoYAML))}
	r := startDaemon(t, demos[""], true)
	addr := strings.TrimPrefix(r.base, "http://")
	rNative := startDaemon(t, demos["native-only"], true)
	daemons := map[string]*running{"": r, "native-only": rNative}
	proms := map[string]*promtest.Server{
		"native":  promtest.StartOptions(t, promtest.Options{Interval: time.Second, Rules: rulesYAML, Targets: []string{addr}}),
		"classic": promtest.StartOptions(t, promtest.Options{Interval: time.Second, Rules: rulesYAML, Targets: []string{addr}, ClassicHistograms: true}),
		"native-only": promtest.StartOptions(t, promtest.Options{Interval: time.Second, Rules: rulesYAML,
			Targets: []string{strings.TrimPrefix(rNative.base, "http://")}}),
	}
	modes := []string{"classic", "native", "native-only"}
	// The demo calibrates both agents first; efficiency needs baselines.
	waitCalibrated(t, proms["native"], 2, 90*time.Second)
	waitCalibrated(t, proms["native-only"], 2, 90*time.Second)

	type result struct {
		n   int
		err error
	}
	eval := func(mode, expr string) result {
		n, err := proms[mode].RangeSeries(expr, 30*time.Second, time.Second)
		return result{n, err}
	}
	// Every query must show data within the limit; poll until they all do,
	// then report every one that does not.
	var problems []string
	deadline := time.Now().Add(90 * time.Second)
	for {
		problems = problems[:0]
		// A panel shows data when any of its queries does: the heatmaps hold
		// a native query and a classic fallback, each empty on one server.
		panels := map[string]map[string]bool{}
		for _, q := range queries {
			key := q.board + " / " + q.panel
			if panels[key] == nil {
				panels[key] = map[string]bool{}
			}
			got := map[string]result{}
			for _, mode := range modes {
				got[mode] = eval(mode, q.expr)
				if got[mode].err != nil {
					problems = append(problems, fmt.Sprintf("%s: %s: %v", q, mode, got[mode].err))
				}
				if got[mode].n > 0 || q.mayBeEmpty {
					panels[key][mode] = true
				}
			}
			if !q.mayBeEmpty && got["native"].n == 0 && got["classic"].n == 0 && got["native-only"].n == 0 {
				problems = append(problems, fmt.Sprintf("%s: empty on every server:\n%s", q, q.expr))
			}
		}
		for key, shown := range panels {
			for _, mode := range modes {
				if !shown[mode] {
					problems = append(problems, fmt.Sprintf("panel %s shows nothing on the %s server", key, mode))
				}
			}
		}
		for _, rec := range records {
			for _, mode := range modes {
				res := eval(mode, fmt.Sprintf("{__name__=%q}", rec))
				if res.err != nil || (res.n == 0 && !recordMayBeEmpty[rec]) {
					problems = append(problems, fmt.Sprintf("recording rule %s on the %s server: %d series, %v", rec, mode, res.n, res.err))
				}
			}
		}
		for _, vq := range varQueries {
			m := labelValuesRE.FindStringSubmatch(vq)
			if m == nil {
				problems = append(problems, fmt.Sprintf("variable query %q is not label_values(selector, label)", vq))
				continue
			}
			for _, mode := range modes {
				if res := eval(mode, fmt.Sprintf("count by (%s) (%s)", m[2], m[1])); res.err != nil || res.n == 0 {
					problems = append(problems, fmt.Sprintf("variable %s on the %s server: %d values, %v", vq, mode, res.n, res.err))
				}
			}
		}
		for _, mode := range modes {
			rp, err := proms[mode].RuleProblems()
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range rp {
				problems = append(problems, mode+" server: rule "+p)
			}
		}
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	for _, p := range problems {
		t.Error(p)
	}
	if len(problems) > 0 {
		return
	}
	// The demo calibrated at start: the calibration annotation marks it.
	whole := func(mode, expr string) int {
		n, err := proms[mode].RangeSeries(expr, time.Since(began)+5*time.Second, time.Second)
		if err != nil {
			t.Fatalf("%s server: %v", mode, err)
		}
		return n
	}
	for _, mode := range modes {
		if n := whole(mode, annotations[calibrationAnnotation]); n != 1 {
			t.Errorf("calibration annotation on the %s server: %d series, want 1 (workload report-pipeline)", mode, n)
		}
		if n := whole(mode, annotations[versionAnnotation]); n != 0 {
			t.Errorf("version-change annotation on the %s server before any change: %d series", mode, n)
		}
	}
	// The histograms are registered once: a reload that would turn the
	// classic buckets back on is refused, and the daemon keeps running
	// native-only.
	if err := os.WriteFile(rNative.file, []byte(demos[""]), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, body := rNative.post(t, "/-/reload"); code != http.StatusInternalServerError || !strings.Contains(body, "global.metrics.classic_histograms") {
		t.Errorf("reload turning classic histograms on: %d %q, want 500 naming global.metrics.classic_histograms", code, body)
	}
	m := rNative.scrape(t)
	if v := m.sum("chimeraforge_config_last_reload_successful", nil); v != 0 {
		t.Errorf("chimeraforge_config_last_reload_successful = %v after the refused reload, want 0", v)
	}
	for _, s := range m["chimeraforge_time_to_first_token_seconds"].GetMetric() {
		if n := len(s.GetHistogram().GetBucket()); n > 1 {
			t.Errorf("native-only TTFT %v has %d buckets in the text format after the refused reload, want only +Inf", s.GetLabel(), n)
		}
	}
	// An upgrade: both simulated servers of each daemon report a new
	// version after a reload. The annotation shows it, and the workload
	// that uses them counts it, which starts the before/after comparison.
	for name, d := range daemons {
		upgraded := strings.ReplaceAll(demos[name], "      gpu: sim-gpu0\n", "      gpu: sim-gpu0\n      version: 0.18.0-sim\n")
		if strings.Count(upgraded, "0.18.0-sim") != 2 {
			t.Fatalf("the demo's simulation instances changed shape; the upgrade edit matched %d times", strings.Count(upgraded, "0.18.0-sim"))
		}
		if err := os.WriteFile(d.file, []byte(upgraded), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, body := d.post(t, "/-/reload"); code != http.StatusOK {
			t.Fatalf("reload %s: %d %s", name, code, body)
		}
	}
	for _, mode := range modes {
		got := proms[mode].WaitQuery(t, fmt.Sprintf("%s > 0", dashboards.RecVersionChanges1h), 30*time.Second)
		if len(got) != 1 || got[0].Labels["workload"] != "report-pipeline" {
			t.Errorf("%s on the %s server: %v, want report-pipeline", dashboards.RecVersionChanges1h, mode, got)
		}
		eventually(t, 30*time.Second, "the version-change annotation", func() bool {
			return whole(mode, annotations[versionAnnotation]) == 2 // one per target
		})
	}
	t.Logf("%d panel queries, %d variables and %d recording rules evaluated on native and classic Prometheus, and native-only exposition", len(queries), len(varQueries), len(records))
}

// nativeOnly is demo with global.metrics.classic_histograms false.
func nativeOnly(t *testing.T, demo string) string {
	t.Helper()
	out := strings.Replace(demo, "\nglobal:\n", "\nglobal:\n  metrics: {classic_histograms: false}\n", 1)
	if out == demo {
		t.Fatal("the demo has no global section to add global.metrics to")
	}
	return out
}
