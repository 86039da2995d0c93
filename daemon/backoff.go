package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/chimeraforge/chimeraforge/observe"
)

// gate is a target's backoff, shared by every agent and replica that sends
// to the target, so that a target that is down is not hammered by each of
// them in turn.
//
// While the target serves, the gate is open and admits every request. The
// first fault of the target (see targetFault) closes it for a window of
// backoff(n) = min(max, min·2ⁿ⁻¹), n being the windows opened since the
// target last served a request successfully, jittered to between half and
// all of it so that daemons and targets do not fall into step. Faults of
// requests admitted before that window opened do not open another: a round
// of concurrent failures backs off once, not once per failure. When the
// window is over, one request is let through as a probe; the others wait
// for its answer. An answer that is not a fault (any status but 429 and 5xx)
// opens the gate at once, so the waiting requests go as soon as the target
// answers, not when the probe's stream ends; a fault opens the next, longer
// window. A successful request starts the schedule over.
//
// So against a target that is down, the daemon sends one round of requests
// (its replicas), then one request per window, whatever its number of
// replicas: at most 1 + ⌊log₂(max/min)⌋ + ⌈t/(max/2)⌉ probes in time t.
type gate struct {
	min, max time.Duration

	mu      sync.Mutex
	rng     *rand.Rand
	streak  int           // windows opened since the last success
	epoch   uint64        // windows opened ever; tickets carry the one they were admitted in
	closed  bool          // requests wait for the window to end, then for the probe
	until   time.Time     // end of the current window
	probing bool          // the probe of the current window is in flight
	wake    chan struct{} // closed and replaced whenever waiters should look again
}

// ticket is an attempt's admission through a gate, which it reports its end
// with.
type ticket struct {
	epoch uint64
	probe bool
}

func newGate(name string, minWait, maxWait time.Duration) *gate {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return &gate{
		min: minWait, max: max(minWait, maxWait),
		rng:  rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), h.Sum64())),
		wake: make(chan struct{}),
	}
}

// enter admits an attempt at now, or returns when to look again: at until
// (when not zero) or when wake is closed, whichever comes first.
func (g *gate) enter(now time.Time) (tk ticket, ok bool, until time.Time, wake <-chan struct{}) {
	if g == nil {
		return ticket{}, true, time.Time{}, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case !g.closed:
		return ticket{epoch: g.epoch}, true, time.Time{}, nil
	case now.Before(g.until):
		return ticket{}, false, g.until, g.wake
	case !g.probing:
		g.probing = true
		return ticket{epoch: g.epoch, probe: true}, true, time.Time{}, nil
	default:
		return ticket{}, false, time.Time{}, g.wake
	}
}

// answered records that the target answered a request with a status that
// is not a fault: it is reachable and serving, so the gate opens.
func (g *gate) answered() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.openLocked()
}

// fault records a fault of the target on the attempt tk, which ended at now.
// It reports whether the fault opened a new backoff window, how many windows
// the target has opened since it last succeeded, and how long this one is.
func (g *gate) fault(tk ticket, now time.Time) (opened bool, streak int, wait time.Duration) {
	if g == nil {
		return false, 0, 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if tk.epoch != g.epoch {
		return false, g.streak, 0 // a window opened since this attempt was admitted
	}
	g.streak++
	g.epoch++
	wait = g.windowLocked(g.streak)
	g.closed, g.probing, g.until = true, false, now.Add(wait)
	g.broadcastLocked()
	return true, g.streak, wait
}

// succeeded records a successful request: the gate opens and the backoff
// schedule starts over. It reports the windows the target had opened since
// its previous success.
func (g *gate) succeeded() (streak int) {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	streak, g.streak = g.streak, 0
	g.openLocked()
	return streak
}

// release ends an attempt that was neither a fault nor a success of the
// target (canceled, or failed for a reason of its own): a probe's place goes
// to the next waiter.
func (g *gate) release(tk ticket) {
	if g == nil || !tk.probe {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.probing && g.epoch == tk.epoch {
		g.probing = false
		g.broadcastLocked()
	}
}

func (g *gate) openLocked() {
	if g.closed {
		g.closed, g.probing = false, false
		g.broadcastLocked()
	}
}

func (g *gate) broadcastLocked() {
	close(g.wake)
	g.wake = make(chan struct{})
}

// windowLocked is the length of the n-th window: backoff(n) jittered to
// between half and all of it.
func (g *gate) windowLocked(n int) time.Duration {
	b := backoff(g.min, g.max, n)
	return b/2 + time.Duration(g.rng.Int64N(int64(b/2)+1))
}

// backoff is min·2ⁿ⁻¹, at most max.
func backoff(minWait, maxWait time.Duration, n int) time.Duration {
	b := minWait
	for i := 1; i < n && b < maxWait; i++ {
		b *= 2
	}
	return min(b, maxWait)
}

// waitGates waits until ctx ends (false), until (when not zero) passes, or
// one of wakes is closed.
func waitGates(ctx context.Context, until time.Time, wakes []<-chan struct{}) bool {
	var timer <-chan time.Time
	if !until.IsZero() {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		timer = t.C
	}
	if len(wakes) == 1 {
		select {
		case <-ctx.Done():
			return false
		case <-timer:
		case <-wakes[0]:
		}
		return true
	}
	cases := make([]reflect.SelectCase, 0, len(wakes)+2)
	cases = append(cases,
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer)})
	for _, w := range wakes {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w)})
	}
	chosen, _, _ := reflect.Select(cases)
	return chosen != 0
}

// targetFault reports whether a failed request says the target itself is
// failing — unreachable, refusing (429, 5xx, 503) or producing nothing
// before its timeout — rather than this request or its agent (a missing
// model, a bad request, a stream that broke after tokens came). Faults close
// the target's gate.
func targetFault(obs *observe.Request) bool {
	if obs.Outcome != observe.OutcomeError {
		return false
	}
	switch obs.Reason {
	case observe.ReasonConnect, observe.ReasonHTTP5xx, observe.ReasonQueueFull, observe.ReasonFirstTokenTimeout:
		return true
	case observe.ReasonHTTP4xx:
		return obs.Status == http.StatusTooManyRequests
	case observe.ReasonRequestTimeout:
		return !obs.FirstToken
	}
	return false
}

// faultStatus reports the statuses that are faults of the target.
func faultStatus(code int) bool {
	return code == http.StatusTooManyRequests || code >= 500
}

// retryable reports whether a failed attempt may be sent again: only when
// nothing was generated yet — the server could not be reached, or it
// answered 429 or 5xx (503 included) before streaming — and a new attempt
// may fare differently. A TLS certificate or protocol mismatch fails the
// same way every time, so it is not retried.
func retryable(obs *observe.Request, err error) bool {
	if obs.Outcome != observe.OutcomeError {
		return false
	}
	switch obs.Reason {
	case observe.ReasonConnect:
		return !misconfigured(err)
	case observe.ReasonHTTP5xx, observe.ReasonQueueFull:
		return true
	case observe.ReasonHTTP4xx:
		return obs.Status == http.StatusTooManyRequests
	}
	return false
}

// misconfigured reports a connection failure that only a change of
// configuration (or of the server's certificate) can fix: the certificate is
// not trusted or not for this host, or the target's scheme does not match
// the server's (an https:// URL to a plain HTTP port).
func misconfigured(err error) bool {
	if err == nil {
		return false
	}
	var (
		verify   *tls.CertificateVerificationError
		record   tls.RecordHeaderError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &record) || errors.As(err, &unknown) ||
		errors.As(err, &hostname) || errors.As(err, &invalid) ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}
