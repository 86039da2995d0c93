package dashboards

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/chimeraforge/chimeraforge/internal/testtool"
	"go.yaml.in/yaml/v3"
)

// The generated rule file is checked by promtool and unit-tested with
// promtool's rule tests in testdata/: every alert fires on realistic input
// and stays silent on a near miss, and the recording rules give the values
// the maths says. The tests read the committed file; TestGeneratedFilesAreCurrent
// makes sure it is what rules.go generates.

// ruleUnitTestFiles are the promtool rule-test files, relative to
// testdata/. rules_week_test.yml holds the tests that need a week of
// history, evaluated every 5 minutes to stay within promtool's limits.
var ruleUnitTestFiles = []string{"rules_test.yml", "rules_week_test.yml"}

// alertsDoc is the runbook every alert's runbook_url points into.
const alertsDoc = "../docs/alerts.md"

// rulesPath is the committed rule file, relative to this package.
var rulesPath = filepath.Join("generated", RulesFile)

func TestRulesCheck(t *testing.T) {
	promtool := testtool.LookPath(t, "promtool", "prometheus")
	out, err := exec.CommandContext(t.Context(), promtool, "check", "rules", rulesPath).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", rulesPath, err, out)
	}
}

func TestRulesUnit(t *testing.T) {
	promtool := testtool.LookPath(t, "promtool", "prometheus")
	for _, file := range ruleUnitTestFiles {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			// promtool resolves rule_files from its working directory.
			cmd := exec.CommandContext(t.Context(), promtool, "test", "rules", file)
			cmd.Dir = "testdata"
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("promtool test rules testdata/%s: %v\n%s", file, err, out)
			}
		})
	}
}

// ruleUnitTests is the part of promtool's rule-test format the coverage
// test reads.
type ruleUnitTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name           string `yaml:"name"`
		AlertRuleTests []struct {
			Alertname string `yaml:"alertname"`
			EvalTime  string `yaml:"eval_time"`
			ExpAlerts []struct {
				ExpLabels      map[string]string `yaml:"exp_labels"`
				ExpAnnotations map[string]string `yaml:"exp_annotations"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
		PromQLExprTests []struct {
			Expr string `yaml:"expr"`
		} `yaml:"promql_expr_test"`
	} `yaml:"tests"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
}

// TestEveryAlertTested checks that the unit tests cover every rule, and that
// every alert is labelled and annotated the way on-call needs: a severity
// Alertmanager can route on, a summary, a description, and a runbook_url
// that leads to the alert's section of docs/alerts.md.
func TestEveryAlertTested(t *testing.T) {
	var rules RuleFile
	readYAML(t, rulesPath, &rules)
	var alerts, records []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alerts = append(alerts, r.Alert)
				checkAlertMetadata(t, r)
			} else {
				records = append(records, r.Record)
			}
		}
	}
	if len(alerts) == 0 || len(records) == 0 {
		t.Fatalf("%s: %d alerts, %d recording rules", rulesPath, len(alerts), len(records))
	}

	firing := map[string]int{}
	silent := map[string]int{}
	var exprs []string
	for _, file := range ruleUnitTestFiles {
		var ut ruleUnitTests
		readYAML(t, filepath.Join("testdata", file), &ut)
		if want := []string{"../" + rulesPath}; !slices.Equal(ut.RuleFiles, want) {
			t.Errorf("testdata/%s: rule_files %q, want %q", file, ut.RuleFiles, want)
		}
		for _, tg := range ut.Tests {
			for _, at := range tg.AlertRuleTests {
				// promtool passes a test of an alert that does not exist
				// when it expects no alert: a misspelt name tests nothing.
				if !slices.Contains(alerts, at.Alertname) {
					t.Errorf("testdata/%s: %q at %s tests alert %q, which the rules do not define", file, tg.Name, at.EvalTime, at.Alertname)
				}
				if len(at.ExpAlerts) == 0 {
					silent[at.Alertname]++
				} else {
					firing[at.Alertname]++
				}
			}
			for _, et := range tg.PromQLExprTests {
				exprs = append(exprs, et.Expr)
			}
		}
	}
	for _, a := range alerts {
		if firing[a] == 0 {
			t.Errorf("alert %s: no unit test where it fires (alert_rule_test with exp_alerts)", a)
		}
		if silent[a] == 0 {
			t.Errorf("alert %s: no unit test where it stays silent (alert_rule_test with exp_alerts: [])", a)
		}
	}
	for _, r := range records {
		if !slices.ContainsFunc(exprs, func(e string) bool { return mentions(e, r) }) {
			t.Errorf("recording rule %s: no promql_expr_test reads it", r)
		}
	}
}

func checkAlertMetadata(t *testing.T, r Rule) {
	t.Helper()
	if s := r.Labels["severity"]; s != "warning" && s != "critical" {
		t.Errorf("alert %s: severity %q, want warning or critical", r.Alert, s)
	}
	for _, a := range []string{"summary", "description", "runbook_url"} {
		if r.Annotations[a] == "" {
			t.Errorf("alert %s: no %s annotation", r.Alert, a)
		}
	}
	if want := "#" + strings.ToLower(r.Alert); !strings.HasSuffix(r.Annotations["runbook_url"], want) {
		t.Errorf("alert %s: runbook_url %q does not end in %q", r.Alert, r.Annotations["runbook_url"], want)
	}
}

// TestAlertRunbooks checks that docs/alerts.md has a section for every
// alert, whose anchor is the one in its runbook_url, and no section for an
// alert that no longer exists.
func TestAlertRunbooks(t *testing.T) {
	var rules RuleFile
	readYAML(t, rulesPath, &rules)
	anchors := map[string]bool{}
	for _, h := range markdownHeadings(t, alertsDoc) {
		anchors[githubAnchor(h.text)] = true
		if h.level == 2 && strings.HasPrefix(h.text, "Chimeraforge") && !slices.ContainsFunc(rules.Groups, func(g RuleGroup) bool {
			return slices.ContainsFunc(g.Rules, func(r Rule) bool { return r.Alert == h.text })
		}) {
			t.Errorf("%s: section %q names no alert in %s", alertsDoc, h.text, rulesPath)
		}
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			url := r.Annotations["runbook_url"]
			base, anchor, ok := strings.Cut(url, "#")
			if !ok || base+"#" != RunbookBase {
				t.Errorf("alert %s: runbook_url %q does not start with %q", r.Alert, url, RunbookBase)
			}
			if !anchors[anchor] {
				t.Errorf("alert %s: %s has no heading with anchor #%s (want a heading \"## %s\")", r.Alert, alertsDoc, anchor, r.Alert)
			}
		}
	}
	if n == 0 {
		t.Fatalf("%s: no alerts", rulesPath)
	}
}

type heading struct {
	level int
	text  string
}

// markdownHeadings returns the ATX headings of a Markdown file, outside
// fenced code blocks.
func markdownHeadings(t *testing.T, path string) []heading {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var hs []heading
	fenced := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") || strings.HasPrefix(line, "~~~") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		level := len(line) - len(strings.TrimLeft(line, "#"))
		if level == 0 || level > 6 || !strings.HasPrefix(line[level:], " ") {
			continue
		}
		hs = append(hs, heading{level, strings.TrimSpace(strings.TrimRight(strings.TrimSpace(line[level:]), "#"))})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return hs
}

// githubAnchor is the fragment GitHub gives a heading: lower case, spaces
// to hyphens, and every character dropped that is not a letter, a digit, a
// hyphen or an underscore. (GitHub appends -1, -2, … to repeated headings;
// alert names are unique, so that is left out.)
func githubAnchor(text string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestGithubAnchor(t *testing.T) {
	for in, want := range map[string]string{
		"ChimeraforgeTargetDown":          "chimeraforgetargetdown",
		"Recording rules":                 "recording-rules",
		"The before-version-change hold!": "the-before-version-change-hold",
		"`rule_files` and reloads":        "rule_files-and-reloads",
	} {
		if got := githubAnchor(in); got != want {
			t.Errorf("githubAnchor(%q) = %q, want %q", in, got, want)
		}
	}
}

var nameChar = regexp.MustCompile(`[A-Za-z0-9_:]`)

// mentions reports whether the PromQL expression expr selects the metric
// name, not merely a longer name that starts with it.
func mentions(expr, name string) bool {
	for i := 0; ; {
		j := strings.Index(expr[i:], name)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(name)
		before := start == 0 || !nameChar.MatchString(expr[start-1:start])
		after := end == len(expr) || !nameChar.MatchString(expr[end:end+1])
		if before && after {
			return true
		}
		i = start + 1
	}
}

func TestMentions(t *testing.T) {
	for _, tc := range []struct {
		expr, name string
		want       bool
	}{
		{RecTTFTQuantile1h + `{quantile="0.95"}`, RecTTFTQuantile1h, true},
		{RecTTFTP95BeforeChange, RecTTFTQuantile1h, false},
		{RecTTFTP95BeforeChange + " / " + RecTTFTQuantile1h, RecTTFTQuantile1h, true},
		{"x" + RecTokensRate5m, RecTokensRate5m, false},
		{RecTokensRate1h + " offset 1w", RecTokensRate1h, true},
	} {
		if got := mentions(tc.expr, tc.name); got != tc.want {
			t.Errorf("mentions(%q, %q) = %v, want %v", tc.expr, tc.name, got, tc.want)
		}
	}
}
