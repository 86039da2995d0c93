package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chimeraforge/chimeraforge/internal/soak"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/exporter-toolkit/web"
	"go.uber.org/goleak"
)

// testClient keeps no idle connections, so that goleak sees only what the
// daemon itself leaves behind.
var testClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer collects a daemon's log and stdout for assertions.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is a daemon started in-process by startDaemon.
type running struct {
	app    *app
	base   string // http://127.0.0.1:PORT
	stop   context.CancelFunc
	done   chan error
	log    *syncBuffer
	stdout *syncBuffer
	file   string // the configuration file; "" for the built-in demo
}

// startDaemon runs `chimeraforge run` in-process on a loopback port, with
// cfgYAML written to a file (or the built-in demo when cfgYAML is "").
func startDaemon(t *testing.T, cfgYAML string, lifecycle bool) *running {
	t.Helper()
	return startDaemonWith(t, cfgYAML, lifecycle, "", "http://")
}

// startDaemonWith is startDaemon with a --web.config.file (none when
// webConfig is ""), served under scheme ("http://" or "https://").
func startDaemonWith(t *testing.T, cfgYAML string, lifecycle bool, webConfig, scheme string) *running {
	t.Helper()
	return startDaemonOpts(t, cfgYAML, lifecycle, webConfig, scheme, nil)
}

// startDaemonOpts is startDaemonWith with edit, when not nil, applied to
// the run options (the other flags) before the daemon starts.
func startDaemonOpts(t *testing.T, cfgYAML string, lifecycle bool, webConfig, scheme string, edit func(*runOptions)) *running {
	t.Helper()
	var file string
	if cfgYAML != "" {
		file = filepath.Join(t.TempDir(), "chimeraforge.yaml")
		if err := os.WriteFile(file, []byte(cfgYAML), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	noAddrs, noSocket := []string{}, false
	started := make(chan *app, 1)
	o := runOptions{
		configFile:      file,
		web:             &web.FlagConfig{WebListenAddresses: &noAddrs, WebConfigFile: &webConfig, WebSystemdSocket: &noSocket},
		enableLifecycle: lifecycle,
		logLevel:        "debug",
		logFormat:       "json",
		listeners:       []net.Listener{l},
		started:         func(a *app) { started <- a },
	}
	if edit != nil {
		edit(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{base: scheme + l.Addr().String(), stop: cancel, done: make(chan error, 1), log: &syncBuffer{}, stdout: &syncBuffer{}, file: file}
	go func() { r.done <- runMain(ctx, o, r.stdout, r.log) }()
	select {
	case r.app = <-started:
	case err := <-r.done:
		cancel()
		t.Fatalf("daemon did not start: %v\nlog:\n%s", err, r.log.String())
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("daemon did not start within 10s")
	}
	t.Cleanup(func() {
		r.stop()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("daemon exited with %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("daemon did not stop within 15s")
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", r.log.String())
		}
	})
	return r
}

func (r *running) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := testClient.Get(r.base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

func (r *running) post(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := testClient.Post(r.base+path, "text/plain", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrape fetches /metrics in the text format and parses it.
func (r *running) scrape(t *testing.T) metrics {
	t.Helper()
	code, body := r.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: status %d: %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return metrics(mfs)
}

// metrics is one parsed scrape.
type metrics map[string]*dto.MetricFamily

// sum adds the values of every series of family name whose labels include
// match (counters, gauges; histograms: their sample count).
func (m metrics) sum(name string, match map[string]string) float64 {
	mf, ok := m[name]
	if !ok {
		return 0
	}
	var total float64
	for _, s := range mf.GetMetric() {
		if !soak.HasLabels(s, match) {
			continue
		}
		switch {
		case s.Counter != nil:
			total += s.GetCounter().GetValue()
		case s.Gauge != nil:
			total += s.GetGauge().GetValue()
		case s.Histogram != nil:
			total += float64(s.GetHistogram().GetSampleCount())
		case s.Untyped != nil:
			total += s.GetUntyped().GetValue()
		}
	}
	return total
}

// histSum adds the sample sums of histogram family name over the series
// whose labels include match.
func histSum(m metrics, name string, match map[string]string) float64 {
	var total float64
	for _, s := range m[name].GetMetric() {
		if soak.HasLabels(s, match) && s.Histogram != nil {
			total += s.GetHistogram().GetSampleSum()
		}
	}
	return total
}

// series returns the label sets of family name.
func (m metrics) series(name string) []map[string]string {
	var out []map[string]string
	for _, s := range m[name].GetMetric() {
		ls := map[string]string{}
		for _, lp := range s.GetLabel() {
			ls[lp.GetName()] = lp.GetValue()
		}
		out = append(out, ls)
	}
	return out
}

// eventually polls cond every 100ms until it holds or limit passes.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
