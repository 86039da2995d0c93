package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/chimeraforge/chimeraforge/config"
	"github.com/chimeraforge/chimeraforge/observe"
)

// Causes recorded on a call's context when one of its own timeouts fires,
// so the error can be classified after the client returns.
var (
	errFirstTokenTimeout = errors.New("no first token within the first_token timeout")
	errIdleTimeout       = errors.New("no chunk within the idle timeout")
	errRequestTimeout    = errors.New("request exceeded the request timeout")
)

// thresholds turn timings into contention events.
type thresholds struct {
	modelReload time.Duration // load_duration above it: model_reload
	queueWait   time.Duration // estimated queue wait above it: queue_wait
}

// callSpec is one Ollama call: the request body of one API.
type callSpec struct {
	chat     *api.ChatRequest
	generate *api.GenerateRequest
}

// stream is the measurement state of one streaming call. onChunk is the
// per-chunk hot path: it reads the monotonic clock once and reports
// inter-token gaps without allocating; the chunk's text is already in out.
type stream struct {
	rec       observe.Recorder
	start     time.Time
	watch     *time.Timer // the first-token, then idle, timeout: see expire
	idle      time.Duration
	cancel    context.CancelCauseFunc
	phase     atomic.Int32 // phaseFirstToken until the first token, then phaseIdle
	lastChunk atomic.Int64 // time since start of the last chunk, for expire
	out       []byte       // the content text so far
	obs       *observe.Request
	chunked   bool // at least one chunk arrived

	mu    sync.Mutex // orders expire and end
	ended bool
}

const (
	phaseFirstToken int32 = iota
	phaseIdle
)

// streamKey carries a call's *stream in its request context, for the
// target's transport to note the answer's status in.
type streamKey struct{}

// onChunk measures one chunk, whose text (content) the caller has appended
// to s.out. text reports that the chunk carried content or thinking text;
// m is read only when done is set.
func (s *stream) onChunk(text, done bool, m *api.Metrics) {
	el := time.Since(s.start) // one read of the monotonic clock
	s.chunked = true
	// The idle timeout counts from the last chunk of any kind. expire reads
	// it when the timer fires, so a chunk costs no timer reset.
	s.lastChunk.Store(int64(el))
	if text {
		if !s.obs.FirstToken {
			s.obs.FirstToken = true
			s.obs.TimeToFirst = el
			s.phase.Store(phaseIdle)
			s.watch.Reset(s.idle)
		} else {
			gap := el - s.obs.LastToken
			s.rec.TokenGap(gap)
			s.obs.MaxTokenGap = max(s.obs.MaxTokenGap, gap)
		}
		s.obs.LastToken = el
		s.obs.ContentChunks++
	}
	if done {
		s.obs.Done = true
		s.obs.EvalCount = m.EvalCount
		s.obs.PromptEvalCount = m.PromptEvalCount
		s.obs.EvalDuration = m.EvalDuration
		s.obs.PromptEvalDuration = m.PromptEvalDuration
		s.obs.LoadDuration = m.LoadDuration
		s.obs.TotalDuration = m.TotalDuration
		if !s.obs.FirstToken {
			// A successful answer without text still has a first
			// response; using it keeps TTFT count == successful requests.
			s.obs.TimeToFirst = el
		}
	}
}

// expire runs when the watch timer fires: before the first token, the
// first-token timeout is over; after it, the idle timeout is over unless a
// chunk came since the timer was set, in which case the timer is set again
// for the rest of the idle time from that chunk.
func (s *stream) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	if s.phase.Load() == phaseFirstToken {
		s.cancel(errFirstTokenTimeout)
		return
	}
	if quiet := time.Since(s.start) - time.Duration(s.lastChunk.Load()); quiet < s.idle {
		s.watch.Reset(s.idle - quiet)
		return
	}
	s.cancel(errIdleTimeout)
}

// end stops the watch: no timeout is reported once the stream has ended.
func (s *stream) end() {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	s.watch.Stop()
}

// call sends one request to t, measures it into obs and records it with rec.
// It returns the generated text and, for logs only, what went wrong. ctx is
// the run's context: when it ends the call is canceled and counted as such.
func call(ctx context.Context, t *target, spec callSpec, rec observe.Recorder, obs *observe.Request, th thresholds, firstOnTarget bool) (string, error) {
	tm := t.cfg.Timeouts
	rec.Started(t.acquire())
	defer t.release()

	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cctx, cancelTimeout := context.WithTimeoutCause(cctx, tm.Request, errRequestTimeout)
	defer cancelTimeout()

	outBuf := getBuf()
	s := &stream{rec: rec, idle: tm.Idle, cancel: cancel, obs: obs, out: *outBuf}
	defer func() { putBuf(outBuf, s.out) }() // after the answer is copied out
	cctx = context.WithValue(cctx, streamKey{}, s)
	s.start = time.Now()
	s.watch = time.AfterFunc(tm.FirstToken, s.expire)
	err := t.send(cctx, spec, s)
	obs.Duration = time.Since(s.start)
	s.end()

	obs.Outcome, obs.Reason = classify(ctx, cctx, err, s)
	if obs.Outcome == observe.OutcomeSuccess {
		// Negative server-reported durations are ignored, as everywhere:
		// the queue wait is never more than the time to first token.
		obs.QueueWait = max(0, obs.TimeToFirst-(max(0, obs.LoadDuration)+max(0, obs.PromptEvalDuration)))
		obs.ModelReload = !firstOnTarget && obs.LoadDuration > th.modelReload
		obs.QueueWaited = obs.QueueWait > th.queueWait
	}
	obs.QueueRejected = obs.Reason == observe.ReasonQueueFull
	rec.Finished(obs)
	if obs.Outcome == observe.OutcomeSuccess {
		return string(s.out), nil
	}
	if cause := context.Cause(cctx); cause != nil && err == nil {
		err = cause
	}
	if err == nil {
		err = errors.New("stream ended without a done chunk")
	}
	return "", err
}

// send streams one request's answer into s. It does what
// github.com/ollama/ollama/api's Client.Chat and Client.Generate do, with
// the same request, the same line splitting and the same errors (see
// ndjson.go), but reads a content chunk in one pass (parseChunk) and
// decodes the other lines as the client does (slowLine).
func (t *target) send(ctx context.Context, spec callSpec, s *stream) error {
	if t.signs() {
		// The client signs such requests with code of its own that it does
		// not export: let it make them.
		return t.sendViaClient(ctx, spec, s)
	}
	var data any = spec.chat
	path, generate := t.chatURL, spec.chat == nil
	if generate {
		data, path = spec.generate, t.generateURL
	}
	body, err := json.Marshal(data)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	// The User-Agent is headerTransport's.
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := t.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()

	lines := newLineReader(resp.Body)
	defer lines.release()
	for {
		line, ok := lines.next()
		if !ok {
			// The end of the body, a read error or a line too long: the
			// client returns no error for any of them.
			return nil
		}
		if resp.StatusCode < http.StatusBadRequest {
			// An error answer's lines are errors: only a success's lines
			// may be chunks.
			if out, text, ok := parseChunk(line, generate, s.out, nil); ok {
				s.out = out
				s.onChunk(text, false, nil)
				continue
			}
		}
		if err := s.slowLine(line, resp, generate); err != nil {
			return err
		}
	}
}

// slowLine handles a line as api.Client.stream and its Chat and Generate
// callbacks do: an "error" field or a line that is not JSON is an error,
// as is any line of an error answer; anything else decodes into the API's
// response type, with encoding/json's errors as they are.
func (s *stream) slowLine(line []byte, resp *http.Response, generate bool) error {
	var errorResponse struct {
		Error     string `json:"error,omitempty"`
		SigninURL string `json:"signin_url,omitempty"`
	}
	if err := json.Unmarshal(line, &errorResponse); err != nil {
		if resp.StatusCode >= http.StatusBadRequest {
			return api.StatusError{StatusCode: resp.StatusCode, Status: resp.Status, ErrorMessage: string(line)}
		}
		return errors.New(string(line))
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return api.AuthorizationError{StatusCode: resp.StatusCode, Status: resp.Status, SigninURL: errorResponse.SigninURL}
	case resp.StatusCode >= http.StatusBadRequest:
		return api.StatusError{StatusCode: resp.StatusCode, Status: resp.Status, ErrorMessage: errorResponse.Error}
	case errorResponse.Error != "":
		return errors.New(errorResponse.Error)
	}
	if generate {
		var r api.GenerateResponse
		if err := json.Unmarshal(line, &r); err != nil {
			return err
		}
		s.out = append(s.out, r.Response...)
		s.onChunk(r.Response != "" || r.Thinking != "", r.Done, &r.Metrics)
		return nil
	}
	var r api.ChatResponse
	if err := json.Unmarshal(line, &r); err != nil {
		return err
	}
	s.out = append(s.out, r.Message.Content...)
	s.onChunk(r.Message.Content != "" || r.Message.Thinking != "", r.Done, &r.Metrics)
	return nil
}

// sendViaClient streams one request's answer into s through the Ollama
// client itself: for the requests it signs (see target.signs), and as the
// reference that send is tested against.
func (t *target) sendViaClient(ctx context.Context, spec callSpec, s *stream) error {
	if spec.chat != nil {
		return t.client.Chat(ctx, spec.chat, func(r api.ChatResponse) error {
			s.out = append(s.out, r.Message.Content...)
			s.onChunk(r.Message.Content != "" || r.Message.Thinking != "", r.Done, &r.Metrics)
			return nil
		})
	}
	return t.client.Generate(ctx, spec.generate, func(r api.GenerateResponse) error {
		s.out = append(s.out, r.Response...)
		s.onChunk(r.Response != "" || r.Thinking != "", r.Done, &r.Metrics)
		return nil
	})
}

// classify maps how a call ended to an outcome and one of the fixed reasons.
// The context is checked first: the Ollama client ends a stream whose body
// fails to read as if it had ended normally, so a timeout or a cancel
// mid-stream surfaces only through the context.
func classify(parent, cctx context.Context, err error, s *stream) (observe.Outcome, observe.Reason) {
	if parent.Err() != nil {
		return observe.OutcomeCanceled, observe.ReasonCanceled
	}
	switch cause := context.Cause(cctx); {
	case errors.Is(cause, errFirstTokenTimeout):
		return observe.OutcomeError, observe.ReasonFirstTokenTimeout
	case errors.Is(cause, errIdleTimeout):
		return observe.OutcomeError, observe.ReasonIdleTimeout
	case errors.Is(cause, errRequestTimeout):
		return observe.OutcomeError, observe.ReasonRequestTimeout
	}
	if err != nil {
		return observe.OutcomeError, classifyErr(err, s.chunked)
	}
	if !s.obs.Done {
		if s.obs.Status >= http.StatusBadRequest {
			// An error answer without a body: the client reads no line
			// and reports nothing; the transport saw the status.
			return observe.OutcomeError, statusReason(s.obs.Status, "")
		}
		// Ended early, broke, or a line longer than the client's
		// buffer: the client stops reading without an error.
		return observe.OutcomeError, observe.ReasonStreamBroken
	}
	return observe.OutcomeSuccess, observe.ReasonNone
}

func classifyErr(err error, chunked bool) observe.Reason {
	var se api.StatusError
	var ae api.AuthorizationError
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tp *time.ParseError
	switch {
	case errors.As(err, &se):
		return statusReason(se.StatusCode, se.ErrorMessage)
	case errors.As(err, &ae):
		return observe.ReasonHTTP4xx
	case errors.As(err, &syn), errors.As(err, &typ), errors.As(err, &tp):
		// A JSON line that does not decode into Ollama's response type.
		return observe.ReasonStreamBroken
	case isNetErr(err) && chunked:
		return observe.ReasonStreamBroken
	case isNetErr(err):
		return observe.ReasonConnect
	default:
		// The client turns an "error" line of a 200 answer (and a line it
		// cannot read as JSON at all) into a plain error: the server failed
		// after accepting the request.
		return observe.ReasonServerError
	}
}

func statusReason(code int, msg string) observe.Reason {
	switch {
	case code == http.StatusNotFound && strings.Contains(msg, "not found"):
		return observe.ReasonModelNotFound
	case code == http.StatusServiceUnavailable:
		return observe.ReasonQueueFull
	case code >= 500:
		return observe.ReasonHTTP5xx
	default:
		return observe.ReasonHTTP4xx
	}
}

// isNetErr reports a failure to reach the server at all: refused, reset,
// unreachable, DNS or TLS, as opposed to an answer we did not like.
func isNetErr(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || errors.As(err, &ne) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// newCallSpec builds the request of one workflow step.
func newCallSpec(a *config.Agent, opts map[string]any, system, prompt string, history []api.Message) callSpec {
	var ka *api.Duration
	if a.KeepAlive != nil {
		ka = &api.Duration{Duration: *a.KeepAlive}
	}
	if a.API == config.APIGenerate {
		return callSpec{generate: &api.GenerateRequest{
			Model: a.Model, System: system, Prompt: prompt, Options: opts, KeepAlive: ka,
		}}
	}
	msgs := make([]api.Message, 0, len(history)+2)
	msgs = append(msgs, history...)
	if system != "" {
		msgs = append(msgs, api.Message{Role: "system", Content: system})
	}
	msgs = append(msgs, api.Message{Role: "user", Content: prompt})
	return callSpec{chat: &api.ChatRequest{Model: a.Model, Messages: msgs, Options: opts, KeepAlive: ka}}
}
