package daemon

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/envconfig"
	"github.com/prometheus/common/version"
	"go.uber.org/zap"

	"github.com/chimeraforge/chimeraforge/config"
)

// target is one Ollama server as the daemon sees it: a client bound to its
// URL, headers and connect timeout, the number of requests this daemon has
// in flight to it (for slot saturation and least_in_flight balancing), and
// the backoff shared by everything that sends to it.
type target struct {
	name        string
	url         *url.URL
	cfg         config.Target
	client      *api.Client  // for what the daemon does not stream itself
	http        *http.Client // the client's: through headerTransport
	chatURL     string       // base + /api/chat, as the client joins it
	generateURL string
	transport   *http.Transport
	numParallel int64
	inFlight    atomic.Int64
	gate        *gate
	log         *zap.Logger // logs the target's failing streaks, once each

	stopPolling context.CancelFunc

	mu      sync.Mutex
	version string // last answer of /api/version; "" until one came
}

// newTarget builds the client of one target. base is the resolved URL (a
// sim:// URL is resolved to the simulator's loopback address by the caller).
func newTarget(cfg config.Target, base *url.URL) *target {
	tr := &http.Transport{
		// Never a proxy: the daemon only ever connects to configured targets.
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: cfg.Timeouts.Connect, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: cfg.Timeouts.Connect,
		// Connections are opened for requests in flight, so the idle ones
		// do not outnumber the target's peak concurrency by much, and
		// IdleConnTimeout closes them once it falls.
		// A lower cap closes the connections of replicas in their think
		// time, to dial them again a moment later: with 2,000 closed-loop
		// replicas and a think time as long as an answer, a cap of 256
		// re-dialled 13-18% of requests on loopback and cut throughput by
		// a third; this cap re-dialled none. (0 would mean 2, not
		// unlimited; MaxIdleConns is unlimited.)
		MaxIdleConnsPerHost: 1 << 16,
		IdleConnTimeout:     90 * time.Second,
		// A connection's buffers are a good part of what each of thousands
		// of concurrent streams costs (36-41 KiB in all, measured with 5,000,
		// more than half of it the stacks of the call's goroutine and the
		// connection's two).
		// The write buffer only holds a request on its way out: 1 KiB
		// means a few more writes of a long prompt, once per request. The
		// read buffer holds what a stream has received and not yet read,
		// a line of 100-400 bytes at a time: 2 KiB still reads many lines
		// per read when a stream falls behind. Each saves 2-3 KiB a stream.
		WriteBufferSize: 1 << 10,
		ReadBufferSize:  2 << 10,
	}
	headers := make(http.Header, len(cfg.Headers)+1)
	for k, v := range cfg.Headers {
		headers.Set(k, v.Resolved())
	}
	headers.Set("User-Agent", "chimeraforge/"+version.Version)
	g := newGate(cfg.Name, cfg.Retry.BackoffMin, cfg.Retry.BackoffMax)
	hc := &http.Client{Transport: headerTransport{next: tr, headers: headers, gate: g}}
	return &target{
		name:        cfg.Name,
		url:         base,
		cfg:         cfg,
		client:      api.NewClient(base, hc),
		http:        hc,
		chatURL:     base.JoinPath("/api/chat").String(),
		generateURL: base.JoinPath("/api/generate").String(),
		transport:   tr,
		numParallel: int64(cfg.NumParallel),
		gate:        g,
		log:         zap.NewNop(),
	}
}

// signs reports whether the Ollama client would sign the target's requests
// (api.Client.stream: OLLAMA_AUTH is true, or the target is ollama.com). It
// is read for each request, as the client does.
func (t *target) signs() bool {
	return envconfig.UseAuth() || t.url.Hostname() == "ollama.com"
}

// acquire marks one more request in flight and reports whether the target
// already had num_parallel in flight: the request will have to queue on a
// server that runs with that many slots.
func (t *target) acquire() (saturated bool) {
	return t.inFlight.Add(1) > t.numParallel
}

func (t *target) release() { t.inFlight.Add(-1) }

// setVersion records the version the target last answered.
func (t *target) setVersion(v string) {
	t.mu.Lock()
	t.version = v
	t.mu.Unlock()
}

func (t *target) answered() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.version != ""
}

// close stops the target's poller and drops its idle connections.
func (t *target) close() {
	if t.stopPolling != nil {
		t.stopPolling()
	}
	t.transport.CloseIdleConnections()
}

// headerTransport adds the target's configured headers (auth proxies) and
// our User-Agent to every request. For the requests of a call it also
// notes the status of the answer, which the Ollama client does not report
// when an error answer has no body, and opens the target's gate as soon as
// the target answers with a status that is not a fault.
type headerTransport struct {
	next    http.RoundTripper
	headers http.Header
	gate    *gate
}

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx := r.Context()
	r = r.Clone(ctx)
	for k, v := range h.headers {
		r.Header[k] = v
	}
	resp, err := h.next.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	// http.Client calls RoundTrip on the caller's goroutine: the call that
	// owns s reads what is written here after the client returns.
	if s, ok := ctx.Value(streamKey{}).(*stream); ok {
		s.obs.Status = resp.StatusCode
		if !faultStatus(resp.StatusCode) {
			h.gate.answered()
		}
	}
	return resp, nil
}
