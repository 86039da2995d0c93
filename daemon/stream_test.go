package daemon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chimeraforge/chimeraforge/config"
	"github.com/chimeraforge/chimeraforge/exporters"
	"github.com/chimeraforge/chimeraforge/observe"
)

// step is one line of a scripted answer, written after a pause.
type step struct {
	after time.Duration
	line  string
}

// scriptServer streams script as a 200 NDJSON answer, flushing each line,
// and returns a target for it with the given idle timeout.
func scriptServer(t *testing.T, idle time.Duration, script []step) *target {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for _, s := range script {
			select {
			case <-time.After(s.after):
			case <-r.Context().Done():
				return
			}
			_, _ = io.WriteString(w, s.line+"\n")
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(srv.Close)
	return testTarget(t, srv.URL, idle)
}

func testTarget(t *testing.T, raw string, idle time.Duration) *target {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	tg := newTarget(config.Target{Name: "t", URL: raw, NumParallel: 1,
		Timeouts: config.Timeouts{Connect: time.Second, FirstToken: 5 * time.Second, Idle: idle, Request: time.Minute}}, u)
	t.Cleanup(tg.close)
	return tg
}

// scriptedCall makes one chat call on tg, recording its gaps.
func scriptedCall(t *testing.T, tg *target) (observe.Request, []time.Duration, string, error) {
	t.Helper()
	m, err := exporters.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rec := &capturing{Recorder: m.Recorder(fuzzLabels)}
	obs := observe.Request{Labels: fuzzLabels}
	spec := newCallSpec(&config.Agent{Name: "a", Model: "m", API: config.APIChat}, nil, "", "hi", nil)
	out, err := call(context.Background(), tg, spec, rec, &obs, thresholds{modelReload: time.Second, queueWait: time.Second}, false)
	return obs, rec.gaps, out, err
}

const (
	finalChunk = `{"model":"m","created_at":"2026-11-27T00:00:00Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","eval_count":3}`
	emptyChunk = `{"model":"m","created_at":"2026-11-27T00:00:00Z","message":{"role":"assistant","content":""},"done":false}`
)

func textChunk(s string) string {
	return `{"model":"m","created_at":"2026-11-27T00:00:00Z","message":{"role":"assistant","content":"` + s + `"},"done":false}`
}

// TestTokenTimings streams chunks spaced on a loopback server: the time to
// the last token and the longest gap between tokens are measured on the
// same clock readings as the time to first token and the recorded gaps,
// chunks without text do not count, and chunks read by the fast path and by
// the client's decoding are measured alike.
func TestTokenTimings(t *testing.T) {
	tg := scriptServer(t, time.Minute, []step{
		{0, textChunk("a")},
		{30 * time.Millisecond, `{"Message":{"Content":"b"}}`}, // the slow path
		{80 * time.Millisecond, textChunk("c")},
		{20 * time.Millisecond, emptyChunk},
		{50 * time.Millisecond, finalChunk},
	})
	obs, gaps, out, err := scriptedCall(t, tg)
	if err != nil || out != "abc" {
		t.Fatalf("call: %v, output %q", err, out)
	}
	if obs.ContentChunks != 3 || len(gaps) != 2 {
		t.Fatalf("%d chunks with text, %d gaps; want 3 and 2", obs.ContentChunks, len(gaps))
	}
	if want := max(gaps[0], gaps[1]); obs.MaxTokenGap != want {
		t.Errorf("MaxTokenGap %s, want the longest recorded gap %s (gaps %v)", obs.MaxTokenGap, want, gaps)
	}
	if want := obs.TimeToFirst + gaps[0] + gaps[1]; obs.LastToken != want {
		t.Errorf("LastToken %s, want TTFT %s plus the gaps %v = %s", obs.LastToken, obs.TimeToFirst, gaps, want)
	}
	// The server paused 30ms and 80ms; the client may have read a chunk
	// late, which shortens the gap after it.
	if gaps[0] < 10*time.Millisecond || obs.MaxTokenGap < 60*time.Millisecond || obs.MaxTokenGap != gaps[1] {
		t.Errorf("gaps %v: want the second, about 80ms, to be the longest, the first about 30ms", gaps)
	}
	if tail := obs.Duration - obs.LastToken; tail < 40*time.Millisecond {
		t.Errorf("LastToken %s is %s before the end (%s), want about 70ms: chunks without text moved it", obs.LastToken, tail, obs.Duration)
	}

	for _, tc := range []struct {
		name   string
		script []step
		first  bool
	}{
		{"one token", []step{{0, textChunk("a")}, {20 * time.Millisecond, finalChunk}}, true},
		{"no token", []step{{0, emptyChunk}, {20 * time.Millisecond, finalChunk}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs, gaps, _, err := scriptedCall(t, scriptServer(t, time.Minute, tc.script))
			if err != nil {
				t.Fatal(err)
			}
			if obs.FirstToken != tc.first || len(gaps) != 0 || obs.MaxTokenGap != 0 {
				t.Fatalf("first token %v, gaps %v, MaxTokenGap %s; want %v, none, 0", obs.FirstToken, gaps, obs.MaxTokenGap, tc.first)
			}
			want := time.Duration(0)
			if tc.first {
				want = obs.TimeToFirst
			}
			if obs.LastToken != want {
				t.Errorf("LastToken %s, want %s", obs.LastToken, want)
			}
		})
	}
}

// TestIdleTimeoutCountsFromTheLastChunk: chunks that keep coming within the
// idle timeout keep a stream alive far longer than the timeout, and a stall
// ends it one idle timeout after its last chunk.
func TestIdleTimeoutCountsFromTheLastChunk(t *testing.T) {
	const idle = 150 * time.Millisecond
	var script []step
	for range 8 {
		script = append(script, step{60 * time.Millisecond, textChunk("t")})
	}
	tg := scriptServer(t, idle, append(script, step{60 * time.Millisecond, finalChunk}))
	obs, _, _, err := scriptedCall(t, tg)
	if err != nil || obs.Outcome != observe.OutcomeSuccess || obs.Duration < 3*idle {
		t.Fatalf("steady stream of %s: %v (%s), want a success", obs.Duration, err, obs.Reason)
	}

	tg = scriptServer(t, idle, []step{{0, textChunk("a")}, {100 * time.Millisecond, emptyChunk}, {time.Second, finalChunk}})
	obs, _, _, _ = scriptedCall(t, tg)
	if obs.Reason != observe.ReasonIdleTimeout {
		t.Fatalf("stalled stream ended with %q, want %q", obs.Reason, observe.ReasonIdleTimeout)
	}
	// The empty chunk came about 100ms after the token: had the timeout
	// counted from the token, it would have come 50ms after that chunk.
	if sinceLast := obs.Duration - obs.LastToken - 100*time.Millisecond; sinceLast < idle-50*time.Millisecond || sinceLast > idle+700*time.Millisecond {
		t.Errorf("timed out %s after the last chunk, want about %s", sinceLast, idle)
	}
}

// exchange is what one call sent and what it made of the answer.
type exchange struct {
	method, path, contentType, accept, userAgent, body string
	contentLength                                      int64
	err                                                string
	out                                                string
	status, chunks                                     int
	first, done                                        bool
	evalCount                                          int
}

// TestSendMatchesClient sends the same requests through send and through
// the Ollama client, against the same answers: the same request on the
// wire, and the same errors, text and observations, for every kind of line
// and answer.
func TestSendMatchesClient(t *testing.T) {
	genFinal := `{"model":"m","created_at":"2026-11-27T00:00:00Z","response":"","done":true,"eval_count":2}`
	huge := func(n int) string {
		return `{"message":{"content":"` + strings.Repeat("a", n-len(`{"message":{"content":""}}`)) + `"}}`
	}
	for _, tc := range []struct {
		name     string
		status   int
		generate bool
		body     string
	}{
		{"chat", 200, false, textChunk("a") + "\n" + textChunk("b") + "\n" + finalChunk + "\n"},
		{"generate", 200, true, `{"model":"m","created_at":"2026-11-27T00:00:00Z","response":"x","done":false}` + "\n" +
			`{"response":"","thinking":"t","done":false}` + "\n" + genFinal + "\n"},
		{"escapes, unicode, thinking", 200, false, `{"message":{"content":"\u00e9\n\ud83d\ude00\"","thinking":"x"}}` + "\n" +
			`{"message":{"content":"","thinking":"y"}}` + "\n" + finalChunk + "\n"},
		{"lines the fast path refuses", 200, false, `{"MESSAGE":{"content":"a"}}` + "\n" + `{"message":{"content":"b","content":"c"}}` + "\n" +
			`{"message":{"content":"\ud83d"}}` + "\n" + "{\"message\":{\"content\":\"\xff\"}}\n" + `{"message":{"content":"d"},"done_reason":""}` + "\n" + finalChunk},
		{"CRLF, no final newline", 200, false, textChunk("a") + "\r\n" + finalChunk},
		{"empty line", 200, false, textChunk("a") + "\n\n" + finalChunk + "\n"},
		{"error line", 200, false, textChunk("a") + "\n" + `{"error":"runner crashed"}` + "\n"},
		{"error line of another type", 200, false, `{"error":5}` + "\n"},
		{"empty error", 200, false, `{"error":""}` + "\n" + finalChunk + "\n"},
		{"not JSON", 200, false, textChunk("a") + "\n" + `{"model":"m","message":{"con` + "\n" + finalChunk + "\n"},
		{"wrong shape", 200, false, `{"message":"not an object"}` + "\n"},
		{"bad time", 200, false, `{"created_at":"2026-02-30T00:00:00Z","message":{"content":"x"}}` + "\n"},
		{"lines after done", 200, false, finalChunk + "\n" + textChunk("late") + "\n"},
		{"largest line", 200, false, huge(clientLineLimit-1) + "\n" + finalChunk + "\n"},
		{"line too long", 200, false, textChunk("a") + "\n" + huge(clientLineLimit) + "\n" + finalChunk + "\n"},
		{"empty 200", 200, false, ""},
		{"500 with an error", 500, false, `{"error":"boom"}`},
		{"404 text", 404, false, "404 page not found\n"},
		{"401 with a sign-in URL", 401, false, `{"error":"unauthorized","signin_url":"https://ollama.com/connect"}`},
		{"401 text", 401, false, "no"},
		{"503 empty", 503, false, ""},
		{"429 chunk-shaped", 429, false, textChunk("a") + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var got exchange
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				got = exchange{method: r.Method, path: r.URL.Path, contentType: r.Header.Get("Content-Type"), accept: r.Header.Get("Accept"),
					userAgent: r.Header.Get("User-Agent"), body: string(b), contentLength: r.ContentLength}
				mu.Unlock()
				w.Header().Set("Content-Type", "application/x-ndjson")
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			tg := testTarget(t, srv.URL+"/prefix", time.Minute)
			apiName := config.APIChat
			if tc.generate {
				apiName = config.APIGenerate
			}
			spec := newCallSpec(&config.Agent{Name: "a", Model: "m", API: apiName}, map[string]any{"num_predict": 4}, "be brief", "hi <b>&</b>", nil)
			run := func(send func(context.Context, callSpec, *stream) error) exchange {
				s := &stream{rec: nopRecorder{}, idle: time.Hour, cancel: func(error) {}, obs: &observe.Request{}}
				s.start = time.Now()
				s.watch = time.AfterFunc(time.Hour, func() {})
				defer s.watch.Stop()
				err := send(context.WithValue(context.Background(), streamKey{}, s), spec, s)
				mu.Lock()
				x := got
				mu.Unlock()
				if err != nil {
					x.err = fmt.Sprintf("%T %v", err, err)
				}
				x.out, x.status, x.chunks = string(s.out), s.obs.Status, s.obs.ContentChunks
				x.first, x.done, x.evalCount = s.obs.FirstToken, s.obs.Done, s.obs.EvalCount
				return x
			}
			ours, theirs := run(tg.send), run(tg.sendViaClient)
			if ours != theirs {
				t.Errorf("send:\n%s\nthe client:\n%s", describe(ours), describe(theirs))
			}
		})
	}
}

func describe(x exchange) string {
	if len(x.out) > 80 {
		x.out = fmt.Sprintf("%.40s… (%d bytes)", x.out, len(x.out))
	}
	return fmt.Sprintf("%+v", x)
}

// nopRecorder records nothing.
type nopRecorder struct{}

func (nopRecorder) Started(bool)              {}
func (nopRecorder) TokenGap(time.Duration)    {}
func (nopRecorder) Finished(*observe.Request) {}
func (nopRecorder) Retried(observe.Reason)    {}

// TestSignsLikeTheClient: the requests the client would sign go through it.
func TestSignsLikeTheClient(t *testing.T) {
	t.Setenv("OLLAMA_AUTH", "")
	if testTarget(t, "http://127.0.0.1:11434", time.Minute).signs() {
		t.Error("a local target signs")
	}
	if !testTarget(t, "https://ollama.com", time.Minute).signs() {
		t.Error("ollama.com does not sign")
	}
	t.Setenv("OLLAMA_AUTH", "true")
	if !testTarget(t, "http://127.0.0.1:11434", time.Minute).signs() {
		t.Error("OLLAMA_AUTH=true does not sign")
	}
}
