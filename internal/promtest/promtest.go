// Package promtest runs a real Prometheus for tests: it scrapes the targets
// a test names, optionally evaluates rules, and answers PromQL, so a test
// can prove that queries over Chimeraforge's exported series give the
// expected figures.
//
// The binary is Debian's prometheus package (2.42; `apt-get install -y
// prometheus`, which scripts/test.sh runs). Without it the tests that need
// it skip with a message naming the package; with CF_TEST_REQUIRE_TOOLS set
// (scripts/test.sh) they fail instead, so a broken install step is not
// hidden by a skip.
package promtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chimeraforge/chimeraforge/internal/testtool"
	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// Binary is the name looked up on PATH; Debian's prometheus package
// installs it as /usr/bin/prometheus.
const Binary = "prometheus"

// Job is the scrape job every target is listed under: the series scraped
// carry job="promtest" and instance="host:port" as given to Start.
const Job = "promtest"

// Bounds on the process's life. They are generous for a 2-core machine
// running a test suite beside Prometheus.
const (
	readyLimit = 30 * time.Second // start to /-/ready answering 200
	termLimit  = 10 * time.Second // SIGTERM to exit, then SIGKILL
	killLimit  = 5 * time.Second  // SIGKILL to exit
	queryLimit = 30 * time.Second // one API call
	startTries = 3                // a free port can be taken before Prometheus binds it
)

// Server is one Prometheus process on 127.0.0.1, stopped when the test
// that started it ends.
type Server struct {
	addr     string
	dir      string
	interval time.Duration
	targets  []string
	classic  bool
	started  time.Time
	cmd      *exec.Cmd
	exited   chan struct{}
	tr       *http.Transport
	api      v1.API
}

// Start runs a Prometheus on a free 127.0.0.1 port with a temporary
// --storage.tsdb.path, scraping every target (host:port, http, path
// /metrics) every interval, with native histograms enabled. It returns once
// /-/ready answers, and stops the process (SIGTERM, then SIGKILL) when the
// test ends. A target may be started before or after Prometheus: until it
// answers, its scrapes fail and up is 0 (see WaitScraped).
//
// Ready is not scraping: Prometheus 2.42 hands static targets to its scrape
// manager through 5-second throttles, so the first scrape comes about 5s
// after Start returns. Call WaitScraped before querying scraped series.
//
// Without the prometheus binary on PATH the test is skipped, or fails when
// CF_TEST_REQUIRE_TOOLS is set.
func Start(t testing.TB, interval time.Duration, targets ...string) *Server {
	t.Helper()
	return startWith(t, Binary, Options{Interval: interval, Targets: targets})
}

// Options say how StartOptions runs Prometheus.
type Options struct {
	Interval time.Duration // scrape and rule evaluation interval
	Rules    string        // rule file contents; empty for none
	Targets  []string      // host:port of each target
	// ClassicHistograms runs Prometheus without the native-histograms
	// feature, as Prometheus runs by default: it then ingests the classic
	// _bucket/_sum/_count series only. Otherwise it ingests the native
	// histograms and drops the classic series of the same histograms.
	ClassicHistograms bool
}

// StartOptions is Start with every option.
func StartOptions(t testing.TB, o Options) *Server {
	t.Helper()
	return startWith(t, Binary, o)
}

// StartWithRules is Start with a rule file holding rulesYAML (recording and
// alerting rule groups, as in Prometheus's rule_files), evaluated every
// interval. An invalid rule file makes Prometheus exit at start, which fails
// the test with its log.
func StartWithRules(t testing.TB, interval time.Duration, rulesYAML string, targets ...string) *Server {
	t.Helper()
	if strings.TrimSpace(rulesYAML) == "" {
		t.Fatal("promtest: StartWithRules with empty rules; use Start")
	}
	return startWith(t, Binary, Options{Interval: interval, Rules: rulesYAML, Targets: targets})
}

// missingMessage is what a test without the binary is skipped (or failed)
// with.
func missingMessage(bin string, err error) string {
	return fmt.Sprintf("promtest: Prometheus binary %q not found (%v); "+
		"install Debian's prometheus package: `apt-get install -y prometheus` (scripts/test.sh does)", bin, err)
}

// startWith is Start with the binary named, so a test can point it at a
// missing path.
func startWith(t testing.TB, bin string, o Options) *Server {
	t.Helper()
	interval := o.Interval
	path, err := exec.LookPath(bin)
	if err != nil {
		msg := missingMessage(bin, err)
		testtool.Missing(t, msg)
	}
	if interval < time.Millisecond || interval%time.Millisecond != 0 {
		t.Fatalf("promtest: interval %v: want a whole number of milliseconds, at least 1ms", interval)
	}
	s := &Server{
		dir:      t.TempDir(),
		interval: interval,
		targets:  append([]string(nil), o.Targets...),
		classic:  o.ClassicHistograms,
		tr:       &http.Transport{},
	}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(func() { s.stop(t) })
	if err := s.writeConfig(o.Rules); err != nil {
		t.Fatalf("promtest: %v", err)
	}
	for try := 1; ; try++ {
		err := s.run(path)
		if err == nil {
			break
		}
		if !errors.Is(err, errExited) || try == startTries {
			t.Fatalf("promtest: %v; log:\n%s", err, s.Log())
		}
		// Most likely the port was taken between picking and binding it.
	}
	return s
}

var errExited = errors.New("prometheus exited before it was ready")

// run starts the process on a fresh port and waits until it is ready.
func (s *Server) run(path string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	client, err := api.NewClient(api.Config{Address: s.URL(), RoundTripper: s.tr})
	if err != nil {
		return fmt.Errorf("api client for %s: %w", s.URL(), err)
	}
	s.api = v1.NewAPI(client)

	log, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	args := []string{
		"--config.file=" + filepath.Join(s.dir, "prometheus.yml"),
		"--storage.tsdb.path=" + filepath.Join(s.dir, "data"),
		"--storage.tsdb.retention.time=1h",
		"--web.listen-address=" + s.addr,
		"--log.level=warn",
	}
	if !s.classic {
		args = append(args, "--enable-feature=native-histograms")
	}
	cmd := exec.Command(path, args...) //nolint:noctx // lives until the test's cleanup, not a context
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr()
	s.started = time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", path, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited

	ctx, cancel := context.WithTimeout(context.Background(), readyLimit)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.ready(ctx) {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%w (%v) on %s", errExited, cmd.ProcessState, s.addr)
		case <-ctx.Done():
			return fmt.Errorf("prometheus on %s not ready within %v", s.addr, readyLimit)
		case <-tick.C:
		}
	}
}

func (s *Server) ready(ctx context.Context) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL()+"/-/ready", nil)
	if err != nil {
		return false
	}
	resp, err := s.tr.RoundTrip(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// stop sends SIGTERM, waits, then SIGKILL; it logs Prometheus's output
// when the test failed.
func (s *Server) stop(t testing.TB) {
	defer s.tr.CloseIdleConnections()
	if s.cmd == nil {
		return
	}
	if log := s.Log(); t.Failed() && log != "" {
		t.Logf("promtest: prometheus log (%s):\n%s", s.addr, tail(log, 8<<10))
	}
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return
	case <-time.After(termLimit):
	}
	_ = s.cmd.Process.Kill()
	select {
	case <-s.exited:
		t.Errorf("promtest: prometheus (pid %d) ignored SIGTERM for %v; killed", s.cmd.Process.Pid, termLimit)
	case <-time.After(killLimit):
		t.Errorf("promtest: prometheus (pid %d) did not exit within %v of SIGKILL", s.cmd.Process.Pid, killLimit)
	}
}

// URL is the server's base URL, http://127.0.0.1:PORT.
func (s *Server) URL() string { return "http://" + s.addr }

// Log returns what Prometheus printed so far (warnings and errors only), for
// failure messages.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

func (s *Server) logPath() string { return filepath.Join(s.dir, "prometheus.log") }

// config is the part of Prometheus's configuration file promtest writes.
type config struct {
	Global struct {
		ScrapeInterval     string `yaml:"scrape_interval"`
		ScrapeTimeout      string `yaml:"scrape_timeout"`
		EvaluationInterval string `yaml:"evaluation_interval"`
	} `yaml:"global"`
	RuleFiles     []string       `yaml:"rule_files,omitempty"`
	ScrapeConfigs []scrapeConfig `yaml:"scrape_configs,omitempty"`
}

type scrapeConfig struct {
	JobName       string         `yaml:"job_name"`
	StaticConfigs []staticConfig `yaml:"static_configs"`
}

type staticConfig struct {
	Targets []string `yaml:"targets"`
}

// writeConfig writes prometheus.yml and, with rules, rules.yml into the
// temporary directory.
func (s *Server) writeConfig(rulesYAML string) error {
	var c config
	iv := model.Duration(s.interval).String()
	// The timeout equals the interval: it may not exceed it, and a target
	// that is not serving yet then costs one failed scrape per interval.
	c.Global.ScrapeInterval, c.Global.ScrapeTimeout, c.Global.EvaluationInterval = iv, iv, iv
	if rulesYAML != "" {
		rules := filepath.Join(s.dir, "rules.yml")
		if err := os.WriteFile(rules, []byte(rulesYAML), 0o600); err != nil {
			return fmt.Errorf("write rules: %w", err)
		}
		c.RuleFiles = []string{rules}
	}
	if len(s.targets) > 0 {
		c.ScrapeConfigs = []scrapeConfig{{JobName: Job, StaticConfigs: []staticConfig{{Targets: s.targets}}}}
	}
	b, err := yaml.Marshal(&c)
	if err != nil {
		return fmt.Errorf("marshal config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "prometheus.yml"), b, 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
