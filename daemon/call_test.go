package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"syscall"
	"testing"
	"time"

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
	status := func(code int) *stream {
		return &stream{obs: &observe.Request{Status: code}}
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
		{"line not JSON at all", bg, bg, errors.New(`{"model":"m","message":{"con`), done(false, true), observe.OutcomeError, observe.ReasonServerError},
		{"chunk of the wrong type", bg, bg, &json.UnmarshalTypeError{Value: "string", Field: "message"}, done(false, true), observe.OutcomeError, observe.ReasonStreamBroken},
		{"chunk with a bad time", bg, bg, &time.ParseError{Value: "bad"}, done(false, true), observe.OutcomeError, observe.ReasonStreamBroken},
		// The client reports no error for an error answer without a body.
		{"bare 404", bg, bg, nil, status(404), observe.OutcomeError, observe.ReasonHTTP4xx},
		{"bare 429", bg, bg, nil, status(429), observe.OutcomeError, observe.ReasonHTTP4xx},
		{"bare 500", bg, bg, nil, status(500), observe.OutcomeError, observe.ReasonHTTP5xx},
		{"bare 503", bg, bg, nil, status(503), observe.OutcomeError, observe.ReasonQueueFull},
		{"200 and nothing else", bg, bg, nil, status(200), observe.OutcomeError, observe.ReasonStreamBroken},
		{"TLS certificate", bg, bg, &url.Error{Op: "Post", Err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}}, done(false, false), observe.OutcomeError, observe.ReasonConnect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, r := classify(tc.parent, tc.cctx, tc.err, tc.s)
			if o != tc.outcome || r != tc.reason {
				t.Errorf("classify = (%s, %q), want (%s, %q)", o, r, tc.outcome, tc.reason)
			}
		})
	}
}

// TestRetryAndFaultDecisions: what is sent again (nothing generated yet, and
// a second try may fare differently) and what closes the target's gate
// (the target itself is failing).
func TestRetryAndFaultDecisions(t *testing.T) {
	refused := &url.Error{Op: "Post", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	untrusted := &url.Error{Op: "Post", Err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}}
	scheme := &url.Error{Op: "Post", Err: errors.New("http: server gave HTTP response to HTTPS client")}
	for _, tc := range []struct {
		name         string
		reason       observe.Reason
		status       int
		firstToken   bool
		err          error
		retry, fault bool
	}{
		{"refused", observe.ReasonConnect, 0, false, refused, true, true},
		{"untrusted certificate", observe.ReasonConnect, 0, false, untrusted, false, true},
		{"https to a plain port", observe.ReasonConnect, 0, false, scheme, false, true},
		{"429", observe.ReasonHTTP4xx, 429, false, nil, true, true},
		{"400", observe.ReasonHTTP4xx, 400, false, nil, false, false},
		{"500", observe.ReasonHTTP5xx, 500, false, nil, true, true},
		{"503", observe.ReasonQueueFull, 503, false, nil, true, true},
		{"model not found", observe.ReasonModelNotFound, 404, false, nil, false, false},
		{"first token timeout", observe.ReasonFirstTokenTimeout, 200, false, nil, false, true},
		{"request timeout before a token", observe.ReasonRequestTimeout, 200, false, nil, false, true},
		{"request timeout after tokens", observe.ReasonRequestTimeout, 200, true, nil, false, false},
		{"idle timeout", observe.ReasonIdleTimeout, 200, true, nil, false, false},
		{"stream broken", observe.ReasonStreamBroken, 200, true, nil, false, false},
		{"server error", observe.ReasonServerError, 200, true, nil, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := &observe.Request{Outcome: observe.OutcomeError, Reason: tc.reason, Status: tc.status, FirstToken: tc.firstToken}
			if got := retryable(obs, tc.err); got != tc.retry {
				t.Errorf("retryable = %v, want %v", got, tc.retry)
			}
			if got := targetFault(obs); got != tc.fault {
				t.Errorf("targetFault = %v, want %v", got, tc.fault)
			}
			if tc.retry && !slices.Contains(observe.RetryReasons, tc.reason) {
				t.Errorf("retried reason %q is not in observe.RetryReasons", tc.reason)
			}
		})
	}
	canceled := &observe.Request{Outcome: observe.OutcomeCanceled, Reason: observe.ReasonCanceled}
	if retryable(canceled, nil) || targetFault(canceled) {
		t.Error("a canceled request is neither retried nor a fault")
	}
}
