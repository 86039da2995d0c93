package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// fakeOllama is the smallest Ollama the daemon starts against: it answers
// the version and state probes and streams a one-token answer, and notes
// when the first chat request arrives.
type fakeOllama struct {
	srv   *http.Server
	url   string
	chats atomic.Int64

	mu    sync.Mutex
	first time.Time
	seen  chan struct{} // closed at the first chat request
}

func startFakeOllama() (*fakeOllama, error) {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fake Ollama: %w", err)
	}
	f := &fakeOllama{url: "http://" + l.Addr().String(), seen: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/version", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"version":"0.17.4"}`)
	})
	mux.HandleFunc("GET /api/ps", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"models":[]}`)
	})
	mux.HandleFunc("POST /api/chat", func(w http.ResponseWriter, _ *http.Request) {
		now := time.Now()
		if f.chats.Add(1) == 1 {
			f.mu.Lock()
			f.first = now
			f.mu.Unlock()
			close(f.seen)
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		_, _ = io.WriteString(w, `{"model":"sim-tiny","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":"hi"},"done":false}`+"\n")
		_, _ = io.WriteString(w, `{"model":"sim-tiny","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","eval_count":1}`+"\n")
	})
	f.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = f.srv.Serve(l) }()
	return f, nil
}

func (f *fakeOllama) firstChat() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.first
}

func (f *fakeOllama) close() { _ = f.srv.Close() }

// startupRun is one start of the daemon.
type startupRun struct {
	FirstRequest time.Duration // process start to the first chat request arriving
	Ready        time.Duration // process start to /readyz answering 200
}

// measureStartup starts the daemon runs times against a fresh fake Ollama
// with a closed-loop agent and no calibration: its first request goes out
// as soon as the daemon can send it.
func (r *runner) measureStartup(ctx context.Context, runs int) ([]startupRun, error) {
	var out []startupRun
	for range runs {
		f, err := startFakeOllama()
		if err != nil {
			return nil, err
		}
		run, err := r.startupOnce(ctx, f)
		f.close()
		if err != nil {
			return nil, err
		}
		out = append(out, run)
	}
	return out, nil
}

func (r *runner) startupOnce(ctx context.Context, f *fakeOllama) (startupRun, error) {
	var run startupRun
	cfg := filepath.Join(r.dir, "startup.yaml")
	if err := os.WriteFile(cfg, []byte(daemonConfig(f.url, 1, 1, 0)), 0o600); err != nil {
		return run, fmt.Errorf("write the startup config: %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return run, err
	}
	p, err := startProc("daemon", r.bin, "run", "--config="+cfg, "--web.listen-address="+addr, "--log.level=warn")
	if err != nil {
		return run, err
	}
	defer func() { _ = p.stop(10 * time.Second) }()
	// Poll /readyz every millisecond; the first 200 ends the wait.
	readyURL := "http://" + addr + "/readyz"
	hc := &http.Client{Timeout: time.Second}
	deadline := p.start.Add(30 * time.Second)
	for run.Ready == 0 {
		if time.Now().After(deadline) {
			return run, fmt.Errorf("startup: daemon not ready within 30 s: %s", p.stderr)
		}
		if err := ctx.Err(); err != nil {
			return run, err
		}
		resp, err := hc.Get(readyURL) //nolint:noctx // loopback, bounded by the deadline
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				run.Ready = time.Since(p.start)
				break
			}
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-f.seen:
	case <-time.After(30 * time.Second):
		return run, fmt.Errorf("startup: no chat request within 30 s: %s", p.stderr)
	}
	run.FirstRequest = f.firstChat().Sub(p.start)
	return run, nil
}

// idleConfig runs an open-loop workload of one arrival a day: the daemon
// is configured, probes its target, and sends nothing.
func idleConfig(url string) string {
	return fmt.Sprintf(`targets:
  - name: ollama
    url: %s
agents:
  - name: idle
    target: ollama
    model: sim-tiny
    workflow:
      - name: answer
        prompt: Count to ten.
workloads:
  - name: idle
    agents:
      - agent: idle
    arrival:
      mode: constant
      rate: 0.0000115741
      max_in_flight: 1
    calibration:
      at_start: false
      on_version_change: false
`, url)
}

// memoryAfter runs the daemon with config (none: the built-in demo) for d
// and reads its memory at the end.
func (r *runner) memoryAfter(ctx context.Context, config string, d time.Duration) (memory, error) {
	args := []string{"run", "--log.level=warn"}
	if config != "" {
		path := filepath.Join(r.dir, "memory.yaml")
		if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
			return memory{}, fmt.Errorf("write config: %w", err)
		}
		args = append(args, "--config="+path)
	}
	addr, err := freeAddr()
	if err != nil {
		return memory{}, err
	}
	p, err := startProc("daemon", r.bin, append(args, "--web.listen-address="+addr)...)
	if err != nil {
		return memory{}, err
	}
	defer func() { _ = p.stop(10 * time.Second) }()
	if err := sleepCtx(ctx, d); err != nil {
		return memory{}, err
	}
	if done, err := p.exited(); done {
		return memory{}, fmt.Errorf("daemon exited early: %w: %s", exitStatus(err), p.stderr)
	}
	return readMemory(p.pid())
}
