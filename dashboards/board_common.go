package dashboards

import (
	"errors"
	"fmt"
	"strings"

	"github.com/chimeraforge/chimeraforge/exporters"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/heatmap"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/statetimeline"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/text"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// The parts every board shares: the datasource, the variables, the query
// and panel discipline (title, description, unit) and the grid layout.

const (
	boardTag = "chimeraforge"

	varDatasource = "datasource"
	varGPU        = "gpu"
	varCompare    = "compare"

	// allValue makes "All" a regexp that matches every non-empty value,
	// rather than a long alternation of the values Grafana knows.
	allValue = ".+"

	// rateInterval is the window of every raw rate() on a board: Grafana
	// keeps it at least four scrape intervals. Recording rules carry
	// their own window.
	rateInterval = "$__rate_interval"

	gridWidth = 24
)

// Units, as Grafana unit ids.
const (
	unitSeconds      = "s"
	unitRatio        = "percentunit"
	unitShort        = "short"
	unitBytes        = "bytes"
	unitWatts        = "watt"
	unitCelsius      = "celsius"
	unitHertz        = "hertz"
	unitReqPerSecond = "reqps"
	unitTokensPerSec = "suffix: tokens/s"
	unitTokens       = "suffix: tokens"
	unitPerSecond    = "suffix: /s"
	unitTimes        = "suffix: ×"
)

// gpuEmpty ends every GPU panel's description: the GPU series exist only
// while NVML (or the demo's simulated GPU) works.
const gpuEmpty = "Empty when the GPU collector is down (no NVML); the demo exports a simulated GPU."

func ptr[T any](v T) *T { return &v }

// datasourceRef points every panel, query, variable and annotation at the
// Prometheus chosen in the datasource variable.
func datasourceRef() common.DataSourceRef {
	return common.DataSourceRef{Type: ptr("prometheus"), Uid: ptr("${" + varDatasource + "}")}
}

// match returns matchers that follow the dashboard variables named like
// the labels, e.g. workload=~"$workload", agent=~"$agent". Variables are
// multi-valued, hence =~.
func match(labels ...string) string {
	m := make([]string, len(labels))
	for i, l := range labels {
		m[i] = fmt.Sprintf(`%s=~"$%s"`, l, l)
	}
	return strings.Join(m, ", ")
}

// sel is metric{matchers}.
func sel(metric, matchers string) string {
	return metric + "{" + matchers + "}"
}

// rate is rate(metric{matchers}[$__rate_interval]).
func rate(metric, matchers string) string {
	return fmt.Sprintf("rate(%s[%s])", sel(metric, matchers), rateInterval)
}

// query is a range query with a legend, e.g. "{{agent}} / {{step}}".
func query(expr, legend string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().
		Datasource(datasourceRef()).
		Expr(expr).
		LegendFormat(legend).
		Range()
}

// tableQuery is an instant query whose labels become table columns.
func tableQuery(expr string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().
		Datasource(datasourceRef()).
		Expr(expr).
		Format(prometheus.PromQueryFormatTable).
		Instant()
}

// panelBuilder is what every SDK panel builder offers; describe relies on
// it so that no panel kind can skip the title, description or unit.
type panelBuilder[B any] interface {
	cog.Builder[dashboard.Panel]
	Title(title string) B
	Description(description string) B
	Unit(unit string) B
	Datasource(datasource common.DataSourceRef) B
	WithTarget(target cog.Builder[variants.Dataquery]) B
}

// describe sets what every panel must have: a title, a description that
// says what it shows and how it is computed, a unit, the datasource and
// its queries (refIds A, B, …).
func describe[B panelBuilder[B]](b B, title, unit, description string, queries ...*prometheus.DataqueryBuilder) B {
	b.Title(title)
	b.Description(description)
	b.Unit(unit)
	b.Datasource(datasourceRef())
	for i, q := range queries {
		b.WithTarget(q.RefId(string(rune('A' + i))))
	}
	return b
}

func timeseriesPanel(title, unit, description string, queries ...*prometheus.DataqueryBuilder) *timeseries.PanelBuilder {
	return describe(timeseries.NewPanelBuilder(), title, unit, description, queries...).
		Span(12).Height(8).
		FillOpacity(10).
		ShowPoints(common.VisibilityModeNever).
		// The SDK's zero values hide the legend and the tooltip.
		Legend(common.NewVizLegendOptionsBuilder().
			ShowLegend(true).
			DisplayMode(common.LegendDisplayModeList).
			Placement(common.LegendPlacementBottom)).
		Tooltip(common.NewVizTooltipOptionsBuilder().
			Mode(common.TooltipDisplayModeMulti).
			Sort(common.SortOrderDescending))
}

// statPanel shows the last value of each series.
func statPanel(title, unit, description string, queries ...*prometheus.DataqueryBuilder) *stat.PanelBuilder {
	return describe(stat.NewPanelBuilder(), title, unit, description, queries...).
		Span(6).Height(8).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Values(false)).
		ColorMode(common.BigValueColorModeBackground).
		GraphMode(common.BigValueGraphModeNone)
}

func tablePanel(title, description string, q *prometheus.DataqueryBuilder) *table.PanelBuilder {
	return describe(table.NewPanelBuilder(), title, unitShort, description, q).Span(12).Height(8)
}

// stateTimelinePanel shows, per series, which state held when.
func stateTimelinePanel(title, unit, description string, queries ...*prometheus.DataqueryBuilder) *statetimeline.PanelBuilder {
	return describe(statetimeline.NewPanelBuilder(), title, unit, description, queries...).
		Span(12).Height(8).
		ShowValue(common.VisibilityModeNever).
		Tooltip(common.NewVizTooltipOptionsBuilder().Mode(common.TooltipDisplayModeSingle).Sort(common.SortOrderNone))
}

func textPanel(title, description, markdown string) *text.PanelBuilder {
	return text.NewPanelBuilder().
		Title(title).
		Description(description).
		Mode(text.TextModeMarkdown).
		Content(markdown).
		Span(gridWidth).Height(8)
}

// heatmapPanel shows a latency histogram over time. Query A reads the
// native histogram; query B the classic buckets, only while there is no
// native histogram (Prometheus drops the classic series when it ingests
// native ones, unless told to keep both), so a bucket is never counted
// twice.
func heatmapPanel(title, description, metric, matchers string) *heatmap.PanelBuilder {
	native := fmt.Sprintf("sum(%s)", rate(metric, matchers))
	classic := fmt.Sprintf("sum by (le) (%s) unless on () %s", rate(metric+"_bucket", matchers), native)
	return describe(heatmap.NewPanelBuilder(), title, unitSeconds, description,
		query(native, "native"),
		query(classic, "{{le}}").Format(prometheus.PromQueryFormatHeatmap),
	).
		Span(12).Height(9).
		Calculate(false).
		YAxis(heatmap.NewYAxisConfigBuilder().Unit(unitSeconds)).
		CellValues(heatmap.NewCellValuesBuilder().Unit(unitPerSecond)).
		Tooltip(heatmap.NewHeatmapTooltipBuilder().Mode(common.TooltipDisplayModeSingle).YHistogram(true)).
		Color(heatmap.NewHeatmapColorOptionsBuilder().
			Mode(heatmap.HeatmapColorModeScheme).
			Scheme("Oranges").
			Scale(heatmap.HeatmapColorScaleExponential).
			Exponent(0.5).
			Steps(64))
}

// step is one threshold: from value upwards, colour.
type step struct {
	value float64
	color string
}

// thresholds colours values from base upwards, changing at each step.
func thresholds(base string, steps ...step) *dashboard.ThresholdsConfigBuilder {
	out := []dashboard.Threshold{{Color: base}}
	for _, s := range steps {
		out = append(out, dashboard.Threshold{Value: ptr(s.value), Color: s.color})
	}
	return dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps(out)
}

// thresholdLines draws a panel's thresholds as dashed lines.
func thresholdLines() *common.GraphThresholdsStyleConfigBuilder {
	return common.NewGraphThresholdsStyleConfigBuilder().Mode(common.GraphThresholdsStyleModeDashed)
}

// boolMapping names the 0 and 1 of a boolean gauge and colours them.
func boolMapping(zero, zeroColor, one, oneColor string) []dashboard.ValueMapping {
	return []dashboard.ValueMapping{{ValueMap: &dashboard.ValueMap{
		Type: dashboard.MappingTypeValueToText,
		Options: map[string]dashboard.ValueMappingResult{
			"0": {Text: ptr(zero), Color: ptr(zeroColor), Index: ptr(int32(0))},
			"1": {Text: ptr(one), Color: ptr(oneColor), Index: ptr(int32(1))},
		},
	}}}
}

// upDown maps an up gauge: 0 down (red), 1 up (green).
func upDown() []dashboard.ValueMapping { return boolMapping("down", "red", "up", "green") }

// Variables.

func datasourceVar() *dashboard.DatasourceVariableBuilder {
	return dashboard.NewDatasourceVariableBuilder(varDatasource).
		Label("Prometheus").
		Type("prometheus")
}

// labelVar is a multi-value variable over the values of label on the
// series of expr (a metric with matchers), "All" selected.
func labelVar(label, expr string) *dashboard.QueryVariableBuilder {
	q := fmt.Sprintf("label_values(%s, %s)", expr, label)
	return dashboard.NewQueryVariableBuilder(label).
		Label(label).
		Datasource(datasourceRef()).
		Query(dashboard.StringOrMap{String: &q}).
		Definition(q).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		Sort(dashboard.VariableSortNaturalAsc).
		Multi(true).
		IncludeAll(true).
		AllValue(allValue).
		Current(dashboard.VariableOption{
			Selected: ptr(true),
			Text:     dashboard.StringOrArrayOfString{ArrayOfString: []string{"All"}},
			Value:    dashboard.StringOrArrayOfString{ArrayOfString: []string{"$__all"}},
		})
}

// The request-side variables narrow each other: agents of the selected
// workloads, targets of the selected agents, steps of the selected agents.

func workloadVar() *dashboard.QueryVariableBuilder {
	return labelVar(exporters.LabelWorkload, exporters.MetricRequestsInFlight)
}

func agentVar() *dashboard.QueryVariableBuilder {
	return labelVar(exporters.LabelAgent, sel(exporters.MetricRequestsInFlight, match(exporters.LabelWorkload)))
}

// targetVar lists the targets of the requests that match the variables
// named by filters.
func targetVar(filters ...string) *dashboard.QueryVariableBuilder {
	return labelVar(exporters.LabelTarget, sel(exporters.MetricRequestsInFlight, match(filters...)))
}

func stepVar() *dashboard.QueryVariableBuilder {
	return labelVar(exporters.LabelStep, sel(exporters.MetricRequestsTotal, match(exporters.LabelWorkload, exporters.LabelAgent)))
}

// compareVar is how far back the regression board compares.
func compareVar() *dashboard.CustomVariableBuilder {
	values := "1d,1w"
	option := func(v string, selected bool) dashboard.VariableOption {
		return dashboard.VariableOption{
			Selected: ptr(selected),
			Text:     dashboard.StringOrArrayOfString{String: ptr(v)},
			Value:    dashboard.StringOrArrayOfString{String: ptr(v)},
		}
	}
	return dashboard.NewCustomVariableBuilder(varCompare).
		Label("compare with").
		Values(dashboard.StringOrMap{String: &values}).
		Current(option("1w", true)).
		Options([]dashboard.VariableOption{option("1d", false), option("1w", true)})
}

// Annotations.

// versionChangeAnnotation marks each new Ollama version a target reports,
// named after the target and the version it now runs. The set operation
// and the max keep it to one series per target and version when several
// daemons (replicas) watch the same target.
func versionChangeAnnotation() *dashboard.AnnotationQueryBuilder {
	targets := match(exporters.LabelTarget)
	expr := fmt.Sprintf("max by (target, version) (\n  %s\n  and on (target)\n  increase(%s[%s]) > 0\n)",
		sel(exporters.MetricOllamaInfo, targets),
		sel(exporters.MetricOllamaVersionChangesTotal, targets), rateInterval)
	return dashboard.NewAnnotationQueryBuilder().
		Name("Ollama version change").
		Datasource(datasourceRef()).
		Enable(true).
		IconColor("purple").
		Expr(expr).
		TitleFormat("Ollama version change on {{target}}").
		TextFormat("Target {{target}} now reports Ollama {{version}}.").
		TagKeys("target,version")
}

// calibrationAnnotation shades the time a workload spent calibrating: its
// agents were paused but the one being measured.
func calibrationAnnotation() *dashboard.AnnotationQueryBuilder {
	return dashboard.NewAnnotationQueryBuilder().
		Name("Calibration").
		Datasource(datasourceRef()).
		Enable(true).
		IconColor("blue").
		Expr(sel(exporters.MetricCalibrating, match(exporters.LabelWorkload)) + " == 1").
		TitleFormat("Calibrating {{workload}}").
		TextFormat("Workload {{workload}} is calibrating: its agents are paused but the one being measured.").
		TagKeys("workload")
}

// Layout.

// layout places panels on Grafana's 24-column grid under rows, left to
// right, wrapping when a panel would cross the right edge; positions are
// computed here rather than by the SDK so that they never overlap.
type layout struct {
	db  *dashboard.DashboardBuilder //nolint:staticcheck // Grafana provisions the classic JSON model from files; dashboardv2 is the newer API resource.
	y   uint32
	id  uint32
	err error
}

// newBoard starts a dashboard with the settings every board shares.
func newBoard(uid, title, description string) *layout {
	//nolint:staticcheck // the classic dashboard, as for layout.db
	db := dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Tags([]string{boardTag}).
		Editable().
		Time("now-6h", "now").
		Refresh("30s").
		Timezone("browser").
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Link(dashboard.NewDashboardLinkBuilder("Chimeraforge").
			Type(dashboard.DashboardLinkTypeDashboards).
			Tags([]string{boardTag}).
			AsDropdown(true).
			KeepTime(true).
			IncludeVars(true))
	return &layout{db: db}
}

// built hands an already built panel back to the dashboard builder.
type built dashboard.Panel

func (p built) Build() (dashboard.Panel, error) { return dashboard.Panel(p), nil }

// row adds a full-width row and lays its panels out below it. The row
// stays expanded, so its panels sit at the top level of the dashboard, as
// Grafana expects of an expanded row.
func (l *layout) row(title string, panels ...cog.Builder[dashboard.Panel]) {
	l.id++
	l.db.WithRow(dashboard.NewRowBuilder(title).
		Id(l.id).
		GridPos(dashboard.GridPos{X: 0, Y: l.y, W: gridWidth, H: 1}))
	l.y++
	var x, lineHeight uint32
	for _, b := range panels {
		p, err := b.Build()
		if err != nil {
			l.err = errors.Join(l.err, fmt.Errorf("row %q: %w", title, err))
			continue
		}
		size := dashboard.NewGridPos()
		if p.GridPos != nil {
			size = p.GridPos
		}
		if x+size.W > gridWidth {
			x, l.y, lineHeight = 0, l.y+lineHeight, 0
		}
		p.GridPos = &dashboard.GridPos{X: x, Y: l.y, W: size.W, H: size.H}
		l.id++
		p.Id = ptr(l.id)
		l.db.WithPanel(built(p))
		x += size.W
		lineHeight = max(lineHeight, size.H)
	}
	l.y += lineHeight
}

func (l *layout) build(file string) (Board, error) {
	if l.err != nil {
		return Board{}, fmt.Errorf("build %s: %w", file, l.err)
	}
	d, err := l.db.Build()
	if err != nil {
		return Board{}, fmt.Errorf("build %s: %w", file, err)
	}
	// The SDK puts links and annotation toggles in the controls menu by
	// default; leave them where every Grafana version shows them.
	for i := range d.Links {
		d.Links[i].Placement = nil
	}
	for i := range d.Annotations.List {
		d.Annotations.List[i].Placement = nil
	}
	return Board{File: file, Dashboard: d}, nil
}
