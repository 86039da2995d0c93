package ollamatest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
)

// Totals are sums of what the server reported in the final chunks that
// passed through a Proxy.
type Totals struct {
	Responses          int // final (done) chunks seen
	EvalCount          int
	PromptEvalCount    int
	EvalDuration       time.Duration
	PromptEvalDuration time.Duration
	LoadDuration       time.Duration
	TotalDuration      time.Duration
}

// Proxy forwards to an Ollama server and records, independently of the
// daemon, the server's own figures from every final chunk it streams.
type Proxy struct {
	srv *httptest.Server
	mu  sync.Mutex
	tot Totals
}

// NewProxy starts a recording proxy on loopback in front of upstream.
func NewProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1 // stream each chunk through at once
	// A fresh upstream connection per request. The Ollama client closes a
	// stream's body as soon as it has the final chunk, which cancels the
	// proxied request; with keep-alive, that cancel raced with the reuse
	// of the upstream connection and, about once in 300 requests, broke
	// the next stream on it ("use of closed network connection").
	rp.Transport = &http.Transport{DisableKeepAlives: true}
	rp.ModifyResponse = func(r *http.Response) error {
		r.Body = &lineTap{rc: r.Body, p: p}
		return nil
	}
	p.srv = httptest.NewServer(rp)
	t.Cleanup(p.srv.Close)
	return p
}

// URL is the proxy's base URL.
func (p *Proxy) URL() string { return p.srv.URL }

// Totals returns the sums so far.
func (p *Proxy) Totals() Totals {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tot
}

// lineTap passes a response body through unchanged and decodes each
// complete NDJSON line on the way.
type lineTap struct {
	rc   io.ReadCloser
	p    *Proxy
	line []byte
}

func (l *lineTap) Read(b []byte) (int, error) {
	n, err := l.rc.Read(b)
	data := b[:n]
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			l.line = append(l.line, data...)
			break
		}
		l.line = append(l.line, data[:i]...)
		l.record(l.line)
		l.line = l.line[:0]
		data = data[i+1:]
	}
	return n, err
}

func (l *lineTap) Close() error { return l.rc.Close() }

func (l *lineTap) record(line []byte) {
	var c struct {
		Done bool `json:"done"`
		api.Metrics
	}
	if json.Unmarshal(line, &c) != nil || !c.Done {
		return
	}
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	t := &l.p.tot
	t.Responses++
	t.EvalCount += c.EvalCount
	t.PromptEvalCount += c.PromptEvalCount
	t.EvalDuration += c.EvalDuration
	t.PromptEvalDuration += c.PromptEvalDuration
	t.LoadDuration += c.LoadDuration
	t.TotalDuration += c.TotalDuration
}
