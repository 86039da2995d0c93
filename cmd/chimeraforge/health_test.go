package main

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// healthServer answers every request with h.
func healthServer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// checkOneLine fails unless s is exactly one newline-terminated line.
func checkOneLine(t *testing.T, s string) {
	t.Helper()
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		t.Errorf("stderr %q: want exactly one line", s)
	}
}

// The exit codes are the contract with Docker's HEALTHCHECK (0 healthy, 1
// unhealthy; Docker reserves 2) and with people running it by hand.
func TestHealthExitCodes(t *testing.T) {
	ok := healthServer(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "healthy\n")
	})
	notReady := healthServer(t, func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not ready: waiting for targets\nsecond line", http.StatusServiceUnavailable)
	})
	empty503 := healthServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	redirect := healthServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})
	noContent := healthServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})

	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		wantStderr []string // substrings of the one line on stderr
	}{
		{"200", []string{"--url", ok + "/healthz"}, 0, nil},
		{"503 quotes the first line of the body", []string{"--url", notReady + "/readyz"}, 1,
			[]string{"health: GET " + notReady + "/readyz: 503 Service Unavailable: not ready: waiting for targets"}},
		{"503 without a body", []string{"--url", empty503}, 1, []string{"503 Service Unavailable"}},
		{"a redirect is not followed", []string{"--url", redirect}, 1, []string{"302 Found"}},
		{"only 200 is healthy", []string{"--url", noContent}, 1, []string{"204 No Content"}},
		{"not a URL", []string{"--url", "127.0.0.1:9477/healthz"}, 1, []string{"want an absolute http:// or https:// URL"}},
		{"zero timeout", []string{"--url", ok, "--timeout", "0s"}, 1, []string{"--timeout must be > 0"}},
		{"unknown flag", []string{"--no-such-flag"}, 2, []string{"no-such-flag"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(append([]string{"health"}, tc.args...)...)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.code, errOut)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
			if tc.code == 0 {
				if errOut != "" {
					t.Errorf("stderr %q, want nothing", errOut)
				}
				return
			}
			checkOneLine(t, errOut)
			for _, s := range tc.wantStderr {
				if !strings.Contains(errOut, s) {
					t.Errorf("stderr %q lacks %q", errOut, s)
				}
			}
		})
	}
}

func TestHealthConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCLI("health", "--url", "http://"+addr+"/healthz")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	checkOneLine(t, errOut)
	if !strings.Contains(errOut, "http://"+addr+"/healthz") || !strings.Contains(errOut, "connection refused") {
		t.Errorf("stderr %q: want the URL and \"connection refused\"", errOut)
	}
}

func TestHealthTimeout(t *testing.T) {
	release := make(chan struct{})
	url := healthServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before the server's Close
	start := time.Now()
	code, _, errOut := runCLI("health", "--url", url, "--timeout", "200ms")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s with --timeout 200ms", d)
	}
	checkOneLine(t, errOut)
	if !strings.Contains(errOut, "no answer within 200ms") {
		t.Errorf("stderr %q: want \"no answer within 200ms\"", errOut)
	}
}

func TestHealthTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "healthy\n")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	t.Cleanup(srv.Close)
	code, _, errOut := runCLI("health", "--url", srv.URL+"/healthz")
	if code != 1 || !strings.Contains(errOut, "certificate") {
		t.Errorf("self-signed certificate, verified: exit %d, stderr %q; want 1 naming the certificate", code, errOut)
	}
	if code, _, errOut := runCLI("health", "--url", srv.URL+"/healthz", "--insecure-skip-verify"); code != 0 {
		t.Errorf("--insecure-skip-verify: exit %d, stderr %q; want 0", code, errOut)
	}
}

// Basic auth (--web.config.file) rides in the URL and stays out of the
// reason.
func TestHealthBasicAuth(t *testing.T) {
	url := healthServer(t, func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "prom" || p != "s3cret" {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, "healthy\n")
	})
	withAuth := strings.Replace(url, "http://", "http://prom:s3cret@", 1)
	if code, _, errOut := runCLI("health", "--url", withAuth+"/healthz"); code != 0 {
		t.Errorf("with credentials: exit %d, stderr %q", code, errOut)
	}
	wrong := strings.Replace(url, "http://", "http://prom:wrong@", 1)
	code, _, errOut := runCLI("health", "--url", wrong+"/healthz")
	if code != 1 || !strings.Contains(errOut, "401 Unauthorized") || strings.Contains(errOut, "wrong") {
		t.Errorf("wrong password: exit %d, stderr %q; want 1, 401 and the password redacted", code, errOut)
	}
}

// The default probes the daemon's own /healthz on loopback at its default
// port: what the image's HEALTHCHECK runs without arguments.
func TestHealthDefaultURL(t *testing.T) {
	if defaultHealthURL != "http://127.0.0.1:9477/healthz" {
		t.Errorf("default URL %q", defaultHealthURL)
	}
	code, out, _ := runCLI("health", "--help")
	if code != 0 || !strings.Contains(out, defaultHealthURL) {
		t.Errorf("health --help: exit %d, want 0 and the default URL in:\n%s", code, out)
	}
}

// Against the daemon's own routes: /healthz answers as soon as it serves.
func TestHealthAgainstDaemon(t *testing.T) {
	r := startDaemon(t, "", false)
	if code, _, errOut := runCLI("health", "--url", r.base+"/healthz"); code != 0 {
		t.Errorf("/healthz: exit %d, stderr %q", code, errOut)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, errOut := runCLI("health", "--url", r.base+"/readyz")
		if code == 0 {
			break
		}
		if code != 1 || !strings.Contains(errOut, "503 Service Unavailable: not ready") {
			t.Fatalf("/readyz before ready: exit %d, stderr %q", code, errOut)
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not ready within 10s: %s", errOut)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
