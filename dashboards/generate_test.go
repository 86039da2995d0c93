package dashboards

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// The committed files in generated/ are what the code generates: a change
// to a metric name, a query or a threshold that was not regenerated fails
// here rather than in someone's Grafana.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	want, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir("generated")
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, e := range entries {
		have = append(have, e.Name())
	}
	var names []string
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	const fix = "regenerate: go run ./cmd/chimeraforge dashboards --out dashboards/generated --kubernetes-out deploy/kubernetes/base/generated"
	for _, n := range names {
		got, err := os.ReadFile(filepath.Join("generated", n))
		if err != nil {
			t.Errorf("%s is not committed (%v); %s", n, err, fix)
			continue
		}
		if !bytes.Equal(got, want[n]) {
			t.Errorf("generated/%s is stale; %s", n, fix)
		}
	}
	for _, n := range have {
		if _, ok := want[n]; !ok {
			t.Errorf("generated/%s is not generated any more; delete it", n)
		}
	}
	if len(want) < 5 {
		t.Errorf("%d files generated (%v), want 4 dashboards and the rules", len(want), names)
	}
}

func TestWriteCreatesEveryFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	names, err := Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != len(want) {
		t.Errorf("wrote %v, want %d files", names, len(want))
	}
	for _, n := range names {
		got, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || !bytes.Equal(got, want[n]) {
			t.Errorf("%s: %v, content equal %v", n, err, bytes.Equal(got, want[n]))
		}
	}
	// A path that cannot be a directory is an error naming it.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(filepath.Join(file, "sub")); err == nil {
		t.Error("Write under a regular file: no error")
	}
}
