package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chimeraforge/chimeraforge/internal/soak"
)

// Reload and shutdown under load, on the daemon as a child process: what an
// operator's SIGHUP, SIGTERM and SIGINT do while requests are in flight.

// reloadLoadConfig is the configuration TestReloadUnderLoad starts with and
// then changes: workload main keeps agent steady and swaps agent leaving
// for agent arriving (so main restarts), workload open is left untouched,
// and workload extra is added. %s are main's third agent and the extra
// workload.
const reloadLoadConfig = `
global:
  shutdown_timeout: 3s
simulation:
  gpus:
    - {name: g, decode_rate: 400}
  instances:
    - {name: sim, gpu: g, num_parallel: 4, load_delay: 10ms, seed: 1}
targets:
  - {name: sim, url: "sim://sim", num_parallel: 4, poll_interval: 1s}
agents:
  - name: steady
    target: sim
    model: sim-tiny
    think_time: 20ms
    options: {num_predict: 16}
    workflow:
      - {name: ask, prompt: "Keep going, run {{.Run}}."}
  - name: leaving
    target: sim
    model: sim-tiny
    think_time: 20ms
    options: {num_predict: 16}
    workflow:
      - {name: ask, prompt: "Soon gone."}
  - name: arriving
    target: sim
    model: sim-tiny
    think_time: 20ms
    options: {num_predict: 16}
    workflow:
      - {name: ask, prompt: "Just here."}
  - name: open-agent
    target: sim
    model: sim-tiny
    options: {num_predict: 16}
    workflow:
      - {name: ask, prompt: "Arrival {{.Run}}."}
workloads:
  - name: main
    agents: [{agent: steady, replicas: 2}, {agent: %s}]
    calibration: {at_start: false}
  - name: open
    arrival: {mode: constant, rate: 8, max_in_flight: 3}
    agents: [{agent: open-agent}]
    calibration: {at_start: false}
%s`

const reloadExtraWorkload = `  - name: extra
    agents: [{agent: arriving}]
    calibration: {at_start: false}
`

// signalShutdownBound is how long a child may take from SIGTERM or SIGINT
// to exit: global.shutdown_timeout (3s in these configurations) for the
// workloads and simulators to stop, plus run.go's 5s for the HTTP server to
// finish the requests it is answering, plus 2s for the process to exit on
// a loaded 2-core machine under the race detector. The measured time is
// tens of milliseconds; the bound only says it does not hang.
const signalShutdownBound = 3*time.Second + 5*time.Second + 2*time.Second

// endpointWatch GETs one path of the daemon every interval until ended
// (and at most for limit), counting the answers that are not 200 and
// keeping the slowest.
type endpointWatch struct {
	stop, done chan struct{}

	mu        sync.Mutex
	ok, bad   int
	slowest   time.Duration
	lastError string
}

func watchEndpoint(d *soak.Daemon, path string, interval, limit time.Duration) *endpointWatch {
	w := &endpointWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		deadline := time.After(limit)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-deadline:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			start := time.Now()
			code, body, err := d.Get(ctx, path)
			took := time.Since(start)
			cancel()
			w.mu.Lock()
			w.slowest = max(w.slowest, took)
			if err == nil && code == http.StatusOK {
				w.ok++
			} else {
				w.bad++
				w.lastError = fmt.Sprintf("%d %q %v", code, soak.Tail(body, 200), err)
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// end stops the watch and returns what it saw.
func (w *endpointWatch) end() (ok, bad int, slowest time.Duration, lastError string) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ok, w.bad, w.slowest, w.lastError
}

// TestReloadUnderLoad sends SIGHUP with a changed configuration, then with
// an invalid one, during traffic: the process keeps serving, unchanged
// agents keep counting from where they were, a removed agent's series go,
// added ones come, an untouched workload is not restarted, and the reload
// metric says what happened.
func TestReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon as a child process (~20s); skipped with -short")
	}
	bin := soak.Build(t, ".")
	cfgFile := filepath.Join(t.TempDir(), "reload.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfgFile, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(fmt.Sprintf(reloadLoadConfig, "leaving", ""))
	d := soak.Start(t, bin, cfgFile)
	ctx := t.Context()
	scrape := func() *soak.Scrape {
		t.Helper()
		s, err := d.Scrape(ctx)
		if err != nil {
			t.Fatalf("scrape: %v (daemon %s)", err, d.ExitState())
		}
		return s
	}
	requests := func(s *soak.Scrape, agent string) float64 {
		return s.Sum("chimeraforge_requests_total", map[string]string{"agent": agent})
	}
	eventuallyDaemon(t, d, 20*time.Second, "requests of steady, leaving and open-agent", func() bool {
		s := scrape()
		return requests(s, "steady") > 0 && requests(s, "leaving") > 0 && requests(s, "open-agent") > 0
	})

	health := watchEndpoint(d, "/healthz", 20*time.Millisecond, time.Minute)
	scrapes := watchEndpoint(d, "/metrics", 100*time.Millisecond, time.Minute)
	reload := func(want string, n int) time.Duration {
		t.Helper()
		start := time.Now()
		if err := d.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := start.Add(20 * time.Second)
		for d.Log.Count(want) < n {
			if !d.Running() || time.Now().After(deadline) {
				t.Fatalf("no %s within 20s of SIGHUP (daemon %s)", want, d.ExitState())
			}
			time.Sleep(5 * time.Millisecond)
		}
		return time.Since(start)
	}

	// A changed configuration, during traffic.
	before := scrape()
	write(fmt.Sprintf(reloadLoadConfig, "arriving", reloadExtraWorkload))
	took := reload(`"msg":"configuration reloaded"`, 1)
	after := scrape()
	t.Logf("SIGHUP to \"configuration reloaded\" logged: %v; scrape right after took %v", took.Round(time.Millisecond), after.Took.Round(time.Millisecond))
	for _, r := range soak.Regressions(before, after) {
		t.Errorf("across the reload a counter went down: %v", r)
	}
	if v, _ := after.Get("chimeraforge_config_last_reload_successful"); v != 1 {
		t.Errorf("chimeraforge_config_last_reload_successful = %v after a good reload, want 1", v)
	}
	t0, _ := before.Get("chimeraforge_config_last_reload_success_timestamp_seconds")
	if t1, _ := after.Get("chimeraforge_config_last_reload_success_timestamp_seconds"); t1 <= t0 {
		t.Errorf("chimeraforge_config_last_reload_success_timestamp_seconds went from %v to %v, want later", t0, t1)
	}
	for k := range after.Series() {
		if strings.Contains(k, `agent="leaving"`) {
			t.Errorf("series of the removed agent leaving still exported: %s", k)
		}
	}
	for _, sel := range []map[string]string{{"workload": "main", "agent": "arriving"}, {"workload": "extra", "agent": "arriving"}} {
		if n := after.Count("chimeraforge_requests_total", sel); n != 3 {
			t.Errorf("added agent %v: %d chimeraforge_requests_total series right after the reload, want 3 (one per outcome, at 0 or more)", sel, n)
		}
	}
	// The untouched workload did not restart: nothing of it was canceled,
	// and it started once.
	canceledOpen := func(s *soak.Scrape) float64 {
		return s.Sum("chimeraforge_requests_total", map[string]string{"workload": "open", "outcome": "canceled"})
	}
	if a, b := canceledOpen(before), canceledOpen(after); b != a {
		t.Errorf("untouched workload open: %v requests canceled by the reload, want 0", b-a)
	}
	if n := d.Log.Count(`"msg":"workload starting","workload":"open"`); n != 1 {
		t.Errorf("untouched workload open started %d times, want once", n)
	}
	// Counters of unchanged agents go on from where they were.
	eventuallyDaemon(t, d, 20*time.Second, "traffic of every agent after the reload", func() bool {
		s := scrape()
		return requests(s, "steady") > requests(after, "steady") && requests(s, "open-agent") > requests(after, "open-agent") &&
			s.Sum("chimeraforge_requests_total", map[string]string{"workload": "main", "agent": "arriving"}) > 0 &&
			s.Sum("chimeraforge_requests_total", map[string]string{"workload": "extra", "agent": "arriving"}) > 0
	})
	t.Logf("steady: %v requests before the reload, %v right after; open-agent: %v, %v",
		requests(before, "steady"), requests(after, "steady"), requests(before, "open-agent"), requests(after, "open-agent"))

	// An invalid configuration: refused, the running one goes on.
	good := scrape()
	write("targets: [{name: sim, urll: nowhere}]\n")
	took = reload(`"msg":"reload failed; the previous configuration keeps running"`, 1)
	bad := scrape()
	t.Logf("SIGHUP with an invalid configuration to the failure logged: %v", took.Round(time.Millisecond))
	if v, _ := bad.Get("chimeraforge_config_last_reload_successful"); v != 0 {
		t.Errorf("chimeraforge_config_last_reload_successful = %v after an invalid configuration, want 0", v)
	}
	for _, r := range soak.Regressions(good, bad) {
		t.Errorf("across the failed reload a counter went down: %v", r)
	}
	if _, removed := soak.Diff(good.Series(), bad.Series()); len(removed) > 0 {
		t.Errorf("the failed reload removed series: %v", removed)
	}
	eventuallyDaemon(t, d, 20*time.Second, "traffic after the failed reload", func() bool {
		s := scrape()
		return requests(s, "steady") > requests(bad, "steady") && requests(s, "open-agent") > requests(bad, "open-agent")
	})
	if !strings.Contains(d.Log.String(), "targets[0].urll") {
		t.Error("the log does not name the invalid key targets[0].urll")
	}

	for _, w := range []struct {
		path string
		w    *endpointWatch
	}{{"/healthz", health}, {"/metrics", scrapes}} {
		ok, failed, slowest, last := w.w.end()
		t.Logf("%s during the reloads: %d answers 200, %d not, slowest %v", w.path, ok, failed, slowest.Round(time.Millisecond))
		if failed > 0 || ok == 0 {
			t.Errorf("%s during the reloads: %d not 200 (last: %s), %d 200; want all 200", w.path, failed, last, ok)
		}
	}
	if !d.Running() {
		t.Fatalf("daemon exited during the reloads: %s", d.ExitState())
	}
	stopAndCheck(t, d, syscall.SIGTERM)
}

// stopAndCheck sends sig and checks that the child exits 0 within
// signalShutdownBound, logging how long it took.
func stopAndCheck(t *testing.T, d *soak.Daemon, sig syscall.Signal) time.Duration {
	t.Helper()
	sent := time.Now()
	if err := d.Signal(sig); err != nil {
		t.Fatal(err)
	}
	code, at, ok := d.Wait(signalShutdownBound)
	if !ok {
		t.Fatalf("%v: daemon still running after %v", sig, signalShutdownBound)
	}
	took := at.Sub(sent)
	t.Logf("%v to exit: %v, exit code %d", sig, took.Round(time.Millisecond), code)
	if code != 0 {
		t.Errorf("%v: exit code %d, want 0", sig, code)
	}
	if strings.Contains(d.Log.String(), "DATA RACE") {
		t.Error("the daemon's log reports a data race")
	}
	return took
}

// slowStreamsConfig keeps long streams in flight: the simulated GPU decodes
// 5 tokens a second and each answer is 2000 tokens (400 s), so every request
// that has started is mid-stream when the signal comes. Three closed-loop
// replicas and an open-loop workload capped at two runs in flight: five
// requests in flight, steadily.
const slowStreamsConfig = `
global:
  shutdown_timeout: 3s # slowShutdownTimeout
simulation:
  gpus:
    - {name: slow, decode_rate: 5, concurrency_gain: 1}
  instances:
    - {name: slow, gpu: slow, num_parallel: 8, load_delay: 10ms, seed: 1}
targets:
  - {name: slow, url: "sim://slow", num_parallel: 8, poll_interval: 1s}
agents:
  - name: talker
    target: slow
    model: sim-tiny
    options: {num_predict: 2000}
    workflow:
      - {name: ask, prompt: "Tell me everything."}
  - name: opener
    target: slow
    model: sim-tiny
    api: generate
    options: {num_predict: 2000}
    workflow:
      - {name: ask, prompt: "And you too."}
workloads:
  - name: closed
    agents: [{agent: talker, replicas: 3}]
    calibration: {at_start: false}
  - name: open
    arrival: {mode: constant, rate: 4, max_in_flight: 2}
    agents: [{agent: opener}]
    calibration: {at_start: false}
`

// slowStreamsInFlight is what slowStreamsConfig keeps in flight, and
// slowShutdownTimeout its global.shutdown_timeout.
const (
	slowStreamsInFlight = 5
	slowShutdownTimeout = 3 * time.Second
)

// simStartedLine is the daemon's log line for each embedded simulator.
var simStartedLine = regexp.MustCompile(`"msg":"simulator started","simulator":"([^"]+)","address":"(127\.0\.0\.1:\d+)"`)

// simAddress finds the loopback address of embedded simulator name in the
// daemon's log.
func simAddress(t *testing.T, d *soak.Daemon, name string) string {
	t.Helper()
	for _, m := range simStartedLine.FindAllStringSubmatch(d.Log.String(), -1) {
		if m[1] == name {
			return m[2]
		}
	}
	t.Fatalf("no \"simulator started\" line for %s in the log", name)
	return ""
}

// holdSimulator opens a long stream straight from the simulator at addr,
// as a client outside the daemon would, and reads it in the background
// until the simulator closes it. The daemon stops its simulators
// gracefully within global.shutdown_timeout, so this client keeps the
// daemon draining, its HTTP server still up, for that long: the window in
// which the test scrapes the exposition as the process leaves it.
func holdSimulator(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr := &http.Transport{}
	body := `{"model": "sim-tiny", "prompt": "Hold on.", "options": {"num_predict": 2000}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/api/generate", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("stream from the simulator: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream from the simulator: status %d", resp.StatusCode)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(io.Discard, resp.Body) // until the simulator closes it
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-done
		tr.CloseIdleConnections()
	})
}

// TestShutdownUnderLoad signals a daemon with five long streams in flight:
// it must exit 0 within signalShutdownBound, having counted every request
// in flight as canceled (none as an error), and a second signal during the
// drain must not cut it short. Docs: docs/reliability.md, "Reload and
// shutdown under load".
func TestShutdownUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon as a child process (~20s); skipped with -short")
	}
	bin := soak.Build(t, ".")
	for _, c := range []struct {
		name string
		sig  syscall.Signal
		// hold: a client of the simulator holds the drain open for
		// global.shutdown_timeout, and the test scrapes during it.
		hold bool
		// twice: a second signal during that drain.
		twice bool
	}{
		{"SIGTERM", syscall.SIGTERM, false, false},
		{"SIGINT", syscall.SIGINT, false, false},
		{"SIGTERM held drain", syscall.SIGTERM, true, false},
		{"SIGTERM twice", syscall.SIGTERM, true, true},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			cfgFile := filepath.Join(t.TempDir(), "slow.yaml")
			if err := os.WriteFile(cfgFile, []byte(slowStreamsConfig), 0o600); err != nil {
				t.Fatal(err)
			}
			d := soak.Start(t, bin, cfgFile)
			ctx := t.Context()
			var before *soak.Scrape
			eventuallyDaemon(t, d, 20*time.Second, fmt.Sprintf("%d requests in flight, mid-stream", slowStreamsInFlight), func() bool {
				s, err := d.Scrape(ctx)
				if err != nil {
					return false
				}
				before = s
				// Mid-stream: the streams in flight have had token gaps.
				return s.Sum("chimeraforge_requests_in_flight", nil) == slowStreamsInFlight &&
					s.Sum("chimeraforge_inter_token_latency_seconds", nil) >= 2*slowStreamsInFlight
			})
			if c.hold {
				holdSimulator(t, simAddress(t, d, "slow"))
			}

			sent := time.Now()
			if err := d.Signal(c.sig); err != nil {
				t.Fatal(err)
			}
			var last *soak.Scrape
			if c.hold {
				// The workloads have stopped and every canceled request
				// is accounted; the simulators are still closing.
				eventuallyDaemon(t, d, signalShutdownBound, "the workloads to stop", func() bool {
					return d.Log.Count(`"msg":"workloads stopped"`) > 0
				})
				if c.twice {
					if err := d.Signal(c.sig); err != nil {
						t.Errorf("second %v: %v", c.sig, err)
					}
					t.Logf("second %v sent %v after the first, while the simulators drain", c.sig, time.Since(sent).Round(time.Millisecond))
				}
				// This scrape waits for the simulators to close: the
				// simulated GPU's collector reads the daemon's state under
				// the lock that the shutdown holds.
				var err error
				if last, err = d.Scrape(ctx); err != nil {
					t.Errorf("scrape during the drain: %v", err)
				} else {
					t.Logf("the scrape during the drain took %v", last.Took.Round(time.Millisecond))
				}
			}
			code, at, ok := d.Wait(signalShutdownBound)
			if !ok {
				t.Fatalf("%s: daemon still running after %v", c.name, signalShutdownBound)
			}
			took := at.Sub(sent)
			t.Logf("%s to exit: %v, exit code %d (bound %v)", c.name, took.Round(time.Millisecond), code, signalShutdownBound)
			if code != 0 {
				t.Errorf("%s: exit code %d, want 0", c.name, code)
			}
			if c.twice && took < slowShutdownTimeout {
				// A second signal does not cut the drain short: the
				// daemon keeps waiting up to global.shutdown_timeout.
				t.Errorf("%s: exited after %v, before the simulator's client was cut off at global.shutdown_timeout %v", c.name, took, slowShutdownTimeout)
			}
			log := d.Log.String()
			for _, want := range []string{`"msg":"stopping: canceling in-flight requests"`, `"msg":"chimeraforge stopped"`} {
				if n := strings.Count(log, want); n != 1 {
					t.Errorf("%s: the log has %s %d times, want once", c.name, want, n)
				}
			}
			if strings.Contains(log, "DATA RACE") {
				t.Error("the daemon's log reports a data race")
			}
			if last == nil {
				return
			}
			// Every request in flight was canceled and counted so, none as
			// an error, and nothing is left in flight.
			outcome := func(s *soak.Scrape, o string) float64 {
				return s.Sum("chimeraforge_requests_total", map[string]string{"outcome": o})
			}
			canceled := outcome(last, "canceled") - outcome(before, "canceled")
			inFlight := last.Sum("chimeraforge_requests_in_flight", nil)
			t.Logf("%s: the scrape during the drain: %v requests canceled, %v in flight, %v new errors (before the signal: %d in flight)",
				c.name, canceled, inFlight, outcome(last, "error")-outcome(before, "error"), slowStreamsInFlight)
			if canceled != slowStreamsInFlight || inFlight != 0 {
				t.Errorf("%s: %v requests canceled and %v in flight during the drain, want the %d in flight canceled",
					c.name, canceled, inFlight, slowStreamsInFlight)
			}
			if e := outcome(last, "error") - outcome(before, "error"); e != 0 {
				t.Errorf("%s: %v requests counted as errors at shutdown, want 0 (canceled)", c.name, e)
			}
			canceledReason := map[string]string{"reason": "canceled"}
			if n := last.Sum("chimeraforge_request_errors_total", canceledReason) - before.Sum("chimeraforge_request_errors_total", canceledReason); n != slowStreamsInFlight {
				t.Errorf("%s: chimeraforge_request_errors_total{reason=canceled} grew by %v, want %d", c.name, n, slowStreamsInFlight)
			}
		})
	}
}

// openFIFO opens the named pipe path for writing once a reader has it
// open, polling at most limit: a non-blocking open without a reader fails
// (ENXIO) instead of waiting. The reader then waits in its read until the
// pipe is written and closed.
func openFIFO(t *testing.T, d *soak.Daemon, path string, limit time.Duration) *os.File {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err == nil {
			return f
		}
		if !d.Running() {
			t.Fatalf("daemon exited (%s) before it read %s; log:\n%s", d.ExitState(), path, d.Log.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("nobody opened %s for reading within %v: %v", path, limit, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writeClose(t *testing.T, f *os.File, s string) {
	t.Helper()
	if _, err := f.WriteString(s); err != nil {
		t.Fatalf("write %s: %v", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSignalHUPWhileStarting sends SIGHUP while the daemon is still
// reading its configuration: it must not die of it (SIGHUP's default
// action), and the reload runs once the daemon is up. The configuration
// holds a header secret read from a named pipe, so the daemon waits inside
// its configuration load, at a known point, until the test writes it.
func TestSignalHUPWhileStarting(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon as a child process; skipped with -short")
	}
	dir := t.TempDir()
	fifo := filepath.Join(dir, "token")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("no named pipes here: %v", err)
	}
	cfg := strings.Replace(fmt.Sprintf(reloadLoadConfig, "leaving", ""),
		`url: "sim://sim",`, fmt.Sprintf(`url: "sim://sim", headers: {X-Token: {file: %q}},`, fifo), 1)
	cfgFile := filepath.Join(dir, "hup.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := soak.Build(t, ".")
	d := soak.Spawn(t, bin, cfgFile)

	// The daemon reads the pipe: it is inside its first configuration
	// load, and stays there until the pipe is written. SIGHUP now, and
	// give the signal time to land.
	w := openFIFO(t, d, fifo, 30*time.Second)
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if !d.Running() {
		t.Fatalf("SIGHUP while reading the configuration killed the daemon: %s", d.ExitState())
	}
	writeClose(t, w, "token-1\n")
	d.WaitServing(t, 30*time.Second)

	// The SIGHUP was kept: once up, the daemon reloads, reading the pipe
	// again.
	writeClose(t, openFIFO(t, d, fifo, 30*time.Second), "token-2\n")
	eventuallyDaemon(t, d, 20*time.Second, "the reload asked for while starting", func() bool {
		return d.Log.Count(`"msg":"configuration reloaded"`) == 1
	})
	stopAndCheck(t, d, syscall.SIGTERM)
}
