// Package hostile is a programmable Ollama-shaped HTTP server on 127.0.0.1
// that fails the way real servers fail: it refuses or resets connections,
// hangs before or during the TLS handshake, sends its headers late, stalls
// before the first token or mid-stream, writes malformed or oversize lines,
// closes or resets the connection mid-stream, answers 4xx and 5xx with or
// without a body, and stops listening and comes back on the same port.
//
// What it does with each chat or generate request is a Script: a list of
// Actions run in order (wait, write the status, stream tokens, write a raw
// line, close…). Set replaces the script for the requests that follow;
// SetEach picks one per request number. /api/version and /api/ps always
// answer normally while the server listens, so that a daemon's poller does
// not mix its own errors into a test. What happens to connections before
// HTTP is the accept mode (SetAccept).
//
// It exists for the fault suite (docs/reliability.md): it is a test double,
// never a model of Ollama's performance.
package hostile

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
)

// ClientLineLimit is the longest line github.com/ollama/ollama/api's Client
// reads from a stream: its bufio.Scanner's maximum buffer (maxBufferSize,
// 8 × format.MegaByte = 8,000,000 bytes in v0.17.4). A longer line stops
// the client's scan; the client then returns no error at all.
const ClientLineLimit = 8_000_000

// AcceptMode is what the server does with a TCP connection it accepts,
// before any HTTP (or TLS) is spoken on it.
type AcceptMode int

// Accept modes.
const (
	// AcceptServe serves HTTP on the connection (the default).
	AcceptServe AcceptMode = iota
	// AcceptReset closes the connection at once with a TCP reset: the
	// client's request fails before any answer.
	AcceptReset
	// AcceptHang holds the connection open and never reads from it: a TLS
	// client's handshake, or a plain client's wait for the status line,
	// hangs until the client gives up or the server stops.
	AcceptHang
)

// Server is a hostile server. Start it with Start or StartTLS.
type Server struct {
	tlsConf *tls.Config // nil for plain HTTP
	addr    string      // 127.0.0.1:port, kept across Stop and Restart

	mu       sync.Mutex
	each     func(n int64) Script
	accept   AcceptMode
	accepts  []time.Time // every TCP connection accepted, in order
	hs       *http.Server
	conns    map[*conn]struct{} // open TCP connections
	stop     chan struct{}      // closed by Stop: ends waits and hangs
	running  bool
	handlers sync.WaitGroup // the Serve loop and every handler

	requests atomic.Int64
}

// Start runs a plain HTTP hostile server on a free loopback port, serving
// Answer(3, 0) until told otherwise. It is closed when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return start(tb, nil)
}

// StartTLS runs a hostile server that speaks TLS, with a self-signed
// certificate for 127.0.0.1 that no client trusts.
func StartTLS(tb testing.TB) *Server {
	tb.Helper()
	cert, err := selfSigned()
	if err != nil {
		tb.Fatalf("hostile: certificate: %v", err)
	}
	return start(tb, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
}

func start(tb testing.TB, tlsConf *tls.Config) *Server {
	s := &Server{tlsConf: tlsConf, addr: "127.0.0.1:0", conns: map[*conn]struct{}{}}
	s.each = func(int64) Script { return Answer(3, 0) }
	if err := s.listen(); err != nil {
		tb.Fatalf("hostile: %v", err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// URL is the server's base URL: http://127.0.0.1:PORT, or https:// for a
// TLS server.
func (s *Server) URL() string {
	if s.tlsConf != nil {
		return "https://" + s.addr
	}
	return "http://" + s.addr
}

// Addr is 127.0.0.1:PORT.
func (s *Server) Addr() string { return s.addr }

// Set makes every following chat or generate request run sc.
func (s *Server) Set(sc Script) {
	s.SetEach(func(int64) Script { return sc })
}

// SetEach makes the n-th chat or generate request (counted from 1 since
// the server started) run the script f returns.
func (s *Server) SetEach(f func(n int64) Script) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.each = f
}

// SetAccept sets what happens to the TCP connections accepted from now on.
func (s *Server) SetAccept(m AcceptMode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accept = m
}

// Requests is the number of chat and generate requests received.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Accepts returns when each TCP connection was accepted, in order.
func (s *Server) Accepts() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.accepts...)
}

// Stop stops listening and closes every connection, as a server that
// crashed or was killed: from now on connections to its port are refused.
// Requests in flight end where they are. It waits for its handlers to
// return and is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return
	}
	s.running = false
	close(s.stop)
	hs := s.hs
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	_ = hs.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	s.handlers.Wait()
}

// Restart listens again on the same port, as a server that came back.
func (s *Server) Restart() error {
	s.mu.Lock()
	running := s.running
	s.mu.Unlock()
	if running {
		return errors.New("hostile: Restart while running")
	}
	return s.listen()
}

func (s *Server) listen() error {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.addr, err)
	}
	s.addr = l.Addr().String()
	var ln net.Listener = &listener{Listener: l, s: s}
	if s.tlsConf != nil {
		ln = tls.NewListener(ln, s.tlsConf)
	}
	hs := &http.Server{
		Handler:           http.HandlerFunc(s.handle),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0), // TLS handshake errors are the point
		// HTTP/1.1 only: the daemon's client speaks nothing else.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	s.mu.Lock()
	s.hs, s.stop, s.running = hs, make(chan struct{}), true
	s.mu.Unlock()
	s.handlers.Go(func() { _ = hs.Serve(ln) })
	return nil
}

// listener applies the accept mode and tracks every connection.
type listener struct {
	net.Listener
	s *Server
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := &conn{Conn: c, s: l.s}
		l.s.mu.Lock()
		l.s.accepts = append(l.s.accepts, time.Now())
		l.s.conns[tc] = struct{}{}
		mode := l.s.accept
		l.s.mu.Unlock()
		switch mode {
		case AcceptReset:
			reset(tc)
		case AcceptHang:
			// Left open, never read; Stop closes it.
		default:
			return tc, nil
		}
	}
}

// conn is an accepted TCP connection that leaves the server's set when
// closed.
type conn struct {
	net.Conn
	s *Server
}

func (c *conn) Close() error {
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	return c.Conn.Close()
}

// reset closes c with a TCP reset instead of an orderly close (for TLS,
// without a close_notify alert).
func reset(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	raw := c
	if hc, ok := raw.(*conn); ok {
		raw = hc.Conn
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = c.Close()
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	s.handlers.Add(1)
	defer s.handlers.Done()
	switch r.URL.Path {
	case "/api/version":
		writeJSON(w, http.StatusOK, map[string]string{"version": "0.0.0-hostile"})
		return
	case "/api/ps":
		writeJSON(w, http.StatusOK, map[string]any{"models": []any{}})
		return
	case "/api/chat", "/api/generate":
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
		return
	}
	var req struct {
		Model string `json:"model"`
	}
	_ = json.NewDecoder(io.LimitReader(r.Body, 32<<20)).Decode(&req)
	_, _ = io.Copy(io.Discard, r.Body)
	n := s.requests.Add(1)
	s.mu.Lock()
	sc, stop := s.each(n), s.stop
	s.mu.Unlock()
	x := &Exchange{w: w, r: r, stop: stop, chat: r.URL.Path == "/api/chat", model: req.Model}
	for _, act := range sc {
		if act(x) != nil {
			return
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// Script is what the server does with one chat or generate request: its
// actions, in order. A script that ends without Done ends the response
// there, cleanly: a stream without its final chunk.
type Script []Action

// Action is one step of a Script. An error ends the script (the client
// left, the server stopped, or the connection is gone).
type Action func(x *Exchange) error

// Exchange is one request being answered.
type Exchange struct {
	w      http.ResponseWriter
	r      *http.Request
	stop   <-chan struct{}
	chat   bool
	model  string
	wrote  bool // the status line was written
	tokens int  // content chunks sent
}

var errGone = errors.New("hostile: client gone or server stopped")

// Answer is a healthy answer: n tokens, every apart, then the final chunk.
func Answer(n int, every time.Duration) Script {
	return Script{Tokens(n, every), Done()}
}

// Wait pauses for d: before the status line, slow headers; after it, a
// stall. It ends early when the client leaves or the server stops.
func Wait(d time.Duration) Action {
	return func(x *Exchange) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-x.r.Context().Done():
			return errGone
		case <-x.stop:
			return errGone
		}
	}
}

// Hang pauses until the client leaves or the server stops.
func Hang() Action {
	return func(x *Exchange) error {
		select {
		case <-x.r.Context().Done():
		case <-x.stop:
		}
		return errGone
	}
}

// Status writes the status line and, when body is not empty, body as the
// whole answer (JSON when it starts with "{"). Status(200, "") starts a
// stream: NDJSON headers, flushed, and nothing else yet.
func Status(code int, body string) Action {
	return func(x *Exchange) error {
		h := x.w.Header()
		switch {
		case code == http.StatusOK && body == "":
			h.Set("Content-Type", "application/x-ndjson")
		case strings.HasPrefix(body, "{"):
			h.Set("Content-Type", "application/json; charset=utf-8")
		default:
			h.Set("Content-Type", "text/plain; charset=utf-8")
		}
		x.w.WriteHeader(code)
		x.wrote = true
		if body != "" {
			if _, err := io.WriteString(x.w, body); err != nil {
				return errGone
			}
		}
		return x.flush()
	}
}

// Tokens streams n content chunks, every apart (the first at once),
// starting the stream first if no status was written.
func Tokens(n int, every time.Duration) Action {
	return func(x *Exchange) error {
		for i := range n {
			if i > 0 && every > 0 {
				if err := Wait(every)(x); err != nil {
					return err
				}
			}
			if err := x.writeChunk("tok "); err != nil {
				return err
			}
			x.tokens++
		}
		return nil
	}
}

// Done writes the final chunk (done: true) with server-reported metrics:
// eval_count is the tokens streamed so far.
func Done() Action {
	return func(x *Exchange) error {
		m := api.Metrics{
			TotalDuration: 10 * time.Millisecond, LoadDuration: time.Millisecond,
			PromptEvalCount: 4, PromptEvalDuration: time.Millisecond,
			EvalCount: x.tokens, EvalDuration: 5 * time.Millisecond,
		}
		var v any
		if x.chat {
			v = api.ChatResponse{Model: x.model, CreatedAt: time.Now().UTC(), Done: true, DoneReason: "stop",
				Message: api.Message{Role: "assistant"}, Metrics: m}
		} else {
			v = api.GenerateResponse{Model: x.model, CreatedAt: time.Now().UTC(), Done: true, DoneReason: "stop", Metrics: m}
		}
		return x.writeValue(v)
	}
}

// Line writes raw as one line of the stream (a newline is added),
// starting the stream first if no status was written.
func Line(raw string) Action {
	return func(x *Exchange) error {
		return x.writeRaw([]byte(raw + "\n"))
	}
}

// Oversize writes a content chunk whose line is longer than n bytes: with
// n = ClientLineLimit the Ollama client cannot read it. The line is built
// once, here, so that writing it takes no longer than the network does.
func Oversize(n int) Action {
	line := []byte(`{"model":"m","message":{"role":"assistant","content":"` + strings.Repeat("a", n) + "\"}}\n")
	return func(x *Exchange) error {
		return x.writeRaw(line)
	}
}

// Close closes the connection without finishing the response (a TCP FIN,
// and no terminating chunk): before the status line the client's request
// fails; after it, its stream ends early.
func Close() Action {
	return func(x *Exchange) error {
		c, err := x.hijack()
		if err != nil {
			return err
		}
		_ = c.Close()
		return errGone
	}
}

// Reset closes the connection with a TCP reset.
func Reset() Action {
	return func(x *Exchange) error {
		c, err := x.hijack()
		if err != nil {
			return err
		}
		reset(c)
		return errGone
	}
}

func (x *Exchange) hijack() (net.Conn, error) {
	if x.wrote {
		if err := x.flush(); err != nil {
			return nil, err
		}
	}
	hj, ok := x.w.(http.Hijacker)
	if !ok {
		return nil, errors.New("hostile: connection cannot be hijacked")
	}
	c, _, err := hj.Hijack()
	if err != nil {
		return nil, fmt.Errorf("hostile: hijack: %w", err)
	}
	return c, nil
}

func (x *Exchange) writeChunk(content string) error {
	if x.chat {
		return x.writeValue(api.ChatResponse{Model: x.model, CreatedAt: time.Now().UTC(),
			Message: api.Message{Role: "assistant", Content: content}})
	}
	return x.writeValue(api.GenerateResponse{Model: x.model, CreatedAt: time.Now().UTC(), Response: content})
}

func (x *Exchange) writeValue(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return x.writeRaw(append(b, '\n'))
}

func (x *Exchange) writeRaw(b []byte) error {
	if !x.wrote {
		if err := Status(http.StatusOK, "")(x); err != nil {
			return err
		}
	}
	if _, err := x.w.Write(b); err != nil {
		return errGone
	}
	return x.flush()
}

func (x *Exchange) flush() error {
	if err := http.NewResponseController(x.w).Flush(); err != nil {
		return errGone
	}
	return nil
}

// selfSigned makes a certificate for 127.0.0.1 that nobody trusts.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "hostile"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
