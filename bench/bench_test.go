package main

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for the harness's own binary
// when the harness starts the floor client.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "floor" {
		if err := runFloor(os.Args[2:]); err != nil {
			os.Stderr.WriteString("bench: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestBusyShare(t *testing.T) {
	a, err := parseProcStat([]byte("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n"))
	if err != nil || a.busy != 200 || a.total != 1000 {
		t.Fatalf("parseProcStat = %+v, %v", a, err)
	}
	b, _ := parseProcStat([]byte("cpu  250 0 150 750 150 0 0 0 0 0\n"))
	if got := busyShare(a, b); math.Abs(got-200.0/300) > 1e-12 {
		t.Fatalf("busyShare = %v, want 2/3", got)
	}
	if _, err := parseProcStat([]byte("intr 1 2 3\n")); err == nil {
		t.Fatal("no error for a first line that is not cpu")
	}
}

func TestSummarize(t *testing.T) {
	var v []float64
	for i := 100; i >= 1; i-- {
		v = append(v, float64(i))
	}
	s := summarize(v)
	if s.N != 100 || s.Min != 1 || s.P50 != 50 || s.P99 != 99 || s.Max != 100 {
		t.Fatalf("summarize(1..100) = %+v", s)
	}
	if v[0] != 100 {
		t.Fatal("summarize sorted its input")
	}
	if s := summarize(nil); s.N != 0 {
		t.Fatalf("summarize(nil) = %+v", s)
	}
	if s := summarize([]float64{3}); s.P50 != 3 || s.P99 != 3 {
		t.Fatalf("summarize([3]) = %+v", s)
	}
}

func TestSteps(t *testing.T) {
	steps, err := parseSteps("1x100, 5000x10x64", 256, 20*time.Millisecond)
	if err != nil || len(steps) != 2 || steps[1].Concurrency != 5000 || steps[1].Rate != 10 || steps[1].NumPredict != 64 || steps[0].NumPredict != 256 {
		t.Fatalf("parseSteps = %+v, %v", steps, err)
	}
	s := steps[0]
	if got := s.injectedTTFT(); got != 30*time.Millisecond {
		t.Fatalf("injectedTTFT = %v, want 30ms", got)
	}
	// 256 tokens: 30 ms to the first, 255 × 10 ms after it.
	if got, want := s.idealTokensPerSecond(), 256/2.58; math.Abs(got-want) > 1e-9 {
		t.Fatalf("idealTokensPerSecond = %v, want %v", got, want)
	}
	if got := s.ramp(); got != 2580*time.Millisecond {
		t.Fatalf("ramp = %v, want one answer's time", got)
	}
	for _, bad := range []string{"", "10", "0x10", "10x0", "ax1", "10x-1", "1x1x0", "1x1x1x1"} {
		if _, err := parseSteps(bad, 1, 0); err == nil {
			t.Errorf("parseSteps(%q): no error", bad)
		}
	}
}

// TestHarness runs the whole harness at a tiny scale: both clients against
// the simulator, start-up and memory. It checks that what it reports holds
// together, not how fast anything is.
func TestHarness(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the harness reads /proc: Linux only")
	}
	if testing.Short() {
		t.Skip("builds and runs the daemon: skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin, err := buildDaemon(ctx, "..", dir)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "report.json")
	err = run(ctx, []string{"--binary=" + bin, "--steps=1x200,3x100", "--num-predict=20",
		"--first-token-delay=5ms", "--warmup=200ms", "--window=1s", "--startup-runs=2",
		"--idle-for=1s", "--demo-for=2s", "--json=" + out}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Steps) != 4 {
		t.Fatalf("%d results, want 2 steps × 2 clients", len(rep.Steps))
	}
	for _, r := range rep.Steps {
		t.Logf("%s %s: %d requests, %.0f tok/s (ideal %.0f), TTFT error %+v", r.Step, r.Client, r.Requests, r.TokensPerSec, r.Ideal, r.TTFTErr)
		switch {
		case r.Requests == 0 || r.Failed != 0:
			t.Errorf("%s %s: %d requests, %d failed", r.Step, r.Client, r.Requests, r.Failed)
		case r.TTFTErr.N != r.Requests || r.MaxGapErr.N != r.Requests:
			t.Errorf("%s %s: error samples %d/%d for %d requests", r.Step, r.Client, r.TTFTErr.N, r.MaxGapErr.N, r.Requests)
		// The simulator sends the first token no earlier than the injected
		// TTFT after it takes the request, so no client can measure less.
		case r.TTFTErr.Min < 0:
			t.Errorf("%s %s: a TTFT below the injected one (error %v s)", r.Step, r.Client, r.TTFTErr.Min)
		case r.Tokens <= 0 || r.CPUPerMTokens <= 0 || r.PeakRSS <= 0 || r.Goroutines < r.Step.Concurrency:
			t.Errorf("%s %s: implausible %+v", r.Step, r.Client, r)
		// 20 tokens at 200 tok/s: each request is about 0.1 s, so a 1 s
		// window sees the streams run near their ideal rate.
		case r.TokensPerSec < 0.5*r.Ideal || r.TokensPerSec > 1.2*r.Ideal:
			t.Errorf("%s %s: %.0f tok/s against an ideal %.0f", r.Step, r.Client, r.TokensPerSec, r.Ideal)
		}
	}
	if len(rep.Startup) != 2 {
		t.Fatalf("%d start-ups, want 2", len(rep.Startup))
	}
	for _, s := range rep.Startup {
		if s.FirstRequest <= 0 || s.Ready <= 0 || s.FirstRequest > 30*time.Second {
			t.Errorf("start-up %+v", s)
		}
	}
	if rep.IdleRSS == nil || rep.IdleRSS.RSS <= 0 || rep.DemoRSS == nil || rep.DemoRSS.Peak < rep.DemoRSS.RSS {
		t.Errorf("memory: idle %+v, demo %+v", rep.IdleRSS, rep.DemoRSS)
	}
}
