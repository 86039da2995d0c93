package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/chimeraforge/chimeraforge/exporters"
	"github.com/chimeraforge/chimeraforge/ollamasim"
)

// securityConfig is a small simulated load: something to serve metrics of.
const securityConfig = `
simulation:
  instances: [{name: sim, load_delay: 0s, jitter: 0}]
targets: [{name: sim, url: "sim://sim"}]
agents:
  - {name: a, target: sim, model: sim-tiny, options: {num_predict: 4}, think_time: 200ms, workflow: [{name: ask, prompt: hi}]}
workloads: [{name: w, agents: [{agent: a}], calibration: {at_start: false}}]
`

// startDaemonWeb is startDaemon with a --web.config.file and lifecycle
// endpoints; base is https:// when the file enables TLS.
func startDaemonWeb(t *testing.T, cfgYAML, webConfig string, https bool) *running {
	t.Helper()
	scheme := "http://"
	if https {
		scheme = "https://"
	}
	return startDaemonWith(t, cfgYAML, true, webConfig, scheme)
}

// selfSignedCert writes a self-signed ECDSA certificate for 127.0.0.1 and
// its key into dir and returns their paths and a pool trusting it.
func selfSignedCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "chimeraforge test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// randomSecret returns prefix and 16 random hex digits: a string that
// appears nowhere unless it leaked.
func randomSecret(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// do sends one request with c and returns the status and body.
func do(t *testing.T, c *http.Client, method, rawURL, user, password string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestSecurityTLSAndBasicAuth serves the daemon with --web.config.file
// enabling TLS (a self-signed certificate made here) and basic auth (a
// bcrypt hash). exporter-toolkit wraps the whole HTTP handler, so every
// endpoint asks for credentials: /metrics, /healthz, /readyz, the
// landing page and the lifecycle endpoints alike.
func TestSecurityTLSAndBasicAuth(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSignedCert(t, dir)
	password := randomSecret(t, "pw-")
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(webConfig, []byte(fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  alice: %q\n",
		certFile, keyFile, hash)), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startDaemonWeb(t, securityConfig, webConfig, true)
	if !strings.Contains(r.stdout.String(), "https or http, per --web.config.file") {
		t.Errorf("the start message does not say that TLS may be on: %q", r.stdout.String())
	}

	trusted := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	for _, path := range []string{"/metrics", "/healthz", "/readyz", "/"} {
		code, body, err := do(t, trusted, http.MethodGet, r.base+path, "", "")
		if err != nil || code != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: %d %v, want 401", path, code, err)
		}
		if strings.Contains(body, "chimeraforge_") {
			t.Errorf("GET %s without credentials served metrics", path)
		}
		if code, _, err := do(t, trusted, http.MethodGet, r.base+path, "alice", "wrong"); err != nil || code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong password: %d %v, want 401", path, code, err)
		}
		if code, _, err := do(t, trusted, http.MethodGet, r.base+path, "mallory", password); err != nil || code != http.StatusUnauthorized {
			t.Errorf("GET %s as an unknown user: %d %v, want 401", path, code, err)
		}
	}
	if code, _, err := do(t, trusted, http.MethodPost, r.base+"/-/reload", "", ""); err != nil || code != http.StatusUnauthorized {
		t.Errorf("POST /-/reload without credentials: %d %v, want 401", code, err)
	}
	eventually(t, 10*time.Second, "metrics over HTTPS with credentials", func() bool {
		code, body, err := do(t, trusted, http.MethodGet, r.base+"/metrics", "alice", password)
		return err == nil && code == http.StatusOK && strings.Contains(body, exporters.MetricGeneratedTokensTotal)
	})
	if code, body, err := do(t, trusted, http.MethodGet, r.base+"/healthz", "alice", password); err != nil || code != http.StatusOK {
		t.Errorf("GET /healthz with credentials: %d %q %v, want 200", code, body, err)
	}

	// Without the CA the certificate is refused; plain HTTP to the TLS
	// port gets Go's 400 and nothing else.
	untrusted := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if _, _, err := do(t, untrusted, http.MethodGet, r.base+"/metrics", "alice", password); err == nil {
		t.Error("an HTTPS request that does not trust the certificate succeeded")
	} else if ue := (*tls.CertificateVerificationError)(nil); !errors.As(err, &ue) {
		t.Errorf("untrusted certificate: %v, want a certificate verification error", err)
	}
	plain := "http://" + strings.TrimPrefix(r.base, "https://")
	code, body, err := do(t, untrusted, http.MethodGet, plain+"/metrics", "alice", password)
	if err == nil && (code == http.StatusOK || strings.Contains(body, "chimeraforge_")) {
		t.Errorf("plain HTTP to the TLS port: %d %q, want a refusal", code, body)
	}
	t.Logf("plain HTTP to the TLS port: status %d, err %v", code, err)

	// The container health check speaks TLS and basic auth too, and keeps
	// the password out of what it prints.
	hostPort := strings.TrimPrefix(r.base, "https://")
	if code, _, errOut := runCLI("health", "--insecure-skip-verify", "--url", "https://alice:"+password+"@"+hostPort+"/healthz"); code != 0 {
		t.Errorf("health with credentials: exit %d: %s", code, errOut)
	}
	code, out, errOut := runCLI("health", "--insecure-skip-verify", "--url", "https://alice:wrong-"+password+"@"+hostPort+"/healthz")
	if code != 1 || !strings.Contains(errOut, "401") {
		t.Errorf("health with a wrong password: exit %d, stderr %q; want 1 naming 401", code, errOut)
	}
	if strings.Contains(out+errOut, password) {
		t.Errorf("health printed the password: %q", out+errOut)
	}
	if strings.Contains(r.log.String(), password) {
		t.Error("the daemon logged the basic auth password")
	}
}

// TestSecurityNoDebugEndpoints: no pprof, expvar or other debug handler is
// served, and no flag enables one. Some dependencies register debug
// handlers on http.DefaultServeMux when imported (expvar, imported by
// client_golang, registers /debug/vars; golang.org/x/net/trace registers
// /debug/requests and /debug/events); the daemon serves its own mux, never
// the default one, so they stay unreachable.
func TestSecurityNoDebugEndpoints(t *testing.T) {
	r := startDaemon(t, securityConfig, true)
	paths := []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/goroutine?debug=2",
		"/debug/pprof/cmdline", "/debug/pprof/profile?seconds=1", "/debug/vars", "/debug/requests",
		"/debug/events", "/debug/", "/metrics/debug"}
	for _, path := range paths {
		if _, pattern := http.DefaultServeMux.Handler(httptest.NewRequest(http.MethodGet, path, nil)); pattern != "" {
			t.Logf("%s: an imported package registered %q on http.DefaultServeMux", path, pattern)
		}
		code, body := r.get(t, path)
		if code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404: %.200q", path, code, body)
		}
	}
}

// recordingTarget is a loopback Ollama look-alike that records the headers
// it receives and answers /api/chat and /api/generate with status.
type recordingTarget struct {
	srv    *httptest.Server
	status int

	mu      sync.Mutex
	headers []http.Header
	calls   int
}

func newRecordingTarget(t *testing.T, status int) *recordingTarget {
	t.Helper()
	rt := &recordingTarget{status: status}
	rt.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt.mu.Lock()
		rt.headers = append(rt.headers, r.Header.Clone())
		rt.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/version":
			_, _ = io.WriteString(w, `{"version":"0.17.4-sectest"}`)
		case "/api/ps":
			_, _ = io.WriteString(w, `{"models":[]}`)
		default:
			rt.mu.Lock()
			rt.calls++
			rt.mu.Unlock()
			w.WriteHeader(rt.status)
			_, _ = fmt.Fprintf(w, `{"error":"test answer %d"}`, rt.status)
		}
	}))
	t.Cleanup(rt.srv.Close)
	return rt
}

func (rt *recordingTarget) chatCalls() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.calls
}

// sawHeader reports whether some request carried header name = value.
func (rt *recordingTarget) sawHeader(name, value string) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, h := range rt.headers {
		if h.Get(name) == value {
			return true
		}
	}
	return false
}

// TestSecuritySecretsNeverAppear configures header secrets from a value,
// an environment variable and a file, checks that the targets receive
// them, makes requests fail (401, 500, connection refused) and a reload
// fail on a header, and then looks for the secrets everywhere the daemon
// and the CLI write: the debug log, the reload answer, /metrics, the other
// endpoints, `config show` and `config check`.
func TestSecuritySecretsNeverAppear(t *testing.T) {
	inline := randomSecret(t, "sec-inline-")
	fromEnv := randomSecret(t, "sec-env-")
	fromFile := randomSecret(t, "sec-file-")
	fromSet := randomSecret(t, "sec-set-")
	secrets := []string{inline, fromEnv, fromFile, fromSet}
	t.Setenv("CF_SECTEST_TOKEN", fromEnv)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "token")
	if err := os.WriteFile(secretFile, []byte(fromFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	unauthorized := newRecordingTarget(t, http.StatusUnauthorized)
	failing := newRecordingTarget(t, http.StatusInternalServerError)
	refusedAddr := closedPort(t)
	headers := fmt.Sprintf(`{X-Inline: %q, Authorization: {env: CF_SECTEST_TOKEN}, X-File: {file: %q}}`, inline, secretFile)
	cfg := func() string {
		return fmt.Sprintf(`
targets:
  - {name: unauthorized, url: %q, headers: %s}
  - {name: failing, url: %q, headers: %s, retry: {backoff_min: 50ms, backoff_max: 200ms}}
  - {name: refused, url: "http://%s", headers: %s, retry: {backoff_min: 50ms, backoff_max: 200ms}}
agents:
  - {name: a401, target: unauthorized, model: m, think_time: 50ms, workflow: [{name: ask, prompt: hi}]}
  - {name: a500, target: failing, model: m, think_time: 50ms, workflow: [{name: ask, prompt: hi}]}
  - {name: adown, target: refused, model: m, think_time: 50ms, workflow: [{name: ask, prompt: hi}]}
workloads:
  - {name: w, agents: [{agent: a401}, {agent: a500}, {agent: adown}], calibration: {at_start: false}}
`, unauthorized.srv.URL, headers, failing.srv.URL, headers, refusedAddr, headers)
	}
	r := startDaemon(t, cfg(), true)

	// The secrets are sent: the check below is about where else they go.
	eventually(t, 15*time.Second, "the targets to receive every secret header and answer with errors", func() bool {
		return unauthorized.chatCalls() > 0 && failing.chatCalls() > 0 &&
			unauthorized.sawHeader("X-Inline", inline) && unauthorized.sawHeader("Authorization", fromEnv) &&
			unauthorized.sawHeader("X-File", fromFile) && failing.sawHeader("Authorization", fromEnv)
	})
	eventually(t, 15*time.Second, "errors of each kind in /metrics", func() bool {
		m := r.scrape(t)
		return m.sum(exporters.MetricRequestErrorsTotal, map[string]string{"target": "unauthorized", "reason": "http_4xx"}) > 0 &&
			m.sum(exporters.MetricRequestErrorsTotal, map[string]string{"target": "failing", "reason": "http_5xx"}) > 0 &&
			m.sum(exporters.MetricRequestErrorsTotal, map[string]string{"target": "refused", "reason": "connect"}) > 0
	})

	// A reload that fails on a header: the answer names the key.
	bad := strings.Replace(cfg(), "X-Inline:", fmt.Sprintf(`X-Both: {value: %q, env: CF_SECTEST_TOKEN}, "Bad Header": %q, X-Unset: {env: CF_SECTEST_UNSET}, X-Inline:`, inline, inline), 1)
	if err := os.WriteFile(r.file, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	code, reloadBody := r.post(t, "/-/reload")
	if code != http.StatusInternalServerError || !strings.Contains(reloadBody, "targets[0].headers[X-Both]") ||
		!strings.Contains(reloadBody, "targets[0].headers[Bad Header]") || !strings.Contains(reloadBody, "CF_SECTEST_UNSET") {
		t.Errorf("reload of a broken header: %d %q, want 500 naming the keys and the variable", code, reloadBody)
	}

	badFile := filepath.Join(dir, "bad.yaml")
	goodFile := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(badFile, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goodFile, []byte(cfg()), 0o600); err != nil {
		t.Fatal(err)
	}
	showCode, show, showErr := runCLI("config", "show", goodFile, "--set", "targets.0.headers.X-Set="+fromSet)
	if showCode != 0 || strings.Count(show, "<secret>") < 4 || !strings.Contains(show, "env: CF_SECTEST_TOKEN") {
		t.Errorf("config show: exit %d, want the headers redacted:\n%s%s", showCode, show, showErr)
	}
	checkCode, checkOut, checkErr := runCLI("config", "check", badFile)
	if checkCode != 1 || !strings.Contains(checkErr, "headers[X-Both]") {
		t.Errorf("config check of the broken file: exit %d, stderr %q", checkCode, checkErr)
	}
	setCode, setOut, setErr := runCLI("config", "check", goodFile, "--set", "targets.7.headers.X-Set="+fromSet)
	if setCode != 1 || !strings.Contains(setErr, "override targets.7.headers.X-Set") {
		t.Errorf("config check with a --set that names no target: exit %d, stderr %q", setCode, setErr)
	}

	// The debug log must have seen the failures, or the check says little.
	logText := r.log.String()
	for _, want := range []string{`"level":"debug"`, "reload failed", "401 Unauthorized", "http_5xx", "connection refused"} {
		if !strings.Contains(logText, want) {
			t.Errorf("the debug log lacks %q: the leak check would prove little", want)
		}
	}
	outputs := map[string]string{
		"daemon log (debug, json)": logText,
		"daemon stdout":            r.stdout.String(),
		"/-/reload answer":         reloadBody,
		"config show":              show + showErr,
		"config check (bad file)":  checkOut + checkErr,
		"config check (bad --set)": setOut + setErr,
	}
	for _, path := range []string{"/metrics", "/readyz", "/healthz", "/"} {
		_, body := r.get(t, path)
		outputs["GET "+path] = body
	}
	for where, text := range outputs {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("a secret (%s…) appears in the %s", s[:len(s)-16], where)
			}
		}
	}
}

// closedPort returns a loopback address that refuses connections: a port
// that was just bound and released.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// pathRecorder serves h and records the request paths and Host headers.
type pathRecorder struct {
	mu    sync.Mutex
	paths map[string]int
	hosts map[string]int
}

func (p *pathRecorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.paths[r.URL.Path]++
		p.hosts[r.Host]++
		p.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// TestSecurityEgressOnlyToTargets runs two agents against two loopback
// Ollama simulators and watches a canary listener that nothing configured
// names. It sits on Ollama's default address (127.0.0.1:11434) when that
// port is free, and OLLAMA_HOST points at it, so a client built from the
// environment or from Ollama's defaults instead of the configuration would
// land there. The daemon has no dialer seam; the Transport of each target
// has no proxy (HTTP_PROXY is ignored by construction). What the targets
// see is checked too: only the Ollama API paths, with their own Host, and
// /metrics names only the configured targets.
func TestSecurityEgressOnlyToTargets(t *testing.T) {
	canaryL, err := net.Listen("tcp", "127.0.0.1:11434")
	if err != nil {
		canaryL, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("127.0.0.1:11434 is in use; the canary listens on %s", canaryL.Addr())
	}
	canary := &countingListener{Listener: canaryL}
	canarySrv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: time.Second}
	go func() { _ = canarySrv.Serve(canary) }()
	// Registered before the daemon starts, so it runs after the daemon has
	// stopped: every connection the daemon ever made is counted by then.
	t.Cleanup(func() {
		_ = canarySrv.Close()
		if n := canary.accepted.Load(); n != 0 {
			t.Errorf("the canary %s, which no configuration names, accepted %d connections", canaryL.Addr(), n)
		}
	})
	t.Setenv("OLLAMA_HOST", canaryL.Addr().String())

	type served struct {
		name string
		l    *countingListener
		rec  *pathRecorder
		host string
	}
	var targets []served
	for _, name := range []string{"ollama-a", "ollama-b"} {
		sim, err := ollamasim.New(ollamasim.Config{Name: name, NumParallel: 1, LoadDelay: 10 * time.Millisecond, Jitter: -1,
			GPU: ollamasim.NewGPU(ollamasim.GPUConfig{Name: name, DecodeRate: 400})})
		if err != nil {
			t.Fatal(err)
		}
		rec := &pathRecorder{paths: map[string]int{}, hosts: map[string]int{}}
		srv := httptest.NewUnstartedServer(rec.wrap(sim.Handler()))
		cl := &countingListener{Listener: srv.Listener}
		srv.Listener = cl
		srv.Start()
		t.Cleanup(func() { srv.Close(); sim.Close() })
		targets = append(targets, served{name: name, l: cl, rec: rec, host: cl.Addr().String()})
	}
	cfg := fmt.Sprintf(`
global: {shutdown_timeout: 5s}
targets:
  - {name: ollama-a, url: "http://%s", poll_interval: 200ms}
  - {name: ollama-b, url: "http://%s", poll_interval: 200ms}
agents:
  - {name: analyst, target: ollama-a, model: sim-tiny, options: {num_predict: 8}, workflow: [{name: ask, prompt: hi}]}
  - {name: reporter, targets: [ollama-a, ollama-b], balance: least_in_flight, model: sim-tiny, api: generate,
     options: {num_predict: 8}, workflow: [{name: ask, prompt: hi}]}
workloads:
  - {name: report, agents: [{agent: analyst}, {agent: reporter}], calibration: {runs: 1}}
`, targets[0].host, targets[1].host)
	r := startDaemon(t, cfg, true)
	eventually(t, 20*time.Second, "tokens from both targets", func() bool {
		m := r.scrape(t)
		return m.sum(exporters.MetricGeneratedTokensTotal, map[string]string{"target": "ollama-a"}) > 0 &&
			m.sum(exporters.MetricGeneratedTokensTotal, map[string]string{"target": "ollama-b"}) > 0
	})
	// More code paths that could reach out: a calibration and a reload.
	if code, body := r.post(t, "/-/calibrate"); code != http.StatusAccepted {
		t.Errorf("calibrate: %d %q", code, body)
	}
	if code, body := r.post(t, "/-/reload"); code != http.StatusOK {
		t.Errorf("reload: %d %q", code, body)
	}
	time.Sleep(500 * time.Millisecond)

	allowed := []string{"/api/version", "/api/ps", "/api/chat", "/api/generate"}
	for _, tg := range targets {
		if tg.l.accepted.Load() == 0 {
			t.Errorf("%s accepted no connection", tg.name)
		}
		tg.rec.mu.Lock()
		for path, n := range tg.rec.paths {
			if !slices.Contains(allowed, path) {
				t.Errorf("%s was asked for %s (%d times): only %v are expected", tg.name, path, n, allowed)
			}
		}
		for host := range tg.rec.hosts {
			if host != tg.host {
				t.Errorf("%s got a request for host %q, want %q", tg.name, host, tg.host)
			}
		}
		tg.rec.mu.Unlock()
	}
	configured := []string{"ollama-a", "ollama-b"}
	for name, mf := range r.scrape(t) {
		for _, s := range mf.GetMetric() {
			for _, lp := range s.GetLabel() {
				if lp.GetName() == exporters.LabelTarget && !slices.Contains(configured, lp.GetValue()) {
					t.Errorf("%s names target %q, which is not configured", name, lp.GetValue())
				}
			}
		}
	}
	if n := canary.accepted.Load(); n != 0 {
		t.Errorf("the canary %s accepted %d connections while the daemon ran", canaryL.Addr(), n)
	}
}
