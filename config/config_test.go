package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.yaml.err from the current output")

// testEnv is the only environment tests see.
func testEnv(kv ...string) loader {
	return loader{environ: func() []string { return kv }}
}

func TestExamplesLoad(t *testing.T) {
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := testEnv().load(f, nil)
			if err != nil {
				t.Fatal(err)
			}
			// What Redacted prints loads back to the same configuration.
			b, err := cfg.Redacted()
			if err != nil {
				t.Fatal(err)
			}
			again, err := testEnv().loadBytes("redacted", b, "", nil)
			if err != nil {
				t.Fatalf("reload Redacted output: %v\n%s", err, b)
			}
			if b2, _ := again.Redacted(); string(b2) != string(b) {
				t.Errorf("Redacted output does not round-trip:\n%s\n---\n%s", b, b2)
			}
		})
	}
}

func TestDemo(t *testing.T) {
	cfg, err := Demo()
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile("examples/demo.yaml")
	if err != nil || string(file) != string(DemoYAML) {
		t.Fatalf("DemoYAML differs from examples/demo.yaml (%v)", err)
	}
	if len(cfg.Simulation.GPUs) != 1 || cfg.Simulation.GPUs[0].Name != "sim-gpu0" {
		t.Errorf("gpus = %+v", cfg.Simulation.GPUs)
	}
	for _, name := range []string{"ollama-a", "ollama-b"} {
		inst, ok := cfg.SimInstance(name)
		if !ok || inst.GPU != "sim-gpu0" {
			t.Errorf("instance %s = %+v, %v", name, inst, ok)
		}
		tg, ok := cfg.Target(name)
		if sim, isSim := tg.SimName(); !ok || !isSim || sim != name || tg.NumParallel != 1 {
			t.Errorf("target %s = %+v", name, tg)
		}
	}
	for name, want := range map[string]struct {
		target       string
		ctx, predict int
	}{
		"analyst":  {"ollama-a", 512, 48},
		"reporter": {"ollama-b", 1024, 64},
	} {
		a, ok := cfg.Agent(name)
		if !ok {
			t.Fatalf("no agent %s", name)
		}
		if a.Target != want.target || *a.Options.NumCtx != want.ctx || *a.Options.NumPredict != want.predict ||
			a.API != APIChat || a.Model != "sim-tiny" || *a.Options.Temperature != 0 {
			t.Errorf("agent %s = %+v", name, a)
		}
		if len(a.Workflow) != 2 || a.Workflow[0].Name != "analysis" || a.Workflow[1].Name != "report" ||
			!strings.Contains(a.Workflow[1].Prompt, "{{.Previous}}") {
			t.Errorf("agent %s workflow = %+v", name, a.Workflow)
		}
	}
	if len(cfg.Workloads) != 1 || cfg.Workloads[0].Name != "report-pipeline" || cfg.Workloads[0].Arrival.Mode != ArrivalClosed {
		t.Errorf("workloads = %+v", cfg.Workloads)
	}
}

// TestBadConfigs loads every testdata/bad/*.yaml and compares the problems,
// one per line, with NAME.yaml.err. Run with -update to rewrite the goldens,
// then read the diff.
func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad configs: %v", err)
	}
	l := testEnv("CF_TEST_TOKEN=s3cr3t-env", "CF_TEST_EMPTY=")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := l.load(f, nil)
			if err == nil {
				t.Fatal("loaded without error")
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error is not a *ValidationError: %v", err)
			}
			if want := fmt.Sprintf("load config %q: ", f); !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q does not start with %q", err, want)
			}
			got := strings.Join(ve.Problems, "\n") + "\n"
			golden := f + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("problems differ from %s\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
			if strings.Contains(got, "s3cr3t") {
				t.Errorf("a secret value leaked into the error:\n%s", got)
			}
		})
	}
}

func TestMultiProblemReportsAll(t *testing.T) {
	_, err := testEnv().load("testdata/bad/multi.yaml", nil)
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{
		"global.shutdown_timeout:", "targets[0].url:", "targets[0].num_parallel:", "agents[0].target:",
		"agents[0].model:", "agents[0].workflow[0].prompt:", "workloads[0].agents[0].agent:",
		"workloads[0].arrival.rate:", "workloads[0].arrival.max_in_flight:",
	} {
		if !slices.ContainsFunc(ve.Problems, func(p string) bool { return strings.HasPrefix(p, want) }) {
			t.Errorf("no problem about %s in:\n%s", want, ve)
		}
	}
}

const minimal = `
global:
  shutdown_timeout: 1s
targets:
  - name: a
    url: http://127.0.0.1:11434
    headers:
      Authorization: Bearer s3cr3t-inline
  - name: b
    url: http://127.0.0.1:11435
agents:
  - name: x
    targets: [a, b]
    model: m
    workflow: [{name: s, prompt: hi}]
workloads:
  - {name: w, agents: [{agent: x}]}
`

func TestOverrides(t *testing.T) {
	tests := []struct {
		name      string
		env       []string
		overrides map[string]string
		check     func(*Config) error
	}{
		{
			name: "file only",
			check: func(c *Config) error {
				return want(c.Global.ShutdownTimeout, time.Second)
			},
		},
		{
			name: "env scalar beats file",
			env:  []string{"CHIMERAFORGE_GLOBAL__SHUTDOWN_TIMEOUT=2s"},
			check: func(c *Config) error {
				return want(c.Global.ShutdownTimeout, 2*time.Second)
			},
		},
		{
			name:      "override beats env",
			env:       []string{"CHIMERAFORGE_GLOBAL__SHUTDOWN_TIMEOUT=2s"},
			overrides: map[string]string{"global.shutdown_timeout": "3s"},
			check: func(c *Config) error {
				return want(c.Global.ShutdownTimeout, 3*time.Second)
			},
		},
		{
			name: "env list element",
			env: []string{
				"CHIMERAFORGE_TARGETS__1__URL=http://127.0.0.1:11436",
				"CHIMERAFORGE_TARGETS__1__NUM_PARALLEL=4",
				"CHIMERAFORGE_TARGETS__1__TIMEOUTS__IDLE=30s",
			},
			check: func(c *Config) error {
				return errors.Join(
					want(c.Targets[1].URL, "http://127.0.0.1:11436"),
					want(c.Targets[1].NumParallel, 4),
					want(c.Targets[1].Timeouts.Idle, 30*time.Second),
					want(c.Targets[0].URL, "http://127.0.0.1:11434"))
			},
		},
		{
			name: "env matches keys case-insensitively and reaches secrets",
			env:  []string{"CHIMERAFORGE_TARGETS__0__HEADERS__AUTHORIZATION=Bearer from-env"},
			check: func(c *Config) error {
				return errors.Join(want(len(c.Targets[0].Headers), 1),
					want(c.Targets[0].Headers["Authorization"].Resolved(), "Bearer from-env"))
			},
		},
		{
			name: "env list value as YAML, options, booleans",
			env: []string{
				"CHIMERAFORGE_AGENTS__0__TARGETS=[b, a]",
				"CHIMERAFORGE_AGENTS__0__OPTIONS__TEMPERATURE=0.7",
				"CHIMERAFORGE_AGENTS__0__KEEP_HISTORY=true",
				"CHIMERAFORGE_AGENTS__0__KEEP_ALIVE=5m",
				"CHIMERAFORGE_EMPTY_IS_IGNORED=",
			},
			check: func(c *Config) error {
				a := c.Agents[0]
				return errors.Join(want(a.TargetNames(), []string{"b", "a"}), want(*a.Options.Temperature, 0.7),
					want(a.KeepHistory, true), want(*a.KeepAlive, 5*time.Minute))
			},
		},
		{
			name:      "override list element with numeric index",
			overrides: map[string]string{"targets.0.url": "http://10.0.0.1:11434", "workloads.0.agents.0.replicas": "3"},
			check: func(c *Config) error {
				return errors.Join(want(c.Targets[0].URL, "http://10.0.0.1:11434"), want(c.Workloads[0].Agents[0].Replicas, 3))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := testEnv(tt.env...).loadBytes("minimal", []byte(minimal), "", tt.overrides)
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.check(cfg); err != nil {
				t.Error(err)
			}
		})
	}
}

// checkProblems fails t unless err is a *ValidationError with exactly the
// problems want, in order.
func checkProblems(t *testing.T, err error, want []string) {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want a *ValidationError", err)
	}
	if !slices.Equal(ve.Problems, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(ve.Problems, "\n"), strings.Join(want, "\n"))
	}
}

func want[T any](got, want T) error {
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("got %v, want %v", got, want)
	}
	return nil
}

func TestOverrideErrors(t *testing.T) {
	tests := []struct {
		name      string
		env       []string
		overrides map[string]string
		want      []string
	}{
		{
			name: "list index past the end",
			env:  []string{"CHIMERAFORGE_TARGETS__5__URL=http://x"},
			want: []string{"environment variable CHIMERAFORGE_TARGETS__5__URL: targets[5] does not exist: the config file has 2 entries in targets"},
		},
		{
			name: "list missing from the file",
			env:  []string{"CHIMERAFORGE_SIMULATION__INSTANCES__0__NAME=s3cr3t-env"},
			want: []string{"environment variable CHIMERAFORGE_SIMULATION__INSTANCES__0__NAME: simulation.instances[0] does not exist: the config file has no list simulation.instances"},
		},
		{
			name:      "override index that is not a number",
			overrides: map[string]string{"targets.first.url": "http://x"},
			want:      []string{`override targets.first.url: targets is a list; "first" is not an index`},
		},
		{
			name: "unknown key from env names the variable",
			env:  []string{"CHIMERAFORGE_GLOBAL__SHUTDOWN_TIMOUT=5s"},
			want: []string{"global.shutdown_timout: unknown key (allowed: model_reload_threshold, shutdown_timeout, readiness_probe_interval, queue_wait_threshold, shard, metrics) (set by environment variable CHIMERAFORGE_GLOBAL__SHUTDOWN_TIMOUT)"},
		},
		{
			name:      "wrong type from an override",
			overrides: map[string]string{"targets.0.num_parallel": "many"},
			want:      []string{`targets[0].num_parallel: "many" is not an integer (set by override targets.0.num_parallel)`},
		},
		{
			name: "bare number duration from env",
			env:  []string{"CHIMERAFORGE_GLOBAL__SHUTDOWN_TIMEOUT=5"},
			want: []string{`global.shutdown_timeout: "5" is a bare number; write a duration with a unit, like "2s", "500ms" or "1m30s" (set by environment variable CHIMERAFORGE_GLOBAL__SHUTDOWN_TIMEOUT)`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testEnv(tt.env...).loadBytes("minimal", []byte(minimal), "", tt.overrides)
			checkProblems(t, err, tt.want)
		})
	}
}

// TestShardFromEnvironment: Kubernetes sets each pod's shard index from its
// pod-index label through the downward API, and the count from the
// StatefulSet's replicas, as environment variables; a file need not mention
// the shard at all.
func TestShardFromEnvironment(t *testing.T) {
	const noGlobal = `
targets: [{name: a, url: "http://127.0.0.1:11434"}]
agents: [{name: x, target: a, model: m, workflow: [{name: s, prompt: hi}]}]
workloads: [{name: w, agents: [{agent: x, replicas: 4}]}]
`
	tests := []struct {
		name     string
		file     string
		env      []string
		override map[string]string
		want     Shard
		problems []string
	}{
		{name: "default: one shard runs everything", file: noGlobal, want: Shard{Index: 0, Count: 1}},
		{
			name: "both from the environment, no global section in the file",
			file: noGlobal,
			env:  []string{"CHIMERAFORGE_GLOBAL__SHARD__INDEX=2", "CHIMERAFORGE_GLOBAL__SHARD__COUNT=3"},
			want: Shard{Index: 2, Count: 3},
		},
		{
			name: "the environment beats the file",
			file: strings.Replace(minimal, "shutdown_timeout: 1s", "shutdown_timeout: 1s\n  shard: {index: 0, count: 2}", 1),
			env:  []string{"CHIMERAFORGE_GLOBAL__SHARD__INDEX=1"},
			want: Shard{Index: 1, Count: 2},
		},
		{
			name:     "an override beats the environment",
			file:     noGlobal,
			env:      []string{"CHIMERAFORGE_GLOBAL__SHARD__INDEX=1", "CHIMERAFORGE_GLOBAL__SHARD__COUNT=2"},
			override: map[string]string{"global.shard.index": "0"},
			want:     Shard{Index: 0, Count: 2},
		},
		{
			name: "an index set by the environment is checked against the count",
			file: noGlobal,
			env:  []string{"CHIMERAFORGE_GLOBAL__SHARD__INDEX=3", "CHIMERAFORGE_GLOBAL__SHARD__COUNT=3"},
			problems: []string{
				"global.shard.index: must be < global.shard.count (3): shards are numbered from 0 to 2, got 3",
			},
		},
		{
			name: "an index alone is checked against the default count",
			file: noGlobal,
			env:  []string{"CHIMERAFORGE_GLOBAL__SHARD__INDEX=1"},
			problems: []string{
				"global.shard.index: must be < global.shard.count (1): shards are numbered from 0 to 0, got 1",
			},
		},
		{
			name: "a value that is not an integer names the variable",
			file: noGlobal,
			env:  []string{"CHIMERAFORGE_GLOBAL__SHARD__COUNT=two"},
			problems: []string{
				`global.shard.count: "two" is not an integer (set by environment variable CHIMERAFORGE_GLOBAL__SHARD__COUNT)`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := testEnv(tt.env...).loadBytes("shard", []byte(tt.file), "", tt.override)
			if tt.problems != nil {
				checkProblems(t, err, tt.problems)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Global.Shard != tt.want {
				t.Errorf("shard %+v, want %+v", cfg.Global.Shard, tt.want)
			}
		})
	}
}

// TestMetricsSettings: global.metrics.classic_histograms defaults to true
// (classic buckets beside native histograms), is read from the file or an
// override, and must be a boolean.
func TestMetricsSettings(t *testing.T) {
	const noGlobal = `
targets: [{name: a, url: "http://127.0.0.1:11434"}]
agents: [{name: x, target: a, model: m, workflow: [{name: s, prompt: hi}]}]
workloads: [{name: w, agents: [{agent: x}]}]
`
	tests := []struct {
		name     string
		file     string
		override map[string]string
		want     Metrics
		problems []string
	}{
		{name: "default: classic and native", file: noGlobal, want: Metrics{ClassicHistograms: true}},
		{name: "an empty metrics section keeps the default", file: "global: {metrics: {}}\n" + noGlobal, want: Metrics{ClassicHistograms: true}},
		{name: "native only from the file", file: "global: {metrics: {classic_histograms: false}}\n" + noGlobal, want: Metrics{ClassicHistograms: false}},
		{
			name:     "an override beats the file",
			file:     "global: {metrics: {classic_histograms: false}}\n" + noGlobal,
			override: map[string]string{"global.metrics.classic_histograms": "true"},
			want:     Metrics{ClassicHistograms: true},
		},
		{
			name:     "native only from an override",
			file:     noGlobal,
			override: map[string]string{"global.metrics.classic_histograms": "false"},
			want:     Metrics{ClassicHistograms: false},
		},
		{
			name:     "not a boolean in the file",
			file:     "global: {metrics: {classic_histograms: \"no\"}}\n" + noGlobal,
			problems: []string{"global.metrics.classic_histograms: expected true or false, got a string"},
		},
		{
			name:     "not a boolean in an override",
			file:     noGlobal,
			override: map[string]string{"global.metrics.classic_histograms": "sometimes"},
			problems: []string{`global.metrics.classic_histograms: "sometimes" is not true or false (set by override global.metrics.classic_histograms)`},
		},
		{
			name:     "a misspelt key lists the allowed one",
			file:     "global: {metrics: {classic_histogram: false}}\n" + noGlobal,
			problems: []string{"global.metrics.classic_histogram: unknown key (allowed: classic_histograms)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := testEnv().loadBytes("metrics", []byte(tt.file), "", tt.override)
			if tt.problems != nil {
				checkProblems(t, err, tt.problems)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Global.Metrics != tt.want {
				t.Errorf("metrics %+v, want %+v", cfg.Global.Metrics, tt.want)
			}
		})
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("s3cr3t-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgYAML := `
targets:
  - name: a
    url: http://127.0.0.1:11434
    headers:
      X-Inline: s3cr3t-inline
      X-Value: {value: s3cr3t-value}
      X-Env: {env: CF_TOKEN}
      X-File: {file: token}
agents:
  - {name: x, target: a, model: m, workflow: [{name: s, prompt: hi}]}
workloads:
  - {name: w, agents: [{agent: x}]}
`
	path := filepath.Join(dir, "cfg.yaml")
	if err := os.WriteFile(path, []byte(cfgYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := testEnv("CF_TOKEN=s3cr3t-env").load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.Targets[0].Headers
	for name, v := range map[string]string{"X-Inline": "s3cr3t-inline", "X-Value": "s3cr3t-value", "X-Env": "s3cr3t-env", "X-File": "s3cr3t-file"} {
		if got := h[name].Resolved(); got != v {
			t.Errorf("%s resolved to %q, want %q", name, got, v)
		}
	}
	red, err := cfg.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"env: CF_TOKEN", "file: token", "value: <secret>"} {
		if !strings.Contains(string(red), s) {
			t.Errorf("Redacted output lacks %q:\n%s", s, red)
		}
	}
	outputs := map[string]string{
		"Redacted": string(red),
		"%v":       fmt.Sprintf("%v", cfg),
		"%+v":      fmt.Sprintf("%+v", cfg),
		"%#v":      fmt.Sprintf("%#v", cfg),
		"%v value": fmt.Sprintf("%v", *cfg),
		"%+v hdr":  fmt.Sprintf("%+v", cfg.Targets[0]),
		"%#v hdr":  fmt.Sprintf("%#v", cfg.Targets[0]),
		"%s hdr":   fmt.Sprintf("%s", h["X-Env"]), //nolint:staticcheck // the %s verb itself is under test
		"%q hdr":   fmt.Sprintf("%q", h["X-Env"]),
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		outputs[format+" secret ptr"] = fmt.Sprintf(format, &cfg.Targets[0].Headers)
	}
	// Errors: the same config with one problem elsewhere, and the secrets
	// themselves misconfigured.
	bad := strings.Replace(cfgYAML, "model: m", "model: \"\"", 1)
	bad = strings.Replace(bad, "{value: s3cr3t-value}", "{value: s3cr3t-value, env: CF_TOKEN}", 1)
	bad = strings.Replace(bad, "X-Inline: s3cr3t-inline", "X-Inline: {value: s3cr3t-inline, valu: s3cr3t-typo}", 1)
	_, err = testEnv("CF_TOKEN=s3cr3t-env").loadBytes("bad", []byte(bad), dir, nil)
	if err == nil {
		t.Fatal("bad config loaded")
	}
	outputs["error"] = err.Error()
	_, err = testEnv("CHIMERAFORGE_TARGETS__3__HEADERS__X=s3cr3t-env").loadBytes("bad", []byte(cfgYAML), dir, nil)
	outputs["env error"] = err.Error()
	for name, out := range outputs {
		if strings.Contains(out, "s3cr3t") {
			t.Errorf("%s output shows a secret:\n%s", name, out)
		}
	}
	if !strings.Contains(outputs["%v"], "<secret>") {
		t.Errorf("%%v output does not redact: %s", outputs["%v"])
	}
}

func TestOptionsMap(t *testing.T) {
	i := func(v int) *int { return &v }
	f := func(v float64) *float64 { return &v }
	tests := []struct {
		opts Options
		want map[string]any
	}{
		{Options{}, nil},
		{Options{NumCtx: i(512), Temperature: f(0)}, map[string]any{"num_ctx": 512, "temperature": 0.0}},
		{
			Options{NumGPU: i(-1), NumCtx: i(1), Temperature: f(0.5), TopP: f(0.9), TopK: i(40), RepeatPenalty: f(1.1), NumPredict: i(-2), Seed: i(7)},
			map[string]any{"num_gpu": -1, "num_ctx": 1, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.1, "num_predict": -2, "seed": 7},
		},
	}
	for _, tt := range tests {
		if got := tt.opts.Map(); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%+v.Map() = %#v, want %#v", tt.opts, got, tt.want)
		}
	}
}

func TestRender(t *testing.T) {
	cfg, err := testEnv().loadBytes("render", []byte(`
targets: [{name: a, url: "http://127.0.0.1:11434"}]
agents:
  - name: x
    target: a
    model: m
    variables: {topic: gpus}
    workflow:
      - {name: one, prompt: "About {{.Vars.topic}} (run {{.Run}}, replica {{.Replica}}, {{.Agent}}/{{.Step}})"}
      - {name: two, prompt: "Before: {{.Previous}}; first: {{.Outputs.one}}"}
workloads: [{name: w, agents: [{agent: x}]}]
`), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := cfg.Agent("x")
	d := TemplateData{Outputs: map[string]string{}, Vars: a.Variables, Run: 3, Agent: "x", Replica: 1, Step: "one"}
	got, err := a.Workflow[0].Render(d)
	if err != nil || got != "About gpus (run 3, replica 1, x/one)" {
		t.Errorf("step one = %q, %v", got, err)
	}
	d.Previous, d.Outputs["one"], d.Step = "P", "O", "two"
	got, err = a.Workflow[1].Render(d)
	if err != nil || got != "Before: P; first: O" {
		t.Errorf("step two = %q, %v", got, err)
	}
	// A missing key at run time is an error, not "<no value>".
	if _, err := a.Workflow[1].Render(TemplateData{Outputs: map[string]string{}}); err == nil {
		t.Error("rendering with a missing output succeeded")
	}
	// A Step built in code renders too.
	s := Step{Name: "adhoc", Prompt: "{{.Previous}}!"}
	if got, err := s.Render(TemplateData{Previous: "hi"}); err != nil || got != "hi!" {
		t.Errorf("adhoc step = %q, %v", got, err)
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := testEnv().loadBytes("defaults", []byte(`
targets:
  - {name: a, url: "sim://s"}
  - {name: b, url: "sim://t"}
agents:
  - {name: x, targets: [a, b], model: m, workflow: [{name: s, prompt: hi}]}
  - {name: y, target: a, model: m, workflow: [{name: s, prompt: hi}]}
workloads: [{name: w, agents: [{agent: x}]}]
simulation:
  gpus: [{name: g}, {name: h, concurrency_gain: 0}]
  instances: [{name: s, gpu: g}, {name: t, jitter: 0, models: [{name: big, size_bytes: 1}]}]
`), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	tg := cfg.Targets[0]
	x, y := cfg.Agents[0], cfg.Agents[1]
	s, u := cfg.Simulation.Instances[0], cfg.Simulation.Instances[1]
	err = errors.Join(
		want(cfg.Global, Global{ModelReloadThreshold: 100 * time.Millisecond, ShutdownTimeout: 10 * time.Second, ReadinessProbeInterval: 5 * time.Second,
			QueueWaitThreshold: 100 * time.Millisecond, Shard: Shard{Index: 0, Count: 1}, Metrics: Metrics{ClassicHistograms: true}}),
		want(tg.PollInterval, 15*time.Second),
		want(cfg.Workloads[0].Calibration, Calibration{AtStart: true, Runs: 3, MaxDuration: 2 * time.Minute, OnVersionChange: true}),
		want(tg.NumParallel, 1),
		want(tg.Timeouts, Timeouts{Connect: 5 * time.Second, FirstToken: 2 * time.Minute, Idle: time.Minute, Request: 10 * time.Minute}),
		want(x.API, APIChat), want(x.Balance, BalanceRoundRobin), want(y.Balance, ""),
		want(cfg.Workloads[0].Agents[0].Replicas, 1), want(cfg.Workloads[0].Arrival.Mode, ArrivalClosed),
		want(cfg.Simulation.GPUs[0], SimGPU{Name: "g", DecodeRate: 60, ConcurrencyGain: 0.5, MemoryBytes: 24 << 30}),
		want(cfg.Simulation.GPUs[1].ConcurrencyGain, 0.0), // explicit zero is kept
		want(DefaultSimGPU("p"), SimGPU{Name: "p", DecodeRate: 60, ConcurrencyGain: 0.5, MemoryBytes: 24 << 30}),
		want(s.NumParallel, 1), want(s.MaxQueue, 512), want(s.PromptEvalRate, 2000.0), want(s.Jitter, 0.1),
		want(s.LoadDelay, 300*time.Millisecond), want(s.Version, "0.17.4-sim"),
		want(s.Models, []SimModel{{Name: "sim-tiny", SizeBytes: 512 << 20}}),
		want(u.Jitter, 0.0), want(u.Models, []SimModel{{Name: "big", SizeBytes: 1}}),
	)
	if err != nil {
		t.Error(err)
	}
}

func TestLookups(t *testing.T) {
	cfg, err := testEnv().loadBytes("minimal", []byte(minimal), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if tg, ok := cfg.Target("b"); !ok || tg.URL != "http://127.0.0.1:11435" {
		t.Errorf("Target(b) = %v, %v", tg, ok)
	}
	if _, ok := cfg.Target("nope"); ok {
		t.Error("Target(nope) found")
	}
	a, ok := cfg.Agent("x")
	if !ok || !slices.Equal(a.TargetNames(), []string{"a", "b"}) {
		t.Errorf("Agent(x) = %v, %v", a, ok)
	}
	if _, ok := cfg.Agent("nope"); ok {
		t.Error("Agent(nope) found")
	}
	if w, ok := cfg.Workload("w"); !ok || w.Name != "w" {
		t.Errorf("Workload(w) = %v, %v", w, ok)
	}
	if _, ok := cfg.SimInstance("nope"); ok {
		t.Error("SimInstance(nope) found")
	}
	if got := (&Agent{Target: "t"}).TargetNames(); !slices.Equal(got, []string{"t"}) {
		t.Errorf("TargetNames = %v", got)
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := testEnv().load("testdata/does-not-exist.yaml", nil); err == nil ||
		!strings.HasPrefix(err.Error(), `load config "testdata/does-not-exist.yaml": `) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := testEnv().loadBytes("x", []byte("targets: [\n"), "", nil); err == nil ||
		!strings.HasPrefix(err.Error(), `load config "x": `) {
		t.Errorf("bad YAML: %v", err)
	}
	// No file at all: the environment alone must make a valid config.
	_, err := testEnv().load("", nil)
	var ve *ValidationError
	if !errors.As(err, &ve) || !strings.HasPrefix(err.Error(), "load config: ") {
		t.Errorf("no file: %v", err)
	}
	// The exported entry points use the real environment.
	if _, err := Load("examples/single-ollama.yaml", map[string]string{"agents.0.model": "other"}); err != nil {
		t.Errorf("Load: %v", err)
	}
	if _, err := LoadBytes("demo", DemoYAML, nil); err != nil {
		t.Errorf("LoadBytes: %v", err)
	}
}
