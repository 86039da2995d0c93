package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chimeraforge/chimeraforge/internal/testtool"
)

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := cli(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestConfigCheckExamples(t *testing.T) {
	files, err := filepath.Glob("../../config/examples/*.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		code, out, errOut := runCLI("config", "check", f)
		if code != 0 || !strings.Contains(out, "OK") {
			t.Errorf("config check %s: exit %d, stdout %q, stderr %q", f, code, out, errOut)
		}
	}
}

func TestConfigCheckRejectsBadConfigs(t *testing.T) {
	// Each bad config names the key at fault; config/testdata/bad holds the
	// exact expected lines, checked by the config package. Here: the command
	// exits 1 and prints every one of them.
	for _, name := range []string{"unknown-key", "missing-target", "negative-rate", "bad-url", "template-parse", "template-missing-key", "multi"} {
		t.Run(name, func(t *testing.T) {
			f := filepath.Join("../../config/testdata/bad", name+".yaml")
			want, err := os.ReadFile(f + ".err")
			if err != nil {
				t.Fatal(err)
			}
			code, _, errOut := runCLI("config", "check", f)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(want)), "\n") {
				if !strings.Contains(errOut, line) {
					t.Errorf("stderr lacks %q:\n%s", line, errOut)
				}
			}
		})
	}
}

func TestCLIUsage(t *testing.T) {
	if code, out, _ := runCLI("version"); code != 0 || !strings.Contains(out, "chimeraforge") {
		t.Errorf("version: exit %d, %q", code, out)
	}
	if code, _, errOut := runCLI("run", "--log.format", "xml"); code != 1 || !strings.Contains(errOut, "--log.format") {
		t.Errorf("bad flag value: exit %d, stderr %q; want 1 naming the flag", code, errOut)
	}
	if code, _, errOut := runCLI("run", "--no-such-flag"); code != 2 || !strings.Contains(errOut, "no-such-flag") {
		t.Errorf("unknown flag: exit %d, stderr %q; want 2 naming the flag", code, errOut)
	}
	if code, _, errOut := runCLI("run", "--config", "/nonexistent/chimeraforge.yaml"); code != 1 || !strings.Contains(errOut, "/nonexistent/chimeraforge.yaml") {
		t.Errorf("missing config: exit %d, stderr %q; want 1 naming the file", code, errOut)
	}
}

// promtoolCheck lints an exposition with `promtool check metrics`.
func promtoolCheck(t *testing.T, exposition string) {
	t.Helper()
	bin := testtool.LookPath(t, "promtool", "prometheus")
	cmd := exec.CommandContext(t.Context(), bin, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestDashboardsCommand(t *testing.T) {
	dir := t.TempDir()
	out, kube := filepath.Join(dir, "out"), filepath.Join(dir, "kube")
	code, stdout, stderr := runCLI("dashboards", "--out", out, "--kubernetes-out", kube)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		filepath.Join(out, "chimeraforge-overview.json"), filepath.Join(out, "chimeraforge.rules.yml"),
		filepath.Join(kube, "prometheusrule.yaml"), filepath.Join(kube, "grafana-dashboards.yaml"),
	} {
		if !strings.Contains(stdout, want+"\n") {
			t.Errorf("stdout does not list %s:\n%s", want, stdout)
		}
		if _, err := os.Stat(want); err != nil {
			t.Error(err)
		}
	}
	if code, _, stderr := runCLI("dashboards"); code != 2 || !strings.Contains(stderr, "--out") {
		t.Errorf("without --out: exit %d, %q; want 2 naming --out", code, stderr)
	}
	// A file where the directory should be: exit 1 naming it.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI("dashboards", "--out", filepath.Join(file, "x")); code != 1 || !strings.Contains(stderr, file) {
		t.Errorf("unwritable --out: exit %d, %q", code, stderr)
	}
}
