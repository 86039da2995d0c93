package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

// Secrets the fuzzed configurations can reach besides inline values: an
// environment variable and a file (testdata/fuzz-secret.txt holds
// fuzzFileSecret). Neither may ever show in an error.
const (
	fuzzEnvName    = "CF_FUZZ_TOKEN"
	fuzzEnvSecret  = "env-secret-5b1f0c"
	fuzzFileSecret = "file-secret-9e27d4"
	fuzzFilePath   = "testdata/fuzz-secret.txt"
	fuzzName       = "fuzz.yaml"
)

// fuzzSecretMarker replaces every inline header value in the second load of
// each input, so that a value printed by an error is caught whatever the
// fuzzer put there.
const fuzzSecretMarker = "inline-secret-3c8a71"

var fuzzSeeds = []string{
	`
targets:
  - name: a
    url: http://127.0.0.1:11434
    headers:
      Authorization: Bearer inline-seed-value
      X-Env: {env: CF_FUZZ_TOKEN}
      X-File: {file: testdata/fuzz-secret.txt}
agents:
  - {name: x, target: a, model: m, workflow: [{name: s, prompt: "hi {{.Previous}}"}]}
workloads:
  - {name: w, agents: [{agent: x}]}
`,
	// A secret where a map or list belongs, and a value beside env.
	`
targets:
  - name: a
    url: http://127.0.0.1:11434
    headers:
      X-List: [inline-seed-value]
      X-Both: {value: inline-seed-value, env: CF_FUZZ_TOKEN}
      X-Deep: {value: {nested: inline-seed-value}}
      "Bad Header": inline-seed-value
    num_parallel: inline-seed-value
agents: inline-seed-value
workloads: [{name: w, agents: [{agent: x}]}]
`,
	"targets: [{name: a, url: 'http://u:p@127.0.0.1/'}]\n",
	"a: &a [*a]\n",
	"- not a map\n",
	"global: {shutdown_timeout: 1e400}\n",
	"targets: {0: {name: a}}\n",
	"\"multi\\nline key\": 1\n",
}

// FuzzLoadBytes loads arbitrary YAML through the whole pipeline of
// LoadBytes (parse, decode, defaults, validation), with an environment of
// its own instead of the process's. Whatever the input:
//   - it does not panic, and loading it twice gives the same answer;
//   - an error says which configuration it is about and each problem, on
//     one line, starts with the key path it is about (or the error is the
//     YAML parser's, which gives the line);
//   - no header secret (inline, from the environment or from a file) shows
//     in the error;
//   - a configuration that loads round-trips: what Redacted prints loads
//     again to a configuration that Redacted prints the same way (inline
//     secrets are "<secret>" there, the rest is equal).
//
// The seed corpus is every example, every testdata/bad file and the cases
// above; CI runs it for a bounded time (scripts/test.sh).
func FuzzLoadBytes(f *testing.F) {
	for _, pattern := range []string{"examples/*.yaml", "testdata/bad/*.yaml"} {
		files, err := filepath.Glob(pattern)
		if err != nil || len(files) == 0 {
			f.Fatalf("seed corpus %s: %v", pattern, err)
		}
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	if b, err := os.ReadFile(fuzzFilePath); err != nil || strings.TrimSpace(string(b)) != fuzzFileSecret {
		f.Fatalf("%s must hold %s: %q %v", fuzzFilePath, fuzzFileSecret, b, err)
	}
	l := testEnv(fuzzEnvName+"="+fuzzEnvSecret, "CF_FUZZ_EMPTY=")

	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := l.loadBytes(fuzzName, data, "", nil)
		_, err2 := l.loadBytes(fuzzName, data, "", nil)
		if errString(err) != errString(err2) {
			t.Fatalf("two loads of the same input differ:\n%v\n---\n%v", err, err2)
		}
		if err != nil {
			checkLoadError(t, data, err)
			checkInlineSecrets(t, l, data)
			return
		}
		checkInlineSecrets(t, l, data)
		checkRoundTrip(t, l, cfg)
	})
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// checkLoadError: the error names the configuration, each problem is one
// line starting with a key path, and no secret of the environment or the
// file shows (unless the input itself spells it out).
func checkLoadError(t *testing.T, data []byte, err error) {
	t.Helper()
	msg := err.Error()
	if want := fmt.Sprintf("load config %q: ", fuzzName); !strings.HasPrefix(msg, want) {
		t.Fatalf("error does not start with %q:\n%s", want, msg)
	}
	for _, secret := range []string{fuzzEnvSecret, fuzzFileSecret} {
		if strings.Contains(msg, secret) && !bytes.Contains(data, []byte(secret)) {
			t.Fatalf("the secret %q shows in the error:\n%s", secret, msg)
		}
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		// The YAML parser's own error, before any key exists.
		if !strings.Contains(msg, "yaml:") {
			t.Fatalf("an error that is neither a YAML error nor a *ValidationError:\n%s", msg)
		}
		return
	}
	if len(ve.Problems) == 0 {
		t.Fatalf("a *ValidationError without problems: %q", msg)
	}
	keys := topLevelKeys(data)
	for _, p := range ve.Problems {
		if strings.ContainsAny(p, "\n\r") {
			t.Fatalf("a problem spans several lines: %q", p)
		}
		if !startsWithPath(p, keys) {
			t.Fatalf("problem %q does not start with a key path (top-level keys %q)", p, keys)
		}
	}
}

// sections are the top-level keys of a Config.
var sections = []string{"global", "targets", "agents", "workloads", "simulation"}

// topLevelKeys lists the keys of the input's top-level map, as parsed by
// the YAML library the loader uses and as problems print them (control
// characters escaped).
func topLevelKeys(data []byte) []string {
	keys := append([]string(nil), sections...)
	var top map[string]any
	if yaml.Unmarshal(data, &top) == nil {
		for k := range top {
			keys = append(keys, escapeControl(k))
		}
	}
	return keys
}

// startsWithPath reports whether problem p starts with a key path: a
// top-level key followed by ".", "[" or ": ".
func startsWithPath(p string, keys []string) bool {
	if strings.HasPrefix(p, "(top level): ") {
		return true
	}
	for _, k := range keys {
		rest, ok := strings.CutPrefix(p, k)
		if ok && (strings.HasPrefix(rest, ".") || strings.HasPrefix(rest, "[") || strings.HasPrefix(rest, ": ")) {
			return true
		}
	}
	return false
}

// checkInlineSecrets replaces every inline header value of the input (a
// plain string under targets[].headers, or its value:) by a marker and
// loads it again: the marker must not show in the error, and a
// configuration that loads must hold it only as a resolved secret.
func checkInlineSecrets(t *testing.T, l loader, data []byte) {
	t.Helper()
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || bytes.Contains(data, []byte(fuzzSecretMarker)) {
		return
	}
	if !markInlineSecrets(&doc) {
		return
	}
	marked, err := yaml.Marshal(&doc)
	if err != nil {
		return // a document the encoder cannot write back; nothing to check
	}
	cfg, err := l.loadBytes(fuzzName, marked, "", nil)
	if err != nil {
		if strings.Contains(err.Error(), fuzzSecretMarker) {
			t.Fatalf("an inline secret shows in the error:\n%s\ninput:\n%s", err, marked)
		}
		return
	}
	b, err := cfg.Redacted()
	if err != nil {
		t.Fatalf("Redacted: %v", err)
	}
	if bytes.Contains(b, []byte(fuzzSecretMarker)) || strings.Contains(fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg), fuzzSecretMarker) {
		t.Fatalf("an inline secret shows in Redacted or fmt output:\n%s", b)
	}
}

// markInlineSecrets sets every scalar at targets[*].headers.* and
// targets[*].headers.*.value to the marker; it reports whether it set any.
func markInlineSecrets(doc *yaml.Node) bool {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return false
	}
	marked := false
	mark := func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode {
			n.Tag, n.Value, n.Style = "!!str", fuzzSecretMarker, yaml.DoubleQuotedStyle
			marked = true
		}
	}
	for _, targets := range mapValues(doc.Content[0], "targets") {
		if targets.Kind != yaml.SequenceNode {
			continue
		}
		for _, target := range targets.Content {
			for _, headers := range mapValues(target, "headers") {
				if headers.Kind != yaml.MappingNode {
					continue
				}
				for i := 1; i < len(headers.Content); i += 2 {
					h := headers.Content[i]
					mark(h)
					for _, v := range mapValues(h, "value") {
						mark(v)
					}
				}
			}
		}
	}
	return marked
}

// mapValues returns the values of key in mapping n (several if the key is
// repeated, which the loader refuses anyway).
func mapValues(n *yaml.Node, key string) []*yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	var out []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			out = append(out, n.Content[i+1])
		}
	}
	return out
}

// checkRoundTrip: what Redacted prints loads again, to a configuration
// that Redacted prints identically.
func checkRoundTrip(t *testing.T, l loader, cfg *Config) {
	t.Helper()
	b, err := cfg.Redacted()
	if err != nil {
		t.Fatalf("Redacted: %v", err)
	}
	for _, secret := range []string{fuzzEnvSecret, fuzzFileSecret} {
		if bytes.Contains(b, []byte(secret)) {
			t.Fatalf("the secret %q shows in Redacted:\n%s", secret, b)
		}
	}
	again, err := l.loadBytes("redacted", b, "", nil)
	if err != nil {
		t.Fatalf("Redacted output does not load again: %v\n%s", err, b)
	}
	b2, err := again.Redacted()
	if err != nil {
		t.Fatalf("Redacted of the reloaded configuration: %v", err)
	}
	if !bytes.Equal(b, b2) {
		t.Fatalf("Redacted output does not round-trip:\n%s\n---\n%s", b, b2)
	}
}

// TestFuzzFindingDeterministicProblems (found by FuzzLoadBytes): the same
// file gives the same report, even where mapstructure visits a map's
// entries in Go's random order.
func TestFuzzFindingDeterministicProblems(t *testing.T) {
	data := []byte(`
targets:
  - name: a
    url: http://127.0.0.1:11434
    headers: {X-A: [1], X-B: [2], X-C: {value: {x: 1}}, X-D: [4], X-E: 5, X-F: {value: [6]}}
agents: [{name: x, target: a, model: m, variables: {a: [1], b: [2], c: [3]}, workflow: [{name: s, prompt: hi}]}]
workloads: [{name: w, agents: [{agent: x}]}]
`)
	_, first := testEnv().loadBytes(fuzzName, data, "", nil)
	if first == nil {
		t.Fatal("loaded without error")
	}
	for range 20 {
		if _, err := testEnv().loadBytes(fuzzName, data, "", nil); errString(err) != errString(first) {
			t.Fatalf("the report changed between loads:\n%v\n---\n%v", first, err)
		}
	}
	for _, want := range []string{"targets[0].headers[X-A]:", "targets[0].headers[X-F].value:", "agents[0].variables[c]:"} {
		if !strings.Contains(first.Error(), want) {
			t.Errorf("no problem about %s in:\n%v", want, first)
		}
	}
}
