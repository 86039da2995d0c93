// Package soak runs the chimeraforge daemon as a child process, as an
// operator would, and samples what it holds over time — goroutines, file
// descriptors, heap and resident memory from its /metrics and from /proc —
// together with the series it exports, so that soak, reload and shutdown
// tests can assert that nothing leaks, no counter goes backwards and the
// process exits when told to.
//
// Everything talks to 127.0.0.1 only.
package soak

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Bounds on the child's life outside what a test asserts.
const (
	buildLimit = 5 * time.Minute  // go build, cold cache, 2 cores, -race
	startLimit = 30 * time.Second // exec to the metrics URL printed
	killLimit  = 10 * time.Second // SIGKILL to exit, at cleanup
)

// Build compiles the main package pkg (a directory, e.g. "." for the
// package under test) into a temporary directory and returns the binary.
// When the test binary itself was built with -race, so is the daemon: a
// data race in the child then makes it exit 66 instead of 0.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("soak: go not on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "chimeraforge")
	args := []string{"build", "-o", bin}
	if RaceEnabled {
		args = append(args, "-race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildLimit)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, goBin, append(args, pkg)...).CombinedOutput()
	if err != nil {
		t.Fatalf("soak: go %s: %v\n%s", strings.Join(append(args, pkg), " "), err, out)
	}
	t.Logf("soak: built %s (race %v) in %v", pkg, RaceEnabled, time.Since(start).Round(time.Millisecond))
	return bin
}

// Buffer collects a child's output; safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Count returns how many times s occurs in what was written so far.
func (b *Buffer) Count(s string) int { return strings.Count(b.String(), s) }

// Daemon is one `chimeraforge run` child process.
type Daemon struct {
	// URL is the daemon's base URL, http://127.0.0.1:PORT.
	URL string
	// Log is the daemon's stderr (its log); Stdout its standard output.
	Log, Stdout *Buffer
	// Started is when the process was started.
	Started time.Time

	cmd    *exec.Cmd
	tr     *http.Transport
	client *http.Client
	exited chan struct{}
	exitAt time.Time
	err    error // from Wait, valid once exited is closed
}

// metricsLine is what `chimeraforge run` prints for each bound address.
var metricsLine = regexp.MustCompile(`chimeraforge: metrics at (http://127\.0\.0\.1:\d+)/metrics`)

// Start runs `bin run --config cfgFile` on a free loopback port, with JSON
// logs (at level debug unless extraArgs set --log.level), and waits until it prints its metrics URL. The child
// gets the environment without any CHIMERAFORGE_ variable (the daemon reads
// those as configuration), and the kernel kills it should the test binary
// die without cleaning up. When the test ends a child still running is
// killed, and its log is printed if the test failed.
func Start(t testing.TB, bin, cfgFile string, extraArgs ...string) *Daemon {
	t.Helper()
	d := Spawn(t, bin, cfgFile, extraArgs...)
	d.WaitServing(t, startLimit)
	return d
}

// Spawn is Start without the wait: it returns as soon as the process runs.
func Spawn(t testing.TB, bin, cfgFile string, extraArgs ...string) *Daemon {
	t.Helper()
	args := []string{"run", "--config", cfgFile, "--web.listen-address=127.0.0.1:0", "--log.format=json"}
	if !slices.ContainsFunc(extraArgs, func(a string) bool { return strings.HasPrefix(a, "--log.level") }) {
		args = append(args, "--log.level=debug")
	}
	args = append(args, extraArgs...)
	cmd := exec.Command(bin, args...) //nolint:noctx // lives until the test's cleanup, and is signalled by the test
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHIMERAFORGE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if RaceEnabled {
		// The race runtime sleeps a second before exiting, to let racing
		// goroutines report; that second is not the daemon's shutdown.
		cmd.Env = append(cmd.Env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	}
	d := &Daemon{Log: &Buffer{}, Stdout: &Buffer{}, cmd: cmd, exited: make(chan struct{}),
		tr: &http.Transport{MaxIdleConnsPerHost: 4}}
	d.client = &http.Client{Transport: d.tr, Timeout: 15 * time.Second}
	cmd.Stdout, cmd.Stderr = d.Stdout, d.Log
	cmd.SysProcAttr = sysProcAttr()
	d.Started = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("soak: start %s: %v", bin, err)
	}
	go func() {
		d.err = cmd.Wait()
		d.exitAt = time.Now()
		close(d.exited)
	}()
	t.Cleanup(func() { d.cleanup(t) })
	return d
}

// WaitServing waits at most limit for the child to print its metrics URL,
// and sets URL.
func (d *Daemon) WaitServing(t testing.TB, limit time.Duration) {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if m := metricsLine.FindStringSubmatch(d.Stdout.String()); m != nil {
			d.URL = m[1]
			return
		}
		select {
		case <-d.exited:
			t.Fatalf("soak: daemon exited before serving (%s); log:\n%s", d.ExitState(), d.Log.String())
		case <-deadline.C:
			t.Fatalf("soak: daemon printed no metrics URL within %v; log:\n%s", limit, d.Log.String())
		case <-tick.C:
		}
	}
}

func (d *Daemon) cleanup(t testing.TB) {
	defer d.tr.CloseIdleConnections()
	select {
	case <-d.exited:
	default:
		_ = d.cmd.Process.Kill()
		select {
		case <-d.exited:
		case <-time.After(killLimit):
			t.Errorf("soak: daemon (pid %d) did not exit within %v of SIGKILL", d.PID(), killLimit)
		}
	}
	if t.Failed() {
		t.Logf("soak: daemon log (last 16 KiB):\n%s", Tail(d.Log.String(), 16<<10))
	}
}

// PID is the child's process ID.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Signal sends sig to the child.
func (d *Daemon) Signal(sig os.Signal) error { return d.cmd.Process.Signal(sig) }

// Exited is closed once the child has exited.
func (d *Daemon) Exited() <-chan struct{} { return d.exited }

// Running reports whether the child has not exited yet.
func (d *Daemon) Running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// Wait waits at most limit for the child to exit. It returns the exit code
// (-1 when a signal killed it) and when it exited; ok is false when it was
// still running at the limit.
func (d *Daemon) Wait(limit time.Duration) (code int, at time.Time, ok bool) {
	select {
	case <-d.exited:
	case <-time.After(limit):
		return 0, time.Time{}, false
	}
	if d.err == nil {
		return 0, d.exitAt, true
	}
	var ee *exec.ExitError
	if errors.As(d.err, &ee) {
		return ee.ExitCode(), d.exitAt, true
	}
	return -1, d.exitAt, true
}

// ExitState describes how the child ended, for messages; "running" while
// it runs.
func (d *Daemon) ExitState() string {
	if d.Running() {
		return "running"
	}
	return d.cmd.ProcessState.String()
}

// Get fetches path from the daemon and returns the status and body.
func (d *Daemon) Get(ctx context.Context, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.URL+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", fmt.Errorf("read %s: %w", path, err)
	}
	return resp.StatusCode, string(b), nil
}

// Scrape fetches and parses /metrics.
func (d *Daemon) Scrape(ctx context.Context) (*Scrape, error) {
	at := time.Now()
	code, body, err := d.Get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("/metrics: status %d: %s", code, Tail(body, 512))
	}
	s, err := ParseScrape(body)
	if err != nil {
		return nil, err
	}
	s.At, s.Took = at, time.Since(at)
	return s, nil
}

// Tail returns the last n bytes of s, marked as cut when they are not all
// of it.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
