package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"testing"

	"github.com/ollama/ollama/api"

	"github.com/chimeraforge/chimeraforge/observe"
)

func TestClassify(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	caused := func(cause error) context.Context {
		ctx, c := context.WithCancelCause(context.Background())
		c(cause)
		return ctx
	}
	bg := context.Background()
	done := func(d bool, chunked bool) *stream {
		return &stream{obs: &observe.Request{Done: d}, chunked: chunked}
	}
	dialErr := &url.Error{Op: "Post", URL: "http://127.0.0.1:1/api/chat", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	resetErr := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	for _, tc := range []struct {
		name    string
		parent  context.Context
		cctx    context.Context
		err     error
		s       *stream
		outcome observe.Outcome
		reason  observe.Reason
	}{
		{"success", bg, bg, nil, done(true, true), observe.OutcomeSuccess, observe.ReasonNone},
		{"no done chunk", bg, bg, nil, done(false, true), observe.OutcomeError, observe.ReasonStreamBroken},
		{"parent canceled wins", canceled, caused(errIdleTimeout), errors.New("x"), done(false, true), observe.OutcomeCanceled, observe.ReasonCanceled},
		{"first token timeout", bg, caused(errFirstTokenTimeout), context.Canceled, done(false, false), observe.OutcomeError, observe.ReasonFirstTokenTimeout},
		{"idle timeout, client saw nil", bg, caused(errIdleTimeout), nil, done(false, true), observe.OutcomeError, observe.ReasonIdleTimeout},
		{"request timeout", bg, caused(errRequestTimeout), context.DeadlineExceeded, done(false, true), observe.OutcomeError, observe.ReasonRequestTimeout},
		{"connection refused", bg, bg, dialErr, done(false, false), observe.OutcomeError, observe.ReasonConnect},
		{"reset mid-stream", bg, bg, resetErr, done(false, true), observe.OutcomeError, observe.ReasonStreamBroken},
		{"model not found", bg, bg, api.StatusError{StatusCode: 404, ErrorMessage: "model 'x' not found"}, done(false, false), observe.OutcomeError, observe.ReasonModelNotFound},
		{"plain 404", bg, bg, api.StatusError{StatusCode: 404, ErrorMessage: "404 page"}, done(false, false), observe.OutcomeError, observe.ReasonHTTP4xx},
		{"queue full", bg, bg, api.StatusError{StatusCode: 503, ErrorMessage: "server busy"}, done(false, false), observe.OutcomeError, observe.ReasonQueueFull},
		{"500", bg, bg, api.StatusError{StatusCode: 500}, done(false, false), observe.OutcomeError, observe.ReasonHTTP5xx},
		{"400", bg, bg, api.StatusError{StatusCode: 400}, done(false, false), observe.OutcomeError, observe.ReasonHTTP4xx},
		{"401", bg, bg, api.AuthorizationError{StatusCode: 401}, done(false, false), observe.OutcomeError, observe.ReasonHTTP4xx},
		{"bad json chunk", bg, bg, fmt.Errorf("decode: %w", &json.SyntaxError{}), done(false, true), observe.OutcomeError, observe.ReasonStreamBroken},
		{"error line mid-stream", bg, bg, errors.New("runner crashed"), done(false, true), observe.OutcomeError, observe.ReasonServerError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, r := classify(tc.parent, tc.cctx, tc.err, tc.s)
			if o != tc.outcome || r != tc.reason {
				t.Errorf("classify = (%s, %q), want (%s, %q)", o, r, tc.outcome, tc.reason)
			}
		})
	}
}
