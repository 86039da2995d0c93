package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chimeraforge/chimeraforge/internal/hostile"
	"github.com/chimeraforge/chimeraforge/internal/soak"
	"github.com/chimeraforge/chimeraforge/observe"
)

// The soak test runs the daemon as a child process, the way it runs in
// production, for a fixed time under a configuration that changes every
// phase, and samples its /metrics and /proc. The compressed run (CI) takes
// about two minutes; the long soak is the same test given a duration:
//
//	CF_SOAK_DURATION=6h go test -run TestSoak -timeout 7h -v ./cmd/chimeraforge/
//
// or scripts/soak.sh. CF_SOAK_PHASE sets the time between two reloads.
const (
	envSoakDuration = "CF_SOAK_DURATION" // total run after start, default soakDefaultDuration
	envSoakPhase    = "CF_SOAK_PHASE"    // one configuration's time, default soakDefaultPhase

	soakDefaultDuration = 2 * time.Minute
	soakDefaultPhase    = 10 * time.Second
)

// soakPhase is one configuration of the soak's cycle.
type soakPhase struct {
	faults  bool // the simulators inject errors, stalls and drops
	refused bool // target flaky points at a loopback port nobody listens on, else at sim-c
	toggler bool // agent toggler runs in workload closed
}

func (p soakPhase) String() string {
	s := []string{"faults off", "flaky on sim-c", "toggler out"}
	if p.faults {
		s[0] = "faults on"
	}
	if p.refused {
		s[1] = "flaky refused"
	}
	if p.toggler {
		s[2] = "toggler in"
	}
	return strings.Join(s, ", ")
}

// soakCycle is repeated for the whole soak: every reload switches the
// faults (which replaces every simulator and restarts every workload on
// one), adds or removes an agent (whose series go and come back at 0), and
// every second reload moves target flaky between a refused port and a
// simulator. Phase 1 also tries an invalid configuration.
var soakCycle = []soakPhase{
	{faults: false, refused: true, toggler: true},
	{faults: true, refused: true, toggler: false},
	{faults: false, refused: false, toggler: true},
	{faults: true, refused: false, toggler: false},
}

// soakInvalidPhase is the phase of the cycle in which an invalid
// configuration is sent (SIGHUP) after the first sample.
const soakInvalidPhase = 1

// soakAgent is one agent of the soak configuration, as far as its series
// go: the workload running it, its targets and its workflow's steps.
type soakAgent struct {
	name, workload string
	targets, steps []string
}

// soakAgents lists the agents that phase p runs.
func soakAgents(p soakPhase) []soakAgent {
	as := []soakAgent{
		{"writer", "closed", []string{"a"}, []string{"analysis", "report"}},
		{"balancer", "closed", []string{"a", "b"}, []string{"ask"}},
		{"poisson-agent", "poisson", []string{"b"}, []string{"ask"}},
		{"flaky-closed", "flaky", []string{"flaky"}, []string{"ask"}},
		{"flaky-open", "flaky-open", []string{"flaky"}, []string{"ask"}},
	}
	if p.toggler {
		as = append(as, soakAgent{"toggler", "closed", []string{"b"}, []string{"ask"}})
	}
	return as
}

// soakWorkloads and soakTargets are the same in every phase.
var (
	soakWorkloads = []string{"closed", "poisson", "flaky", "flaky-open"}
	soakTargets   = []string{"a", "b", "flaky"}
)

// soakStall is the simulators' stall when faults are on: far above any
// inter-token gap of the configuration (decode at 300 tokens/s shared by
// a few streams: ~3–20 ms), so gaps above soakStallBucket are stalls.
const (
	soakStall       = 400 * time.Millisecond
	soakStallBucket = 0.3 // an inter-token latency bucket boundary below soakStall
)

// soakConfig is phase p's configuration; refused is the URL of a loopback
// port nobody listens on.
func soakConfig(p soakPhase, refused string) string {
	off := "{error_ratio: 0, stall_ratio: 0, drop_ratio: 0}"
	fa, fb, fc := off, off, off
	if p.faults {
		fa = fmt.Sprintf("{error_ratio: 0.08, stall_ratio: 0.08, stall_duration: %s, drop_ratio: 0.08}", soakStall)
		fb = fmt.Sprintf("{error_ratio: 0.05, stall_ratio: 0.05, stall_duration: %s, drop_ratio: 0.05}", soakStall)
		fc = "{error_ratio: 0.2, drop_ratio: 0.1}"
	}
	flaky := "sim://sim-c"
	if p.refused {
		flaky = refused
	}
	toggler := ""
	if p.toggler {
		toggler = ", {agent: toggler}"
	}
	return fmt.Sprintf(`
global:
  shutdown_timeout: 5s
  readiness_probe_interval: 500ms
simulation:
  gpus:
    - {name: g-ab, decode_rate: 300}
    - {name: g-c, decode_rate: 300}
  instances:
    - {name: sim-a, gpu: g-ab, num_parallel: 2, load_delay: 20ms, seed: 1, faults: %s}
    - {name: sim-b, gpu: g-ab, num_parallel: 2, load_delay: 20ms, seed: 2, faults: %s}
    - {name: sim-c, gpu: g-c, num_parallel: 1, load_delay: 20ms, seed: 3, faults: %s}
targets:
  - {name: a, url: "sim://sim-a", num_parallel: 2, poll_interval: 1s}
  - {name: b, url: "sim://sim-b", num_parallel: 2, poll_interval: 1s}
  - name: flaky
    url: %q
    poll_interval: 1s
    timeouts: {connect: 1s, first_token: 5s, idle: 2s, request: 10s}
agents:
  - name: writer
    target: a
    model: sim-tiny
    keep_history: true
    think_time: 20ms
    options: {num_predict: 24}
    variables: {topic: leaks}
    workflow:
      - {name: analysis, system: "You are terse.", prompt: "Analyse {{.Vars.topic}}, run {{.Run}}."}
      - {name: report, prompt: "Report on: {{.Previous}}"}
  - name: balancer
    targets: [a, b]
    balance: least_in_flight
    model: sim-tiny
    api: generate
    think_time: 10ms
    options: {num_predict: 16}
    workflow:
      - {name: ask, prompt: "Replica {{.Replica}} asks."}
  - name: toggler
    target: b
    model: sim-tiny
    think_time: 30ms
    options: {num_predict: 8}
    workflow:
      - {name: ask, prompt: "Here and gone."}
  - name: poisson-agent
    target: b
    model: sim-tiny
    options: {num_predict: 12}
    workflow:
      - {name: ask, prompt: "Arrival {{.Run}}."}
  - name: flaky-closed
    target: flaky
    model: sim-tiny
    think_time: 50ms
    options: {num_predict: 8}
    workflow:
      - {name: ask, prompt: "Anyone there?"}
  - name: flaky-open
    target: flaky
    model: sim-tiny
    options: {num_predict: 8}
    workflow:
      - {name: ask, prompt: "Anyone there, open loop?"}
workloads:
  - name: closed
    agents: [{agent: writer, replicas: 2}, {agent: balancer, replicas: 2}%s]
    calibration: {at_start: true, runs: 1, max_duration: 2s}
  - name: poisson
    arrival: {mode: poisson, rate: 10, max_in_flight: 4, seed: 7}
    agents: [{agent: poisson-agent}]
    calibration: {at_start: false}
  - name: flaky
    agents: [{agent: flaky-closed}]
    calibration: {at_start: false}
  - name: flaky-open
    arrival: {mode: constant, rate: 5, max_in_flight: 2}
    agents: [{agent: flaky-open}]
    calibration: {at_start: false}
`, fa, fb, fc, flaky, toggler)
}

// soakExpected is the number of series of each family that phase p
// implies: per-request families have one series per (workload, agent,
// target, step) and per outcome, reason or contention kind; per-agent ones
// one per (workload, agent); and so on (docs/metrics.md).
func soakExpected(p soakPhase) map[string]int {
	var steps, agentTargets, agents int
	for _, a := range soakAgents(p) {
		steps += len(a.targets) * len(a.steps)
		agentTargets += len(a.targets)
		agents++
	}
	return map[string]int{
		"chimeraforge_requests_total":                     3 * steps,
		"chimeraforge_request_errors_total":               len(observe.Reasons) * steps,
		"chimeraforge_contention_events_total":            len(observe.Contentions) * steps,
		"chimeraforge_generated_tokens_total":             steps,
		"chimeraforge_prompt_tokens_total":                steps,
		"chimeraforge_eval_duration_seconds_total":        steps,
		"chimeraforge_prompt_eval_duration_seconds_total": steps,
		"chimeraforge_load_duration_seconds_total":        steps,
		"chimeraforge_time_to_first_token_seconds":        steps,
		"chimeraforge_inter_token_latency_seconds":        steps,
		"chimeraforge_request_duration_seconds":           steps,
		"chimeraforge_queue_wait_seconds":                 steps,
		"chimeraforge_requests_in_flight":                 agentTargets,
		"chimeraforge_agent_runs_total":                   3 * agents,
		"chimeraforge_agent_active":                       agents,
		"chimeraforge_arrivals_dropped_total":             len(soakWorkloads),
		"chimeraforge_calibrating":                        len(soakWorkloads),
		"chimeraforge_ollama_up":                          len(soakTargets),
		"chimeraforge_config_last_reload_successful":      1,
		"chimeraforge_shard_info":                         1,
	}
}

// soakChurnAllowed reports whether series key may appear or go between
// two phases: the toggled agent's series, and the state of target flaky
// and of the simulated GPUs' processes (a simulator with no model loaded
// has none), which follow flaky's move between a refused port and sim-c.
func soakChurnAllowed(key string) bool {
	name, _, _ := strings.Cut(key, "{")
	switch {
	case strings.Contains(key, `agent="toggler"`):
		return true
	case strings.HasPrefix(name, "chimeraforge_ollama_") && strings.Contains(key, `target="flaky"`):
		return true
	case name == "chimeraforge_gpu_process_memory_bytes":
		return true
	}
	return false
}

// soakSample is one look at the child.
type soakSample struct {
	phase int // index into the run's phases
	s     *soak.Scrape
	proc  soak.Proc // zero where there is no /proc
}

// soakRun checks the samples as they come, keeping of each only the
// figures the leak checks need and of the scrapes only the previous one:
// a long soak takes thousands.
type soakRun struct {
	t    *testing.T
	d    *soak.Daemon
	prev *soakSample
	seen map[string]bool // every series of the samples before prev

	figures    []map[string]float64 // per sample: figure → value
	figPhase   []int
	slowest    time.Duration // scrape
	histResets int
}

// soakGauges are the figures kept from each sample's /metrics (the
// process's own view); proc_fds and proc_threads come from /proc (the
// kernel's).
var soakGauges = []string{"go_goroutines", "process_open_fds", "go_memstats_heap_inuse_bytes", "go_threads",
	"process_resident_memory_bytes"}

// add checks sample x against the one before it and keeps its figures.
func (r *soakRun) add(x soakSample) {
	t := r.t
	t.Helper()
	r.slowest = max(r.slowest, x.s.Took)
	f := map[string]float64{"proc_fds": float64(x.proc.FDs), "proc_threads": float64(x.proc.Threads)}
	for _, name := range soakGauges {
		v, ok := x.s.Get(name)
		if !ok {
			t.Fatalf("phase %d: no %s", x.phase, name)
		}
		f[name] = v
	}
	r.figures, r.figPhase = append(r.figures, f), append(r.figPhase, x.phase)
	prev := r.prev
	r.prev = &x
	if prev == nil {
		return
	}
	// Counters never go down. A histogram may be reset by the client
	// library once it outgrows its native bucket limit, at most once an
	// hour per series (exporters' NativeHistogramMinResetDuration): allowed
	// only in a run that long.
	for _, reg := range soak.Regressions(prev.s, x.s) {
		if reg.Histogram && x.s.At.Sub(r.d.Started) > time.Hour {
			r.histResets++
			t.Logf("phase %d: histogram reset (native bucket limit; allowed after an hour): %v", x.phase, reg)
			continue
		}
		t.Errorf("phase %d: counter went down between two samples: %v", x.phase, reg)
	}

	p := soakCycle[x.phase%len(soakCycle)]
	prevKeys := prev.s.Series()
	added, removed := soak.Diff(prevKeys, x.s.Series())
	if prev.phase == x.phase {
		// Within one configuration no series goes, and the only ones that
		// come are created on first use (a histogram's first observation,
		// a first baseline): never seen before.
		added = slices.DeleteFunc(added, func(k string) bool { return !r.seen[k] })
		if len(added)+len(removed) > 0 {
			t.Errorf("phase %d (%v): series changed within one configuration: added %v, removed %v", x.phase, p, added, removed)
		}
		// With faults off, no request to a simulator fails.
		if ea, eb := soakErrors(prev.s, p), soakErrors(x.s, p); !p.faults && eb != ea {
			t.Errorf("phase %d (%v): %v requests failed between two samples with faults off", x.phase, p, eb-ea)
		}
	} else {
		// Between configurations only what the change implies goes, and
		// only that or what was never seen comes.
		for _, k := range removed {
			if !soakChurnAllowed(k) {
				t.Errorf("phase %d→%d: series %s went, but the configuration change does not imply it", prev.phase, x.phase, k)
			}
		}
		for _, k := range added {
			if r.seen[k] && !soakChurnAllowed(k) {
				t.Errorf("phase %d→%d: series %s came back, but the configuration change does not imply it", prev.phase, x.phase, k)
			}
		}
	}
	for k := range prevKeys {
		r.seen[k] = true
	}
}

// soakErrors counts the failed requests to targets backed by a simulator.
func soakErrors(s *soak.Scrape, p soakPhase) float64 {
	n := s.Sum("chimeraforge_requests_total", map[string]string{"target": "a", "outcome": "error"}) +
		s.Sum("chimeraforge_requests_total", map[string]string{"target": "b", "outcome": "error"})
	if !p.refused {
		n += s.Sum("chimeraforge_requests_total", map[string]string{"target": "flaky", "outcome": "error"})
	}
	return n
}

// refusingURL returns the URL of a loopback listener that resets every
// connection at once, as a refused port does for the client (reason
// connect). It stays bound for the whole test: a port bound and released
// could be taken by another process during a long run, and then answer.
func refusingURL(t *testing.T) string {
	t.Helper()
	s := hostile.Start(t)
	s.SetAccept(hostile.AcceptReset)
	return s.URL()
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive Go duration such as 6h", name, v)
	}
	return d
}

// Leak bounds: how far the second half of the samples after warm-up may
// rise above the first half, its maximum (peak) and its minimum (floor),
// as an absolute slack plus a fraction of the first half's figure.
//
// The soak ends 30–40 requests a second (~1,500 in the second half of the
// compressed run) and reloads every phase, and the process holds ~50–100
// goroutines and ~25–50 descriptors. A leak of one goroutine or one
// descriptor per request adds hundreds to thousands between the halves;
// one per reload adds one per phase, which only the long soak (hundreds
// of reloads) can tell from noise. The noise is what is in flight at a
// sample — up to ~12 requests of a few goroutines and two descriptors each
// (both ends of a loopback connection live in this process) plus idle
// keep-alive connections — about 40 goroutines and 20 descriptors between
// two samples, in either half alike. The heap in use swings with the
// garbage collector by tens of MB (more under -race); its floor, near the
// live heap, moves by a few.
type leakBound struct {
	peakAbs, floorAbs float64
	rel               float64
}

var (
	goroutineBound = leakBound{peakAbs: 60, floorAbs: 30, rel: 0.2}
	fdBound        = leakBound{peakAbs: 30, floorAbs: 15, rel: 0.2}
	heapBound      = leakBound{peakAbs: 32e6, floorAbs: 16e6, rel: 0.2}
	threadBound    = leakBound{peakAbs: 8, floorAbs: 8, rel: 0.2}
	// RSS follows the heap's peak and, under -race, the race runtime's
	// shadow memory; recorded, and bounded loosely.
	rssBound = leakBound{peakAbs: 32e6, floorAbs: 32e6, rel: 0.5}
)

// soakShutdownBound is how long the soak's daemon may take to exit after
// SIGTERM: its global.shutdown_timeout (5s), run.go's 5s for the HTTP
// server, and 5s for a loaded machine.
const soakShutdownBound = 5*time.Second + 5*time.Second + 5*time.Second

// TestSoak runs the daemon as a child process through phases of changing
// configuration (see soakCycle) and checks, sample by sample, that no
// counter goes down, that each configuration exports exactly the series it
// implies, that faults show only while switched on, and at the end that
// goroutines, descriptors, heap, threads and memory stayed flat after the
// warm-up. By default it is compressed to two minutes for CI; the long soak
// is the same test with CF_SOAK_DURATION (see scripts/soak.sh).
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped with -short (about 2 minutes)")
	}
	duration := envDuration(t, envSoakDuration, soakDefaultDuration)
	phaseLen := envDuration(t, envSoakPhase, soakDefaultPhase)
	interval := max(phaseLen/5, time.Second) // between two samples
	settle := 2 * interval                   // after a reload, before the first sample
	if settle+interval > phaseLen {
		t.Fatalf("%s %v too short: want at least %v", envSoakPhase, phaseLen, settle+interval)
	}
	nPhases := max(3*len(soakCycle), int(duration/phaseLen))
	warmup := len(soakCycle) // phases left out of the leak checks
	t.Logf("soak: %d phases of %v (%v), a sample every %v from %v after each reload, warm-up %d phases",
		nPhases, phaseLen, time.Duration(nPhases)*phaseLen, interval, settle, warmup)

	bin := soak.Build(t, ".")
	refused := refusingURL(t)
	cfgFile := filepath.Join(t.TempDir(), "soak.yaml")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(cfgFile, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(soakConfig(soakCycle[0], refused))
	// At info level: hours of debug lines would fill the test's memory.
	d := soak.Start(t, bin, cfgFile, "--log.level=info")
	ctx := t.Context()
	run := &soakRun{t: t, d: d, seen: map[string]bool{}}

	take := func(phase int) *soak.Scrape {
		t.Helper()
		if !d.Running() {
			t.Fatalf("daemon exited (%s) during phase %d", d.ExitState(), phase)
		}
		s, err := d.Scrape(ctx)
		if err != nil {
			t.Fatalf("phase %d: scrape: %v", phase, err)
		}
		proc, err := soak.ReadProc(d.PID())
		if err != nil && runtime.GOOS == "linux" {
			t.Fatalf("phase %d: %v", phase, err)
		}
		if code, _, err := d.Get(ctx, "/healthz"); err != nil || code != http.StatusOK {
			t.Errorf("phase %d: /healthz %d %v", phase, code, err)
		}
		run.add(soakSample{phase: phase, s: s, proc: proc})
		return s
	}
	var reloadTimes []time.Duration
	goodReloads, badReloads := 0, 0
	reload := func(phase int, content, want string, n int) {
		t.Helper()
		write(content)
		start := time.Now()
		if err := d.Signal(syscall.SIGHUP); err != nil {
			t.Fatalf("SIGHUP: %v", err)
		}
		deadline := start.Add(30 * time.Second)
		for d.Log.Count(want) < n {
			if time.Now().After(deadline) || !d.Running() {
				t.Fatalf("phase %d: no %q after SIGHUP within 30s (daemon %s)", phase, want, d.ExitState())
			}
			time.Sleep(10 * time.Millisecond)
		}
		reloadTimes = append(reloadTimes, time.Since(start))
	}

	eventuallyDaemon(t, d, 30*time.Second, "/readyz 200", func() bool {
		code, _, err := d.Get(ctx, "/readyz")
		return err == nil && code == http.StatusOK
	})
	phaseStart := time.Now()
	for i := range nPhases {
		p := soakCycle[i%len(soakCycle)]
		if i > 0 {
			goodReloads++
			reload(i, soakConfig(p, refused), `"msg":"configuration reloaded"`, goodReloads)
			phaseStart = time.Now()
		}
		var first, last *soak.Scrape
		for k := 0; ; k++ {
			at := phaseStart.Add(settle + time.Duration(k)*interval)
			if at.After(phaseStart.Add(phaseLen - interval/2)) {
				break
			}
			time.Sleep(time.Until(at))
			last = take(i)
			checkSoakPhase(t, p, i, last)
			if k == 0 {
				first = last
				if i%len(soakCycle) == soakInvalidPhase {
					// Refused; the configuration running goes on
					// untouched: the same series, more requests.
					badReloads++
					reload(i, "targets: [{name: a, urll: nowhere}]\n", `"msg":"reload failed; the previous configuration keeps running"`, badReloads)
				}
			}
		}
		time.Sleep(time.Until(phaseStart.Add(phaseLen)))
		if last.Sum("chimeraforge_requests_total", nil) <= first.Sum("chimeraforge_requests_total", nil) {
			t.Errorf("phase %d (%v): no request ended between its first and last samples", i, p)
		}
		want := 1.0
		if i%len(soakCycle) == soakInvalidPhase {
			want = 0
		}
		if v, _ := last.Get("chimeraforge_config_last_reload_successful"); v != want {
			t.Errorf("phase %d: chimeraforge_config_last_reload_successful = %v, want %v", i, v, want)
		}
	}
	checkSoakFlat(t, run, warmup)
	soakFigures(t, run, reloadTimes, goodReloads, badReloads)

	// The end: SIGTERM, and a clean exit (a data race in a -race child
	// would make it exit 66).
	sent := time.Now()
	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, at, ok := d.Wait(soakShutdownBound)
	if !ok {
		t.Fatalf("daemon still running %v after SIGTERM", soakShutdownBound)
	}
	t.Logf("soak: SIGTERM to exit %v, exit code %d", at.Sub(sent).Round(time.Millisecond), code)
	if code != 0 {
		t.Errorf("daemon exited %d after SIGTERM, want 0", code)
	}
	if log := d.Log.String(); strings.Contains(log, "DATA RACE") || strings.Contains(log, "panic:") {
		t.Errorf("daemon log reports a data race or a panic")
	}
}

// eventuallyDaemon polls cond every 100ms until it holds, limit passes or
// the child exits.
func eventuallyDaemon(t *testing.T, d *soak.Daemon, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if !d.Running() {
			t.Fatalf("daemon exited (%s) while waiting for %s", d.ExitState(), what)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkSoakPhase checks one settled sample against its phase: the series
// the configuration implies, and target flaky up only on a simulator.
func checkSoakPhase(t *testing.T, p soakPhase, i int, s *soak.Scrape) {
	t.Helper()
	for name, want := range soakExpected(p) {
		if got := s.Count(name, nil); got != want {
			t.Errorf("phase %d (%v): %s has %d series, the configuration implies %d", i, p, name, got, want)
		}
	}
	if up := s.Sum("chimeraforge_ollama_up", map[string]string{"target": "flaky"}); (up == 1) == p.refused {
		t.Errorf("phase %d (%v): chimeraforge_ollama_up{target=flaky} = %v", i, p, up)
	}
}

// flatCheck is one figure checkSoakFlat bounds.
type flatCheck struct {
	what, name string
	b          leakBound
	scale      float64 // printed divided by this
}

// checkSoakFlat asserts that goroutines, open descriptors, heap, threads
// and resident memory stayed flat after the warm-up (see the leak bounds
// above), and records them.
func checkSoakFlat(t *testing.T, run *soakRun, warmup int) {
	t.Helper()
	series := map[string][]float64{}
	n := 0
	for i, f := range run.figures {
		if run.figPhase[i] < warmup {
			continue
		}
		n++
		for k, v := range f {
			series[k] = append(series[k], v)
		}
	}
	if n < 4 {
		t.Fatalf("only %d samples after warm-up", n)
	}
	checks := []flatCheck{
		{"goroutines", "go_goroutines", goroutineBound, 1},
		{"open fds", "process_open_fds", fdBound, 1},
		{"heap in use (MB)", "go_memstats_heap_inuse_bytes", heapBound, 1e6},
		{"OS threads", "go_threads", threadBound, 1},
		{"resident memory (MB)", "process_resident_memory_bytes", rssBound, 1e6},
	}
	if runtime.GOOS == "linux" {
		checks = append(checks,
			flatCheck{"open fds (/proc)", "proc_fds", fdBound, 1},
			flatCheck{"threads (/proc)", "proc_threads", threadBound, 1})
	}
	for _, c := range checks {
		f := soak.Flat(series[c.name])
		peak, floor := f.PeakLimit(c.b.peakAbs, c.b.rel), f.FloorLimit(c.b.floorAbs, c.b.rel)
		t.Logf("soak: %s over %d samples after warm-up: %v (limits: peak %.0f, floor %.0f)",
			c.what, n, f.Scaled(c.scale), peak/c.scale, floor/c.scale)
		if f.LastMax > peak || f.LastMin > floor {
			t.Errorf("soak: %s grew from the first half of the run to the second: %v, limits peak %.0f floor %.0f (a leak?)",
				c.what, f.Scaled(c.scale), peak/c.scale, floor/c.scale)
		}
	}
}

// soakFigures logs what the soak did, for docs/reliability.md.
func soakFigures(t *testing.T, run *soakRun, reloadTimes []time.Duration, good, bad int) {
	t.Helper()
	last := run.prev.s
	byOutcome := last.SumBy("chimeraforge_requests_total", "outcome", nil)
	byReason := last.SumBy("chimeraforge_request_errors_total", "reason", nil)
	var reasons []string
	for r, n := range byReason {
		if n > 0 {
			reasons = append(reasons, fmt.Sprintf("%s %.0f", r, n))
		}
	}
	slices.Sort(reasons)
	gaps := last.Sum("chimeraforge_inter_token_latency_seconds", nil)
	stalls := gaps - last.BucketCount("chimeraforge_inter_token_latency_seconds", soakStallBucket, nil)
	var maxReload time.Duration
	for _, r := range reloadTimes {
		maxReload = max(maxReload, r)
	}
	t.Logf("soak: %d samples; %d reloads (%d invalid, refused), longest SIGHUP-to-logged %v; slowest scrape %v; histogram resets %d",
		len(run.figures), good+bad, bad, maxReload.Round(time.Millisecond), run.slowest.Round(time.Millisecond), run.histResets)
	t.Logf("soak: requests: success %.0f, error %.0f, canceled %.0f (series of the toggled agent, deleted at each removal, not included)",
		byOutcome["success"], byOutcome["error"], byOutcome["canceled"])
	t.Logf("soak: errors by reason: %s", strings.Join(reasons, ", "))
	t.Logf("soak: stalls seen (inter-token gaps over %vs): %.0f; workflow runs: %v; dropped arrivals: %.0f; generated tokens: %.0f",
		soakStallBucket, stalls, last.SumBy("chimeraforge_agent_runs_total", "outcome", nil),
		last.Sum("chimeraforge_arrivals_dropped_total", nil), last.Sum("chimeraforge_generated_tokens_total", nil))
	if byReason[string(observe.ReasonHTTP5xx)] == 0 || byReason[string(observe.ReasonStreamBroken)] == 0 ||
		byReason[string(observe.ReasonConnect)] == 0 || stalls == 0 {
		t.Errorf("soak: the faults did not all show: errors by reason %v, stalls %v", byReason, stalls)
	}
}
