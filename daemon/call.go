package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
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
// per-chunk hot path: it reads the clock once, keeps the text and reports
// inter-token gaps without allocating beyond the output buffer.
type stream struct {
	rec     observe.Recorder
	start   time.Time
	last    time.Time
	watch   *time.Timer
	idle    time.Duration
	phase   *atomic.Int32 // phaseFirstToken until the first token, then phaseIdle
	out     strings.Builder
	obs     *observe.Request
	chunked bool // at least one chunk arrived
}

const (
	phaseFirstToken int32 = iota
	phaseIdle
)

// streamKey carries a call's *stream in its request context, for the
// target's transport to note the answer's status in.
type streamKey struct{}

func (s *stream) onChunk(content, thinking string, done bool, m *api.Metrics) {
	now := time.Now()
	s.chunked = true
	if content != "" || thinking != "" {
		if !s.obs.FirstToken {
			s.obs.FirstToken = true
			s.obs.TimeToFirst = now.Sub(s.start)
			s.phase.Store(phaseIdle)
		} else {
			s.rec.TokenGap(now.Sub(s.last))
		}
		s.last = now
		s.obs.ContentChunks++
		s.out.WriteString(content)
	}
	if s.phase.Load() == phaseIdle {
		s.watch.Reset(s.idle)
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
			s.obs.TimeToFirst = now.Sub(s.start)
		}
	}
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

	var phase atomic.Int32
	watch := time.AfterFunc(tm.FirstToken, func() {
		if phase.Load() == phaseFirstToken {
			cancel(errFirstTokenTimeout)
		} else {
			cancel(errIdleTimeout)
		}
	})
	defer watch.Stop()

	s := &stream{rec: rec, watch: watch, idle: tm.Idle, phase: &phase, obs: obs}
	cctx = context.WithValue(cctx, streamKey{}, s)
	s.start = time.Now()
	var err error
	switch {
	case spec.chat != nil:
		err = t.client.Chat(cctx, spec.chat, func(r api.ChatResponse) error {
			s.onChunk(r.Message.Content, r.Message.Thinking, r.Done, &r.Metrics)
			return nil
		})
	default:
		err = t.client.Generate(cctx, spec.generate, func(r api.GenerateResponse) error {
			s.onChunk(r.Response, r.Thinking, r.Done, &r.Metrics)
			return nil
		})
	}
	obs.Duration = time.Since(s.start)
	watch.Stop()

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
		return s.out.String(), nil
	}
	if cause := context.Cause(cctx); cause != nil && err == nil {
		err = cause
	}
	if err == nil {
		err = errors.New("stream ended without a done chunk")
	}
	return "", err
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
