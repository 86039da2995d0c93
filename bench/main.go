// Command bench measures the daemon's own cost and the accuracy of what it
// measures, against a floor: the smallest honest Go client for the same
// streams. Run it from the repository root:
//
//	go run ./bench
//
// Each step starts `chimeraforge sim` in a process of its own with a known
// first-token delay and token rate, then drives it with the floor and with
// `chimeraforge run` in turn (each in a process of its own, each with a
// fresh simulator), and reads their CPU time, memory, goroutines and
// allocations from /proc and their own endpoints over a measured window.
// Every per-request figure comes from the daemon's request log and the
// floor's equivalent. docs/benchmarks.md defines every figure.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "floor" {
		if err := runFloor(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	steps        string
	numPredict   int
	firstDelay   time.Duration
	warmup       time.Duration
	window       time.Duration
	clients      string
	startupRuns  int
	idleFor      time.Duration
	demoFor      time.Duration
	binary       string
	jsonOut      string
	skipStartup  bool
	skipMemory   bool
	maxRamp      time.Duration
	keepWorkdirs bool
}

// report is everything one harness run measured; --json writes it.
type report struct {
	Started  time.Time
	Steps    []result
	Startup  []startupRun `json:",omitempty"`
	IdleRSS  *memory      `json:",omitempty"`
	DemoRSS  *memory      `json:",omitempty"`
	Settings map[string]string
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&o.steps, "steps", "1x100,10x100,100x50,1000x20,5000x4x64,10x2000", "load steps, comma-separated: CONCURRENCYxTOKENS_PER_SECOND of each stream[xTOKENS_PER_ANSWER]")
	fs.IntVar(&o.numPredict, "num-predict", 256, "tokens per answer")
	fs.DurationVar(&o.firstDelay, "first-token-delay", 20*time.Millisecond, "first-token delay the simulator injects (plus one token interval)")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "time after every stream is running before the window")
	fs.DurationVar(&o.window, "window", 10*time.Second, "measured window of each step and client")
	fs.DurationVar(&o.maxRamp, "max-ramp", 60*time.Second, "longest wait for every stream of a step to run")
	fs.StringVar(&o.clients, "clients", "floor,daemon", "clients to measure at each step, in this order")
	fs.IntVar(&o.startupRuns, "startup-runs", 10, "daemon starts measured for start-up time")
	fs.DurationVar(&o.idleFor, "idle-for", 5*time.Second, "time the idle daemon runs before its memory is read")
	fs.DurationVar(&o.demoFor, "demo-for", 30*time.Second, "time the built-in demo runs before its memory is read")
	fs.StringVar(&o.binary, "binary", "", "chimeraforge binary to measure (default: build ./cmd/chimeraforge)")
	fs.StringVar(&o.jsonOut, "json", "", "also write every figure to this file as JSON")
	fs.BoolVar(&o.skipStartup, "skip-startup", false, "do not measure start-up time")
	fs.BoolVar(&o.skipMemory, "skip-memory", false, "do not measure idle and demo memory")
	fs.BoolVar(&o.keepWorkdirs, "keep", false, "keep the work directory (configs, request logs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	steps, err := parseSteps(o.steps, o.numPredict, o.firstDelay)
	if err != nil {
		return err
	}
	clients := splitList(o.clients)
	for _, c := range clients {
		if c != "floor" && c != "daemon" {
			return fmt.Errorf("--clients: %q is neither floor nor daemon", c)
		}
	}

	dir, err := os.MkdirTemp("", "chimeraforge-bench-")
	if err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	if o.keepWorkdirs {
		fmt.Fprintln(stdout, "work directory:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	r := &runner{bin: o.binary, dir: dir, warmup: o.warmup, window: o.window, maxRamp: o.maxRamp}
	if r.bin == "" {
		if r.bin, err = buildDaemon(ctx, ".", dir); err != nil {
			return err
		}
	}
	if r.self, err = os.Executable(); err != nil {
		return fmt.Errorf("find this harness's binary for the floor: %w", err)
	}

	rep := report{Started: time.Now().UTC(), Settings: map[string]string{
		"steps": o.steps, "num_predict": fmt.Sprint(o.numPredict), "first_token_delay": o.firstDelay.String(),
		"warmup": o.warmup.String(), "window": o.window.String(), "clients": o.clients,
	}}
	for _, s := range steps {
		for _, c := range clients {
			fmt.Fprintf(os.Stderr, "bench: %s, %s ...\n", s, c)
			res, err := r.run(ctx, c, s)
			if err != nil {
				return fmt.Errorf("%s, %s: %w", s, c, err)
			}
			rep.Steps = append(rep.Steps, res)
		}
	}
	if !o.skipStartup && o.startupRuns > 0 {
		fmt.Fprintln(os.Stderr, "bench: start-up ...")
		if rep.Startup, err = r.measureStartup(ctx, o.startupRuns); err != nil {
			return fmt.Errorf("start-up: %w", err)
		}
	}
	if !o.skipMemory {
		fmt.Fprintln(os.Stderr, "bench: idle and demo memory ...")
		f, err := startFakeOllama()
		if err != nil {
			return err
		}
		idle, err := r.memoryAfter(ctx, idleConfig(f.url), o.idleFor)
		sent := f.chats.Load()
		f.close()
		if err != nil {
			return fmt.Errorf("idle memory: %w", err)
		}
		if sent != 0 {
			return fmt.Errorf("idle memory: the idle daemon sent %d requests", sent)
		}
		rep.IdleRSS = &idle
		demo, err := r.memoryAfter(ctx, "", o.demoFor)
		if err != nil {
			return fmt.Errorf("demo memory: %w", err)
		}
		rep.DemoRSS = &demo
	}
	writeReport(stdout, &rep)
	if o.jsonOut != "" {
		b, err := json.MarshalIndent(&rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonOut, b, 0o644); err != nil {
			return fmt.Errorf("--json: %w", err)
		}
	}
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
