package hostile

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// seen is what api.Client reported of one chat.
type seen struct {
	chunks int
	done   bool
	err    error
}

func chat(t *testing.T, base string, tr *http.Transport, timeout time.Duration) seen {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	if tr == nil {
		tr = &http.Transport{}
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var s seen
	s.err = api.NewClient(u, &http.Client{Transport: tr}).Chat(ctx, &api.ChatRequest{Model: "m"}, func(r api.ChatResponse) error {
		if r.Done {
			s.done = true
		} else {
			s.chunks++
		}
		return nil
	})
	return s
}

// TestWhatTheClientSees pins, for each script, what the Ollama client
// itself reports: the fault suite's classification rests on it (a bare
// error status, an oversize line and a broken stream all come back as no
// error at all).
func TestWhatTheClientSees(t *testing.T) {
	var status api.StatusError
	var netErr net.Error
	tests := []struct {
		name   string
		script Script
		chunks int
		done   bool
		err    func(error) bool
	}{
		{"healthy", Answer(3, time.Millisecond), 3, true, isNil},
		{"model not found", Script{Status(404, `{"error":"model \"m\" not found, try pulling it first"}`)}, 0, false,
			func(err error) bool {
				return errors.As(err, &status) && status.StatusCode == http.StatusNotFound && strings.Contains(status.ErrorMessage, "not found")
			}},
		{"bare 404: no error", Script{Status(404, "")}, 0, false, isNil},
		{"bare 503: no error", Script{Status(503, "")}, 0, false, isNil},
		{"503 with body", Script{Status(503, `{"error":"server busy"}`)}, 0, false,
			statusIs(http.StatusServiceUnavailable)},
		{"429 plain text", Script{Status(429, "slow down")}, 0, false,
			statusIs(http.StatusTooManyRequests)},
		{"not JSON mid-stream", Script{Tokens(2, 0), Line("garbage {"), Done()}, 2, false,
			func(err error) bool { return err != nil && err.Error() == "garbage {" }},
		{"error line mid-stream", Script{Tokens(2, 0), Line(`{"error":"runner crashed"}`)}, 2, false,
			func(err error) bool { return err != nil && err.Error() == "runner crashed" }},
		{"line just under the limit", Script{Tokens(1, 0), Oversize(ClientLineLimit - 200), Done()}, 2, true, isNil},
		{"line over the limit: no error", Script{Tokens(2, 0), Oversize(ClientLineLimit), Done()}, 2, false, isNil},
		{"close mid-stream: no error", Script{Tokens(2, 0), Close()}, 2, false, isNil},
		{"reset mid-stream: no error", Script{Tokens(2, 0), Reset()}, 2, false, isNil},
		{"end without done: no error", Script{Tokens(2, 0)}, 2, false, isNil},
		{"close before the status line", Script{Close()}, 0, false, func(err error) bool { return errors.As(err, &netErr) }},
		{"reset before the status line", Script{Reset()}, 0, false, func(err error) bool { return errors.As(err, &netErr) }},
	}
	s := Start(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.Set(tc.script)
			got := chat(t, s.URL(), nil, 10*time.Second)
			if got.chunks != tc.chunks || got.done != tc.done || !tc.err(got.err) {
				t.Errorf("client saw %d chunks, done %v, error %T %v; want %d chunks, done %v", got.chunks, got.done, got.err, got.err, tc.chunks, tc.done)
			}
		})
	}
}

func isNil(err error) bool { return err == nil }

// statusIs matches the client's error for an error answer with a body.
func statusIs(code int) func(error) bool {
	return func(err error) bool {
		var se api.StatusError
		return errors.As(err, &se) && se.StatusCode == code
	}
}

func TestWaitsEndWithTheClient(t *testing.T) {
	s := Start(t)
	for _, sc := range []Script{{Wait(time.Minute)}, {Tokens(1, 0), Wait(time.Minute)}, {Hang()}} {
		s.Set(sc)
		start := time.Now()
		got := chat(t, s.URL(), nil, 200*time.Millisecond)
		if !errors.Is(got.err, context.DeadlineExceeded) && got.err != nil {
			t.Errorf("error %v, want a deadline or none", got.err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("the client waited %s", took)
		}
	}
}

func TestSetEachNumbersRequests(t *testing.T) {
	s := Start(t)
	s.SetEach(func(n int64) Script {
		if n <= 2 {
			return Script{Status(500, "")}
		}
		return Answer(1, 0)
	})
	var done []bool
	for range 3 {
		done = append(done, chat(t, s.URL(), nil, 5*time.Second).done)
	}
	if done[0] || done[1] || !done[2] || s.Requests() != 3 {
		t.Errorf("done %v after %d requests, want [false false true] after 3", done, s.Requests())
	}
}

func TestStopRefusesAndRestartComesBack(t *testing.T) {
	s := Start(t)
	addr := s.Addr()
	s.Set(Script{Tokens(1, 0), Hang()})
	got := make(chan seen, 1)
	go func() { got <- chat(t, s.URL(), nil, 10*time.Second) }()
	deadline := time.Now().Add(5 * time.Second)
	for s.Requests() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	s.Stop() // ends the hanging stream
	if r := <-got; r.chunks != 1 || r.done {
		t.Errorf("stream cut by Stop: %+v, want 1 chunk and no done", r)
	}
	if r := chat(t, s.URL(), nil, 5*time.Second); !errors.Is(r.err, syscall.ECONNREFUSED) {
		t.Errorf("after Stop: %v, want connection refused", r.err)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != addr {
		t.Errorf("restarted on %s, want %s", s.Addr(), addr)
	}
	s.Set(Answer(2, 0))
	if r := chat(t, s.URL(), nil, 5*time.Second); !r.done || r.err != nil {
		t.Errorf("after Restart: %+v, want a whole answer", r)
	}
}

func TestAcceptModes(t *testing.T) {
	s := Start(t)
	s.SetAccept(AcceptReset)
	if r := chat(t, s.URL(), nil, 5*time.Second); r.err == nil {
		t.Error("AcceptReset: no error")
	}
	if n := len(s.Accepts()); n == 0 {
		t.Error("no accept recorded")
	}
	s.SetAccept(AcceptHang)
	start := time.Now()
	if r := chat(t, s.URL(), nil, 200*time.Millisecond); !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("AcceptHang: %v, want the client's deadline", r.err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("AcceptHang held the client %s", took)
	}
	s.SetAccept(AcceptServe)
	if r := chat(t, s.URL(), nil, 5*time.Second); !r.done {
		t.Errorf("AcceptServe: %+v", r)
	}
}

func TestTLS(t *testing.T) {
	s := StartTLS(t)
	if !strings.HasPrefix(s.URL(), "https://") {
		t.Fatalf("URL %s", s.URL())
	}
	if r := chat(t, s.URL(), nil, 5*time.Second); r.err == nil || !strings.Contains(r.err.Error(), "certificate") {
		t.Errorf("untrusted certificate: %v", r.err)
	}
	if r := chat(t, "http://"+s.Addr(), nil, 5*time.Second); r.err == nil || !strings.Contains(r.err.Error(), "HTTPS server") {
		t.Errorf("plain HTTP to the TLS port: %v", r.err)
	}
	s.SetAccept(AcceptHang)
	r := chat(t, s.URL(), &http.Transport{TLSHandshakeTimeout: 200 * time.Millisecond}, 5*time.Second)
	if r.err == nil || !strings.Contains(r.err.Error(), "TLS handshake timeout") {
		t.Errorf("hung handshake: %v", r.err)
	}
}

func TestBacklogged(t *testing.T) {
	addr := Backlogged(t)
	start := time.Now()
	c, err := (&net.Dialer{Timeout: 200 * time.Millisecond}).DialContext(context.Background(), "tcp", addr)
	if err == nil {
		_ = c.Close()
		t.Fatal("connected to a full backlog")
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("dial: %v, want a timeout", err)
	}
	if took := time.Since(start); took < 150*time.Millisecond || took > 5*time.Second {
		t.Errorf("dial gave up after %s, want about the 200ms timeout", took)
	}
}
