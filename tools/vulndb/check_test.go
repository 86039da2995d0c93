package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// govulncheckOutput renders a govulncheck -format json stream: a config,
// the OSV entries and one finding per (id, module, fixed, level).
func govulncheckOutput(findings ...[4]string) string {
	var b strings.Builder
	b.WriteString(`{"config": {"protocol_version": "v1.0.0", "scanner_name": "govulncheck", "db": "file:///db",
		"db_last_modified": "2026-11-05T23:49:57Z", "go_version": "go1.26.8", "scan_level": "symbol"}}` + "\n")
	b.WriteString(`{"progress": {"message": "Scanning your code"}}` + "\n")
	for _, f := range findings {
		id, module, fixed, lvl := f[0], f[1], f[2], f[3]
		b.WriteString(`{"osv": {"id": "` + id + `", "summary": "summary of ` + id + `", "affected": []}}` + "\n")
		frame := `{"module": "` + module + `", "version": "v1.0.0"`
		if lvl != "module" {
			frame += `, "package": "` + module + `/pkg"`
		}
		if lvl == "symbol" {
			frame += `, "function": "F"`
		}
		frame += "}"
		fixedField := ""
		if fixed != "" {
			fixedField = `"fixed_version": "` + fixed + `", `
		}
		// Two findings for the same vulnerability, the closer one second,
		// as govulncheck sends them while it refines its scan.
		b.WriteString(`{"finding": {"osv": "` + id + `", ` + fixedField + `"trace": [{"module": "` + module + `", "version": "v1.0.0"}]}}` + "\n")
		b.WriteString(`{"finding": {"osv": "` + id + `", ` + fixedField + `"trace": [` + frame + `]}}` + "\n")
	}
	return b.String()
}

func TestVulnCheck(t *testing.T) {
	accept := "# comment\nGO-2025-0001 example.com/nofix server-side only  # trailing comment\n\nGO-2025-0002 example.com/fixed was unfixed\n"
	for _, tc := range []struct {
		name     string
		findings [][4]string
		fail     string // substring of the error; "" passes
		say      []string
	}{
		{name: "nothing found", say: []string{"no vulnerability called by the code beyond the 0 accepted"}},
		{
			name:     "called, not accepted",
			findings: [][4]string{{"GO-2026-0003", "stdlib", "v1.26.9", "symbol"}},
			fail:     "1 vulnerabilities called by the code: GO-2026-0003",
			say:      []string{"GO-2026-0003 stdlib@v1.0.0 (v1.26.9), called: FAIL"},
		},
		{
			name:     "called, accepted, no fix",
			findings: [][4]string{{"GO-2025-0001", "example.com/nofix", "", "symbol"}},
			say:      []string{"called: ACCEPTED: server-side only", "beyond the 1 accepted"},
		},
		{
			name:     "accepted, but a fix appeared",
			findings: [][4]string{{"GO-2025-0002", "example.com/fixed", "v1.2.0", "symbol"}},
			fail:     "GO-2025-0002",
			say:      []string{"now fixed in v1.2.0: upgrade"},
		},
		{
			name:     "accepted for another module",
			findings: [][4]string{{"GO-2025-0001", "example.com/other", "", "symbol"}},
			fail:     "GO-2025-0001",
			say:      []string{"accepted for module example.com/nofix, found in example.com/other"},
		},
		{
			name: "imported or required only: listed, not failed",
			findings: [][4]string{
				{"GO-2026-0004", "example.com/imported", "v2.0.0", "package"},
				{"GO-2026-0005", "example.com/required", "v3.0.0", "module"},
			},
			say: []string{"GO-2026-0004 example.com/imported@v1.0.0 (v2.0.0), imported package: informational",
				"GO-2026-0005 example.com/required@v1.0.0 (v3.0.0), required module: informational"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(dir+"/accepted.txt", []byte(accept), 0o644); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err := run([]string{"check", "-accept", dir + "/accepted.txt"}, strings.NewReader(govulncheckOutput(tc.findings...)), &out)
			switch {
			case tc.fail == "" && err != nil:
				t.Errorf("failed: %v\n%s", err, out.String())
			case tc.fail != "" && (err == nil || !strings.Contains(err.Error(), tc.fail)):
				t.Errorf("err = %v, want one naming %q\n%s", err, tc.fail, out.String())
			}
			for _, s := range append(tc.say, "govulncheck: go1.26.8, db file:///db") {
				if !strings.Contains(out.String(), s) {
					t.Errorf("output lacks %q:\n%s", s, out.String())
				}
			}
		})
	}
}

func TestVulnCheckRejectsBadInput(t *testing.T) {
	if _, err := parseAccepted("GO-2025-0001 example.com/a\n"); err == nil {
		t.Error("an accept line without a reason was taken")
	}
	if _, err := parseAccepted("GO-2025-0001 m r\nGO-2025-0001 m r\n"); err == nil {
		t.Error("a duplicate accept line was taken")
	}
	if err := run([]string{"check"}, strings.NewReader("govulncheck: loading packages: error\n"), &bytes.Buffer{}); err == nil {
		t.Error("text that is not govulncheck JSON passed the check")
	}
	if err := run([]string{"check"}, strings.NewReader(""), &bytes.Buffer{}); err == nil {
		t.Error("empty output (govulncheck failed before scanning) passed the check")
	}
}

// TestVulnCheckAcceptedFile keeps the committed accept file readable.
func TestVulnCheckAcceptedFile(t *testing.T) {
	b, err := os.ReadFile("accepted.txt")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseAccepted(string(b)); err != nil {
		t.Fatal(err)
	}
}
