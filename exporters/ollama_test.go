package exporters

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chimeraforge/chimeraforge/observe"
)

func TestTargetPolled(t *testing.T) {
	m, reg := newTestMetrics(t)
	o := m.ollama
	exp := time.Unix(1_800_000_000, 500_000_000)

	// First poll: two models, one spilled to CPU.
	m.TargetPolled(observe.TargetState{Target: "a", Up: true, Version: "0.17.4", ProbeDuration: 250 * time.Millisecond, Models: []observe.LoadedModel{
		{Name: "llama:8b", SizeBytes: 8 << 30, VRAMBytes: 6 << 30, ContextLength: 4096, ExpiresAt: exp},
		{Name: "tiny", SizeBytes: 1 << 20, VRAMBytes: 1 << 20, ContextLength: 2048, ExpiresAt: exp},
	}})
	checks := []struct {
		name string
		got  float64
		want float64
	}{
		{"up", testutil.ToFloat64(o.up.WithLabelValues("a")), 1},
		{"info", testutil.ToFloat64(o.info.WithLabelValues("a", "0.17.4")), 1},
		{"loaded", testutil.ToFloat64(o.loadedModels.WithLabelValues("a")), 2},
		{"size", testutil.ToFloat64(o.size.WithLabelValues("a", "llama:8b")), 8 << 30},
		{"vram", testutil.ToFloat64(o.vram.WithLabelValues("a", "llama:8b")), 6 << 30},
		{"ratio spilled", testutil.ToFloat64(o.vramRatio.WithLabelValues("a", "llama:8b")), 0.75},
		{"ratio on GPU", testutil.ToFloat64(o.vramRatio.WithLabelValues("a", "tiny")), 1},
		{"context", testutil.ToFloat64(o.contextLength.WithLabelValues("a", "tiny")), 2048},
		{"expiry", testutil.ToFloat64(o.expiry.WithLabelValues("a", "tiny")), 1_800_000_000.5},
		{"probe", testutil.ToFloat64(o.probeDuration.WithLabelValues("a")), 0.25},
		{"loads on first poll", testutil.ToFloat64(o.loads.WithLabelValues("a")), 0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("first poll: %s = %v, want %v", c.name, c.got, c.want)
		}
	}

	// Second poll: llama unloaded, tiny reloaded with another context,
	// version upgraded.
	m.TargetPolled(observe.TargetState{Target: "a", Up: true, Version: "0.18.0", Models: []observe.LoadedModel{
		{Name: "tiny", SizeBytes: 1 << 20, ContextLength: 8192},
	}})
	if n := testutil.CollectAndCount(o.size); n != 1 {
		t.Errorf("%d size series after llama unloaded, want 1 (no stale series)", n)
	}
	if n := testutil.CollectAndCount(o.info); n != 1 || testutil.ToFloat64(o.info.WithLabelValues("a", "0.18.0")) != 1 {
		t.Errorf("info: %d series, want the one of 0.18.0", n)
	}
	for name, want := range map[string]float64{
		"version changes": testutil.ToFloat64(o.versionChanges.WithLabelValues("a")) - 1,
		"loads":           testutil.ToFloat64(o.loads.WithLabelValues("a")) - 1,
		"unloads":         testutil.ToFloat64(o.unloads.WithLabelValues("a")) - 1,
		"ratio on CPU":    testutil.ToFloat64(o.vramRatio.WithLabelValues("a", "tiny")),
		"no expiry":       float64(testutil.CollectAndCount(o.expiry)),
	} {
		if want != 0 {
			t.Errorf("second poll: %s off by %v", name, want)
		}
	}

	// Down: state unknown, so no model series; the version seen stays.
	m.TargetPolled(observe.TargetState{Target: "a", Up: false})
	if got := testutil.ToFloat64(o.up.WithLabelValues("a")); got != 0 {
		t.Errorf("up while down = %v", got)
	}
	if n := testutil.CollectAndCount(o.size) + testutil.CollectAndCount(o.loadedModels); n != 0 {
		t.Errorf("%d model series while down, want 0", n)
	}
	// Back with the same version: not a change.
	m.TargetPolled(observe.TargetState{Target: "a", Up: true, Version: "0.18.0"})
	if got := testutil.ToFloat64(o.versionChanges.WithLabelValues("a")); got != 1 {
		t.Errorf("version changes after coming back = %v, want 1", got)
	}

	m.TargetPolled(observe.TargetState{Target: "b", Up: true, Version: "0.17.4"})
	m.TargetRemoved("a")
	if n := seriesOf(t, reg, map[string]string{LabelTarget: "a"}); n != 0 {
		t.Errorf("%d series of a removed target, want 0", n)
	}
	if n := seriesOf(t, reg, map[string]string{LabelTarget: "b"}); n == 0 {
		t.Error("the other target's series went too")
	}
}
