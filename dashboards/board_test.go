package dashboards

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The tests read the dashboards as they are written (Files), so that they
// check what Grafana will load.

type jsonDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type jsonTarget struct {
	RefID        string          `json:"refId"`
	Expr         string          `json:"expr"`
	LegendFormat string          `json:"legendFormat"`
	Format       string          `json:"format"`
	Datasource   *jsonDatasource `json:"datasource"`
}

type jsonGridPos struct {
	X, Y, W, H int
}

type jsonPanel struct {
	ID          int             `json:"id"`
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	Description string          `json:"description"`
	Collapsed   bool            `json:"collapsed"`
	GridPos     *jsonGridPos    `json:"gridPos"`
	Datasource  *jsonDatasource `json:"datasource"`
	Targets     []jsonTarget    `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Panels []jsonPanel `json:"panels"`
}

type jsonVariable struct {
	Type       string          `json:"type"`
	Name       string          `json:"name"`
	Query      any             `json:"query"`
	Datasource *jsonDatasource `json:"datasource"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
	Current    struct {
		Value any `json:"value"`
	} `json:"current"`
}

type jsonAnnotation struct {
	Name        string          `json:"name"`
	Enable      bool            `json:"enable"`
	Datasource  *jsonDatasource `json:"datasource"`
	Expr        string          `json:"expr"`
	TitleFormat string          `json:"titleFormat"`
	TextFormat  string          `json:"textFormat"`
}

type jsonBoard struct {
	file     string
	UID      string   `json:"uid"`
	Title    string   `json:"title"`
	Tags     []string `json:"tags"`
	Editable bool     `json:"editable"`
	Refresh  string   `json:"refresh"`
	Time     struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"time"`
	Links []struct {
		Type        string   `json:"type"`
		Tags        []string `json:"tags"`
		KeepTime    bool     `json:"keepTime"`
		IncludeVars bool     `json:"includeVars"`
	} `json:"links"`
	Panels     []jsonPanel `json:"panels"`
	Templating struct {
		List []jsonVariable `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []jsonAnnotation `json:"list"`
	} `json:"annotations"`
}

// panels returns every panel, rows and the panels of collapsed rows
// included.
func (b jsonBoard) panels() []jsonPanel {
	var out []jsonPanel
	for _, p := range b.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// queryPanels returns the panels that query Prometheus: all but rows and
// text panels.
func (b jsonBoard) queryPanels() []jsonPanel {
	var out []jsonPanel
	for _, p := range b.panels() {
		if p.Type != "row" && p.Type != "text" {
			out = append(out, p)
		}
	}
	return out
}

// exprs returns every PromQL expression of the board: panel targets,
// annotations and query variables.
func (b jsonBoard) exprs() []string {
	var out []string
	for _, p := range b.queryPanels() {
		for _, t := range p.Targets {
			out = append(out, t.Expr)
		}
	}
	for _, a := range b.Annotations.List {
		out = append(out, a.Expr)
	}
	for _, v := range b.Templating.List {
		if q, ok := v.Query.(string); ok && v.Type == "query" {
			out = append(out, q)
		}
	}
	return out
}

func (b jsonBoard) variables() map[string]jsonVariable {
	out := map[string]jsonVariable{}
	for _, v := range b.Templating.List {
		out[v.Name] = v
	}
	return out
}

func loadBoards(t *testing.T) []jsonBoard {
	t.Helper()
	boards, err := Boards()
	if err != nil {
		t.Fatalf("Boards: %v", err)
	}
	files, err := Files()
	if err != nil {
		t.Fatalf("Files: %v", err)
	}
	out := make([]jsonBoard, 0, len(boards))
	for _, b := range boards {
		var jb jsonBoard
		if err := json.Unmarshal(files[b.File], &jb); err != nil {
			t.Fatalf("decode %s: %v", b.File, err)
		}
		jb.file = b.File
		out = append(out, jb)
	}
	return out
}

func TestBoardsIdentity(t *testing.T) {
	want := []struct {
		file, uid string
	}{
		{"chimeraforge-overview.json", "chimeraforge-overview"},
		{"chimeraforge-agent.json", "chimeraforge-agent"},
		{"chimeraforge-targets.json", "chimeraforge-targets"},
		{"chimeraforge-regression.json", "chimeraforge-regression"},
	}
	boards := loadBoards(t)
	if len(boards) != len(want) {
		t.Fatalf("Boards returned %d dashboards, want %d", len(boards), len(want))
	}
	for i, w := range want {
		b := boards[i]
		t.Run(w.file, func(t *testing.T) {
			if b.file != w.file || b.UID != w.uid {
				t.Errorf("board %d is %s (uid %q), want %s (uid %q)", i, b.file, b.UID, w.file, w.uid)
			}
			if b.Title == "" {
				t.Error("no title")
			}
			if !slices.Contains(b.Tags, boardTag) {
				t.Errorf("tags %v lack %q", b.Tags, boardTag)
			}
			if b.Time.From != "now-6h" || b.Time.To != "now" || b.Refresh != "30s" || !b.Editable {
				t.Errorf("time %s..%s, refresh %q, editable %v; want now-6h..now, 30s, editable", b.Time.From, b.Time.To, b.Refresh, b.Editable)
			}
			linked := false
			for _, l := range b.Links {
				if l.Type == "dashboards" && slices.Contains(l.Tags, boardTag) && l.KeepTime && l.IncludeVars {
					linked = true
				}
			}
			if !linked {
				t.Errorf("no link to the dashboards tagged %q keeping time and variables", boardTag)
			}
		})
	}
}

// sentences counts the sentences of a description: a full stop, question
// or exclamation mark followed by a space or the end.
var sentenceEnd = regexp.MustCompile(`[.!?](\s|$)`)

func TestPanelsAreDescribed(t *testing.T) {
	for _, b := range loadBoards(t) {
		ids := map[int]string{}
		for _, p := range b.panels() {
			name := b.file + ": " + p.Title
			if prev, ok := ids[p.ID]; ok {
				t.Errorf("%s: id %d already used by %q", name, p.ID, prev)
			}
			ids[p.ID] = p.Title
			if p.Title == "" {
				t.Errorf("%s: panel %d has no title", b.file, p.ID)
			}
			if p.Type == "row" {
				continue
			}
			if n := len(sentenceEnd.FindAllString(p.Description, -1)); n < 1 || n > 3 {
				t.Errorf("%s: description has %d sentences, want 1 to 3: %q", name, n, p.Description)
			}
			if p.Type == "text" {
				continue
			}
			if p.Type != "table" && p.FieldConfig.Defaults.Unit == "" {
				t.Errorf("%s: no unit", name)
			}
			if !isBoardDatasource(p.Datasource) {
				t.Errorf("%s: datasource %+v, want prometheus ${datasource}", name, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no query", name)
			}
			refIDs := map[string]bool{}
			for _, q := range p.Targets {
				if strings.TrimSpace(q.Expr) == "" {
					t.Errorf("%s: query %s has no expr", name, q.RefID)
				}
				if q.RefID == "" || refIDs[q.RefID] {
					t.Errorf("%s: refId %q empty or repeated", name, q.RefID)
				}
				refIDs[q.RefID] = true
				if !isBoardDatasource(q.Datasource) {
					t.Errorf("%s: query %s datasource %+v, want prometheus ${datasource}", name, q.RefID, q.Datasource)
				}
			}
		}
		for _, a := range b.Annotations.List {
			if a.Expr == "" || a.TitleFormat == "" || a.TextFormat == "" || !a.Enable || !isBoardDatasource(a.Datasource) {
				t.Errorf("%s: annotation %q: want an enabled query on ${datasource} with expr, title and text", b.file, a.Name)
			}
		}
	}
}

func isBoardDatasource(ds *jsonDatasource) bool {
	return ds != nil && ds.Type == "prometheus" && ds.UID == "${"+varDatasource+"}"
}

func TestGridHasNoOverlap(t *testing.T) {
	for _, b := range loadBoards(t) {
		var placed []jsonPanel
		for _, p := range b.panels() {
			g := p.GridPos
			switch {
			case g == nil:
				t.Errorf("%s: %q has no gridPos", b.file, p.Title)
				continue
			case g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > gridWidth:
				t.Errorf("%s: %q gridPos %+v outside the %d-column grid", b.file, p.Title, *g, gridWidth)
			}
			for _, q := range placed {
				h := q.GridPos
				if g.X < h.X+h.W && h.X < g.X+g.W && g.Y < h.Y+h.H && h.Y < g.Y+g.H {
					t.Errorf("%s: %q %+v overlaps %q %+v", b.file, p.Title, *g, q.Title, *h)
				}
			}
			placed = append(placed, p)
		}
		for _, p := range b.Panels {
			// Grafana drops the panels of an expanded row.
			if p.Type == "row" && !p.Collapsed && len(p.Panels) > 0 {
				t.Errorf("%s: expanded row %q holds panels", b.file, p.Title)
			}
		}
	}
}

var (
	variableUse = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)`)
	builtins    = []string{"__rate_interval", "__interval", "__range", "__all"}
)

func TestVariablesAreDefinedAndUsed(t *testing.T) {
	for _, b := range loadBoards(t) {
		vars := b.variables()
		used := map[string]bool{varDatasource: true} // every panel's datasource
		var texts []string
		texts = append(texts, b.exprs()...)
		for _, p := range b.queryPanels() {
			for _, q := range p.Targets {
				texts = append(texts, q.LegendFormat)
			}
		}
		for _, s := range texts {
			for _, m := range variableUse.FindAllStringSubmatch(s, -1) {
				name := m[1] + m[2] + m[3]
				used[name] = true
				if _, ok := vars[name]; !ok && !slices.Contains(builtins, name) {
					t.Errorf("%s: $%s is neither a variable of the board nor a Grafana built-in, in %q", b.file, name, s)
				}
			}
		}
		for name, v := range vars {
			if !used[name] {
				t.Errorf("%s: variable %s is never used", b.file, name)
			}
			switch v.Type {
			case "datasource":
				if v.Query != "prometheus" {
					t.Errorf("%s: datasource variable %s selects %v, want prometheus", b.file, name, v.Query)
				}
			case "query":
				if !isBoardDatasource(v.Datasource) || !v.Multi || !v.IncludeAll || v.AllValue != allValue {
					t.Errorf("%s: variable %s: want a multi-value query on ${datasource} with All = %q", b.file, name, allValue)
				}
			case "custom":
				if name != varCompare || v.Query != "1d,1w" || v.Current.Value != "1w" {
					t.Errorf("%s: custom variable %s = %v (current %v), want compare = 1d,1w (1w)", b.file, name, v.Query, v.Current.Value)
				}
			}
		}
	}
	for _, b := range loadBoards(t) {
		if _, ok := b.variables()[varDatasource]; !ok {
			t.Errorf("%s: no %s variable", b.file, varDatasource)
		}
	}
}

// documentedMetric is a row of the Metrics table of docs/metrics.md.
type documentedMetric struct {
	kind   string
	labels []string
}

var backquoted = regexp.MustCompile("`([^`]+)`")

// documentedMetrics reads the Metrics table of docs/metrics.md: name →
// type and labels; a histogram also gives its classic series.
func documentedMetrics(t *testing.T) map[string]documentedMetric {
	t.Helper()
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]documentedMetric{}
	inTable := false
	for _, line := range strings.Split(string(doc), "\n") {
		switch {
		case strings.HasPrefix(line, "| Metric |"):
			inTable = true
			continue
		case !strings.HasPrefix(line, "|"):
			inTable = false
			continue
		case !inTable:
			continue
		}
		cells := strings.Split(line, "|") // escaped pipes occur only in the last column
		if len(cells) < 4 {
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		if !strings.HasPrefix(name, "chimeraforge_") {
			continue
		}
		m := documentedMetric{kind: strings.TrimSpace(cells[2])}
		for _, l := range backquoted.FindAllStringSubmatch(cells[3], -1) {
			m.labels = append(m.labels, l[1])
		}
		out[name] = m
		if m.kind == "histogram" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				out[name+suffix] = m
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no metric found in the Metrics table of docs/metrics.md")
	}
	return out
}

// recordedNames are the recording rules of Rules(DefaultThresholds).
func recordedNames() map[string]bool {
	out := map[string]bool{}
	for _, g := range Rules(DefaultThresholds).Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				out[r.Record] = true
			}
		}
	}
	return out
}

var (
	recordingName = regexp.MustCompile(`[a-z_]+:chimeraforge_[a-z0-9_]+:[a-z0-9_]+`)
	metricName    = regexp.MustCompile(`chimeraforge_[a-z0-9_]+`)
	// selector is a metric or recording rule with its matchers, if any.
	selector = regexp.MustCompile(`([a-z_]+:)?chimeraforge_[a-z0-9_]+(:[a-z0-9_]+)?(\{[^}]*\})?`)
)

func TestMetricNamesExist(t *testing.T) {
	documented := documentedMetrics(t)
	recorded := recordedNames()
	for _, b := range loadBoards(t) {
		for _, expr := range b.exprs() {
			for _, name := range recordingName.FindAllString(expr, -1) {
				if !recorded[name] {
					t.Errorf("%s: %s is not a recording rule of Rules(DefaultThresholds), in %q", b.file, name, expr)
				}
			}
			for _, name := range metricName.FindAllString(recordingName.ReplaceAllString(expr, ""), -1) {
				if _, ok := documented[name]; !ok {
					t.Errorf("%s: %s is not in the Metrics table of docs/metrics.md, in %q", b.file, name, expr)
				}
			}
		}
	}
}

// TestQueriesFollowVariables checks that every series a board reads is
// narrowed by each of the board's variables named like one of its labels,
// e.g. workload=~"$workload". GPU series follow only the gpu variable:
// their target label names a process's server. Recording rules are
// aggregated by workload.
func TestQueriesFollowVariables(t *testing.T) {
	documented := documentedMetrics(t)
	for _, b := range loadBoards(t) {
		vars := b.variables()
		var exprs []string
		for _, p := range b.queryPanels() {
			for _, q := range p.Targets {
				exprs = append(exprs, q.Expr)
			}
		}
		for _, a := range b.Annotations.List {
			exprs = append(exprs, a.Expr)
		}
		for _, expr := range exprs {
			for _, m := range selector.FindAllStringSubmatch(expr, -1) {
				name, matchers := strings.TrimSuffix(m[0], m[3]), m[3]
				var labels []string
				switch {
				case recordingName.MatchString(name):
					labels = []string{"workload"}
				case strings.HasPrefix(name, "chimeraforge_gpu_"):
					if slices.Contains(documented[name].labels, varGPU) {
						labels = []string{varGPU}
					}
				default:
					labels = documented[name].labels
				}
				for _, l := range labels {
					if _, ok := vars[l]; !ok {
						continue
					}
					if want := fmt.Sprintf(`%s=~"$%s"`, l, l); !strings.Contains(matchers, want) {
						t.Errorf("%s: %s%s lacks %s, in %q", b.file, name, matchers, want, expr)
					}
				}
			}
		}
	}
}

var rangeSelector = regexp.MustCompile(`\[([^\]]*)\]`)

func TestRawRatesUseRateInterval(t *testing.T) {
	for _, b := range loadBoards(t) {
		for _, expr := range b.exprs() {
			for _, m := range rangeSelector.FindAllStringSubmatch(expr, -1) {
				if m[1] != rateInterval {
					t.Errorf("%s: range [%s], want [%s] (recording rules carry their own window), in %q", b.file, m[1], rateInterval, expr)
				}
			}
		}
	}
}

// TestEmptyPanelsSaySo checks the sentences that tell a panel that may be
// empty from a broken one: exactly the panels that read a figure held from
// before a version change say EmptyUntilVersionChange, and exactly those
// whose every query looks $compare back say EmptyUntilCompareHistory.
func TestEmptyPanelsSaySo(t *testing.T) {
	heldBefore := regexp.MustCompile(regexp.QuoteMeta(RecTokensBeforeChange) + `|` + regexp.QuoteMeta(RecTTFTP95BeforeChange))
	offsetCompare := "offset $" + varCompare
	seen := map[string]int{}
	for _, b := range loadBoards(t) {
		for _, p := range b.queryPanels() {
			readsHeld, allOffset := false, true
			for _, q := range p.Targets {
				readsHeld = readsHeld || heldBefore.MatchString(q.Expr)
				allOffset = allOffset && strings.Contains(q.Expr, offsetCompare)
			}
			if got := strings.Contains(p.Description, EmptyUntilVersionChange); got != readsHeld {
				t.Errorf("%s: %q: says %q = %v, reads a before-change rule = %v", b.file, p.Title, EmptyUntilVersionChange, got, readsHeld)
			}
			if got := strings.Contains(p.Description, EmptyUntilCompareHistory); got != allOffset {
				t.Errorf("%s: %q: says %q = %v, every query offset by $compare = %v", b.file, p.Title, EmptyUntilCompareHistory, got, allOffset)
			}
			if readsHeld {
				seen["held"]++
			}
		}
	}
	if seen["held"] == 0 {
		t.Error("no panel shows the figures held from before a version change")
	}
}

func TestHeatmapsPreferNativeHistograms(t *testing.T) {
	heatmaps := 0
	for _, b := range loadBoards(t) {
		for _, p := range b.queryPanels() {
			if p.Type != "heatmap" {
				continue
			}
			heatmaps++
			if len(p.Targets) != 2 {
				t.Errorf("%s: %q has %d queries, want native and classic", b.file, p.Title, len(p.Targets))
				continue
			}
			native, classic := p.Targets[0], p.Targets[1]
			if strings.Contains(native.Expr, "_bucket") || !strings.Contains(classic.Expr, "_bucket") ||
				!strings.HasSuffix(classic.Expr, "unless on () "+native.Expr) || classic.Format != "heatmap" {
				t.Errorf("%s: %q: want A native and B = classic buckets (format heatmap) unless A, got A %q, B %q (format %q)",
					b.file, p.Title, native.Expr, classic.Expr, classic.Format)
			}
		}
	}
	if heatmaps == 0 {
		t.Error("no heatmap panel")
	}
}
