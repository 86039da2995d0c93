package main

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chimeraforge/chimeraforge/internal/hostile"
	"github.com/chimeraforge/chimeraforge/observe"
)

// faultTimeouts are small, so that every timeout fires within a second;
// faults last seconds, longer than any of them.
const faultTimeouts = "{connect: 300ms, first_token: 500ms, idle: 400ms, request: 1500ms}"

// faultConfig points one agent (two replicas, one step) at url.
func faultConfig(url string) string {
	return simFaultConfig(url, "")
}

// simFaultConfig is faultConfig with a simulation section (for sim:// URLs).
func simFaultConfig(url, simulation string) string {
	return fmt.Sprintf(`
global: {shutdown_timeout: 3s}
%s
targets:
  - name: h
    url: %q
    timeouts: %s
    retry: {max_attempts: 2, backoff_min: 50ms, backoff_max: 200ms}
agents:
  - {name: a, target: h, model: m, workflow: [{name: ask, prompt: hi}]}
workloads:
  - {name: w, agents: [{agent: a, replicas: 2}], calibration: {at_start: false}}
`, simulation, url, faultTimeouts)
}

// fault is one row of the fault matrix (docs/reliability.md): how it is
// injected (the daemon's configuration, and how the fault stops: nil when
// only a change of configuration can end it), the one reason it must be
// counted under, and whether it is retried.
type fault struct {
	name    string
	inject  func(t *testing.T) (config string, heal func(t *testing.T))
	reason  observe.Reason
	retried bool
}

// at is a fault whose target URL is url, healed by heal.
func at(url string, heal func(*testing.T)) (string, func(*testing.T)) {
	return faultConfig(url), heal
}

// scripted serves sc, and a healthy answer once healed.
func scripted(sc ...hostile.Action) func(t *testing.T) (string, func(*testing.T)) {
	return func(t *testing.T) (string, func(*testing.T)) {
		s := hostile.Start(t)
		s.Set(sc)
		return at(s.URL(), func(*testing.T) { s.Set(hostile.Answer(3, 0)) })
	}
}

// simulated injects the simulator's own faults (simulation.instances[].
// faults, as a configuration would), on every request.
func simulated(faults string) func(t *testing.T) (string, func(*testing.T)) {
	return func(*testing.T) (string, func(*testing.T)) {
		// A slot per replica and a fast GPU: nothing queues, so the fault
		// is the only thing that can fail.
		sim := fmt.Sprintf(`simulation:
  gpus: [{name: g, decode_rate: 2000}]
  instances: [{name: s, gpu: g, num_parallel: 2, load_delay: 10ms, models: [{name: m, size_bytes: 1000000}], faults: %s}]`, faults)
		return simFaultConfig("sim://s", sim), nil
	}
}

var faults = []fault{
	{"connection refused", func(t *testing.T) (string, func(*testing.T)) {
		s := hostile.Start(t)
		s.Stop()
		return at(s.URL(), func(t *testing.T) {
			if err := s.Restart(); err != nil {
				t.Fatal(err)
			}
		})
	}, observe.ReasonConnect, true},
	{"reset on accept", func(t *testing.T) (string, func(*testing.T)) {
		s := hostile.Start(t)
		s.SetAccept(hostile.AcceptReset)
		return at(s.URL(), func(*testing.T) { s.SetAccept(hostile.AcceptServe) })
	}, observe.ReasonConnect, true},
	{"connect timeout", func(t *testing.T) (string, func(*testing.T)) {
		return at("http://"+hostile.Backlogged(t), nil)
	}, observe.ReasonConnect, true},
	{"TLS handshake hangs", func(t *testing.T) (string, func(*testing.T)) {
		s := hostile.StartTLS(t)
		s.SetAccept(hostile.AcceptHang)
		return at(s.URL(), nil)
	}, observe.ReasonConnect, true},
	{"untrusted certificate", func(t *testing.T) (string, func(*testing.T)) {
		return at(hostile.StartTLS(t).URL(), nil)
	}, observe.ReasonConnect, false},
	{"http URL to a TLS port", func(t *testing.T) (string, func(*testing.T)) {
		return at("http://"+hostile.StartTLS(t).Addr(), nil)
	}, observe.ReasonHTTP4xx, false},
	{"https URL to a plain port", func(t *testing.T) (string, func(*testing.T)) {
		return at("https://"+hostile.Start(t).Addr(), nil)
	}, observe.ReasonConnect, false},
	{"closed before the status line", scripted(hostile.Close()), observe.ReasonConnect, true},
	{"slow headers", scripted(hostile.Wait(2*time.Second), hostile.Tokens(1, 0), hostile.Done()), observe.ReasonFirstTokenTimeout, false},
	{"stall before the first token", scripted(hostile.Status(200, ""), hostile.Wait(2*time.Second), hostile.Tokens(1, 0), hostile.Done()), observe.ReasonFirstTokenTimeout, false},
	{"stall mid-stream", scripted(hostile.Tokens(2, 0), hostile.Wait(2*time.Second), hostile.Done()), observe.ReasonIdleTimeout, false},
	{"stream that never ends", scripted(hostile.Tokens(100, 100*time.Millisecond), hostile.Done()), observe.ReasonRequestTimeout, false},
	{"line not JSON", scripted(hostile.Tokens(2, 0), hostile.Line(`{"model":"m","message":{"con`), hostile.Done()), observe.ReasonServerError, false},
	{"error line mid-stream", scripted(hostile.Tokens(1, 0), hostile.Line(`{"error":"llama runner process has terminated"}`)), observe.ReasonServerError, false},
	{"chunk of the wrong shape", scripted(hostile.Tokens(1, 0), hostile.Line(`{"message":"not an object"}`), hostile.Done()), observe.ReasonStreamBroken, false},
	{"oversize line", scripted(hostile.Tokens(1, 0), hostile.Oversize(hostile.ClientLineLimit), hostile.Done()), observe.ReasonStreamBroken, false},
	{"closed mid-stream", scripted(hostile.Tokens(2, 0), hostile.Close()), observe.ReasonStreamBroken, false},
	{"reset mid-stream", scripted(hostile.Tokens(2, 0), hostile.Reset()), observe.ReasonStreamBroken, false},
	{"closed after the status line", scripted(hostile.Status(200, ""), hostile.Close()), observe.ReasonStreamBroken, false},
	{"ended without the final chunk", scripted(hostile.Tokens(2, 0)), observe.ReasonStreamBroken, false},
	{"404 model not found", scripted(hostile.Status(404, `{"error":"model \"m\" not found, try pulling it first"}`)), observe.ReasonModelNotFound, false},
	{"404 without a body", scripted(hostile.Status(404, "")), observe.ReasonHTTP4xx, false},
	{"429 with a body", scripted(hostile.Status(429, `{"error":"rate limited"}`)), observe.ReasonHTTP4xx, true},
	{"429 without a body", scripted(hostile.Status(429, "")), observe.ReasonHTTP4xx, true},
	{"500 with a body", scripted(hostile.Status(500, `{"error":"llama runner process has terminated: signal: killed"}`)), observe.ReasonHTTP5xx, true},
	{"500 without a body", scripted(hostile.Status(500, "")), observe.ReasonHTTP5xx, true},
	{"503 with a body", scripted(hostile.Status(503, `{"error":"server busy, please try again.  maximum pending requests exceeded"}`)), observe.ReasonQueueFull, true},
	{"503 without a body", scripted(hostile.Status(503, "")), observe.ReasonQueueFull, true},
	{"simulator error_ratio", simulated("{error_ratio: 1}"), observe.ReasonHTTP5xx, true},
	{"simulator stall_ratio", simulated("{stall_ratio: 1, stall_duration: 2s}"), observe.ReasonIdleTimeout, false},
	{"simulator drop_ratio", simulated("{drop_ratio: 1}"), observe.ReasonStreamBroken, false},
}

// TestFaults runs the daemon against each fault of the matrix and checks,
// through /metrics only: the fault is counted under its one reason, retried
// or not as documented, the daemon keeps serving /metrics and /healthz, and
// once the fault stops requests succeed again without a restart.
func TestFaults(t *testing.T) {
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			cfg, heal := f.inject(t)
			r := startDaemon(t, cfg, false)
			reason := map[string]string{"reason": string(f.reason)}
			eventually(t, 15*time.Second, fmt.Sprintf("2 requests failed with %s (and a retry, where retried)", f.reason), func() bool {
				m := r.scrape(t)
				return m.sum("chimeraforge_request_errors_total", reason) >= 2 &&
					(!f.retried || m.sum("chimeraforge_request_retries_total", reason) >= 1)
			})
			m := r.scrape(t)
			for _, other := range observe.Reasons {
				if n := m.sum("chimeraforge_request_errors_total", map[string]string{"reason": string(other)}); other != f.reason && n != 0 {
					t.Errorf("%v requests failed with %s, want only %s", n, other, f.reason)
				}
			}
			if ok := m.sum("chimeraforge_requests_total", map[string]string{"outcome": "success"}); ok != 0 {
				t.Errorf("%v requests succeeded during the fault", ok)
			}
			retries := m.sum("chimeraforge_request_retries_total", nil)
			if !f.retried && retries != 0 {
				t.Errorf("%v retries, want none for %s", retries, f.reason)
			}
			if other := retries - m.sum("chimeraforge_request_retries_total", reason); other != 0 {
				t.Errorf("%v retries for reasons other than %s", other, f.reason)
			}
			if code, _ := r.get(t, "/healthz"); code != http.StatusOK {
				t.Errorf("/healthz %d during the fault", code)
			}
			if heal == nil {
				return
			}
			heal(t)
			eventually(t, 15*time.Second, "requests to succeed again", func() bool {
				return r.scrape(t).sum("chimeraforge_requests_total", map[string]string{"outcome": "success"}) >= 2
			})
			// A failing streak is logged once, and so is its end. A
			// replica's faulty request still in flight when the other
			// replica succeeds again starts a second, short streak.
			m = r.scrape(t)
			failedRuns := m.sum("chimeraforge_agent_runs_total", map[string]string{"outcome": "error"})
			warned := logCount(r, "warn", "agent run failing")
			recovered := logCount(r, "info", "agent runs succeeding again")
			if failedRuns > 0 && (warned < 1 || warned > 2 || recovered != warned) {
				t.Errorf(`%v failed runs: "agent run failing" logged %d times at warn and "agent runs succeeding again" %d times, want once per streak (1 or 2 streaks), each ended`,
					failedRuns, warned, recovered)
			}
		})
	}
}

// TestFaultServerRestartsMidWorkload kills the server under long streams
// and brings it back on the same port: the streams cut short count as
// stream_broken, the attempts while it is down as connect (and are retried),
// nothing else fails, and the workload recovers by itself.
func TestFaultServerRestartsMidWorkload(t *testing.T) {
	s := hostile.Start(t)
	s.Set(hostile.Answer(30, 20*time.Millisecond))
	r := startDaemon(t, faultConfig(s.URL()), false)
	eventually(t, 10*time.Second, "tokens streaming", func() bool {
		return r.scrape(t).sum("chimeraforge_inter_token_latency_seconds", nil) >= 10
	})
	s.Stop()
	// Down for a few backoff windows: the target's streak is logged.
	eventually(t, 10*time.Second, "the broken streams and refused connections to be counted", func() bool {
		m := r.scrape(t)
		return m.sum("chimeraforge_request_errors_total", map[string]string{"reason": "stream_broken"}) >= 1 &&
			m.sum("chimeraforge_request_errors_total", map[string]string{"reason": "connect"}) >= 3
	})
	if code, _ := r.get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d while the server is down", code)
	}
	before := r.scrape(t).sum("chimeraforge_requests_total", map[string]string{"outcome": "success"})
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "successes after the restart", func() bool {
		return r.scrape(t).sum("chimeraforge_requests_total", map[string]string{"outcome": "success"}) >= before+2
	})
	m := r.scrape(t)
	errs := m.sum("chimeraforge_request_errors_total", nil)
	known := m.sum("chimeraforge_request_errors_total", map[string]string{"reason": "stream_broken"}) +
		m.sum("chimeraforge_request_errors_total", map[string]string{"reason": "connect"})
	if errs != known {
		t.Errorf("%v errors, %v of them stream_broken or connect: want nothing else", errs, known)
	}
	if m.sum("chimeraforge_request_retries_total", map[string]string{"reason": "stream_broken"}) != 0 {
		t.Error("a broken stream was retried")
	}
	if n := logCount(r, "warn", "target failing; every request to it backs off"); n != 1 {
		t.Errorf("the target's failing streak was logged %d times at warn, want once", n)
	}
	if n := logCount(r, "info", "target serving again"); n != 1 {
		t.Errorf("the target's recovery was logged %d times, want once", n)
	}
}

// logCount counts the daemon's JSON log lines at level with message msg.
func logCount(r *running, level, msg string) int {
	n := 0
	for _, line := range strings.Split(r.log.String(), "\n") {
		if strings.Contains(line, `"level":"`+level+`"`) && strings.Contains(line, `"msg":"`+msg+`"`) {
			n++
		}
	}
	return n
}

// TestFaultsKeepUnrelatedTargetsWorking: a workload whose agent spreads
// over a dead target and a healthy one keeps succeeding, and the dead one
// gets one round, then one probe per backoff window.
func TestFaultsKeepUnrelatedTargetsWorking(t *testing.T) {
	live := hostile.Start(t)
	live.Set(hostile.Answer(2, 5*time.Millisecond))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	r := startDaemon(t, fmt.Sprintf(`
targets:
  - {name: live, url: %q, timeouts: %s}
  - {name: dead, url: "http://%s", timeouts: %s, retry: {backoff_min: 200ms, backoff_max: 10s}}
agents:
  - {name: a, targets: [dead, live], model: m, workflow: [{name: ask, prompt: hi}]}
workloads:
  - {name: w, agents: [{agent: a, replicas: 4}], calibration: {at_start: false}}
`, live.URL(), faultTimeouts, dead, faultTimeouts), false)
	time.Sleep(2 * time.Second)
	m := r.scrape(t)
	toDead := m.sum("chimeraforge_requests_total", map[string]string{"target": "dead"})
	// 4 replicas' first round, then windows of at least 100, 200, 400,
	// 800 ms: at most 4 more in 2 s.
	if toDead == 0 || toDead > 8 {
		t.Errorf("%v requests to the dead target in 2 s, want 1..8", toDead)
	}
	if ok := m.sum("chimeraforge_requests_total", map[string]string{"target": "live", "outcome": "success"}); ok < 20 {
		t.Errorf("%v successes on the live target, want it to keep working (>= 20)", ok)
	}
	if failed := m.sum("chimeraforge_agent_runs_total", map[string]string{"outcome": "error"}); failed != 0 {
		t.Errorf("%v runs failed: the dead target's attempts must be retried on the live one", failed)
	}
}
