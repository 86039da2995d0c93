package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chimeraforge/chimeraforge/config"
	"github.com/chimeraforge/chimeraforge/exporters"
	"github.com/chimeraforge/chimeraforge/observe"
)

// ndjsonStream renders an answer of the chat or generate API (apiName) of
// n one-word chunks and a final chunk, byte for byte as Ollama streams it.
func ndjsonStream(tb testing.TB, apiName string, n int) []byte {
	tb.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	at := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	chunk := func(at time.Time, text string, done bool, m api.Metrics) any {
		reason := ""
		if done {
			reason = "length"
		}
		if apiName == config.APIGenerate {
			return api.GenerateResponse{Model: "sim-tiny", CreatedAt: at, Response: text, Done: done, DoneReason: reason, Metrics: m}
		}
		return api.ChatResponse{Model: "sim-tiny", CreatedAt: at, Message: api.Message{Role: "assistant", Content: text},
			Done: done, DoneReason: reason, Metrics: m}
	}
	for i := range n {
		if err := enc.Encode(chunk(at.Add(time.Duration(i)*time.Millisecond), "token ", false, api.Metrics{})); err != nil {
			tb.Fatal(err)
		}
	}
	final := api.Metrics{TotalDuration: time.Second, LoadDuration: time.Millisecond, PromptEvalCount: 10,
		PromptEvalDuration: time.Millisecond, EvalCount: n, EvalDuration: time.Second}
	if err := enc.Encode(chunk(at, "", true, final)); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkStreamToMetrics measures the per-chunk hot path end to end: an
// NDJSON stream read from loopback by the Ollama client, measured by call,
// recorded into the Prometheus metrics. Reported per streamed token.
func BenchmarkStreamToMetrics(b *testing.B) {
	benchmarkStream(b, config.APIChat, ndjsonStream(b, config.APIChat, streamTokens))
}

// BenchmarkStreamToMetricsGenerate is BenchmarkStreamToMetrics with the
// generate API.
func BenchmarkStreamToMetricsGenerate(b *testing.B) {
	benchmarkStream(b, config.APIGenerate, ndjsonStream(b, config.APIGenerate, streamTokens))
}

// streamTokens is the length of the benchmarks' answers.
const streamTokens = 256

func benchmarkStream(b *testing.B, apiName string, body []byte) {
	const tokens = streamTokens
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	tc := config.Target{Name: "bench", URL: srv.URL, NumParallel: 1,
		Timeouts: config.Timeouts{Connect: time.Second, FirstToken: time.Minute, Idle: time.Minute, Request: time.Minute}}
	tg := newTarget(tc, u)
	m, err := exporters.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	labels := observe.Labels{Workload: "w", Agent: "a", Target: "bench", Model: "sim-tiny", Step: "ask"}
	rec := m.Recorder(labels)
	a := &config.Agent{Name: "a", Model: "sim-tiny", API: apiName}
	spec := newCallSpec(a, nil, "", "hello", nil)
	ctx := context.Background()

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for b.Loop() {
		obs := observe.Request{Labels: labels}
		if _, err := call(ctx, tg, spec, rec, &obs, thresholds{modelReload: time.Second, queueWait: time.Second}, false); err != nil || obs.EvalCount != tokens {
			b.Fatalf("call: %v, eval_count %d", err, obs.EvalCount)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	n := float64(b.N) * tokens
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/token")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/n, "allocs/token")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/n, "B/token")
}

// BenchmarkOnChunk isolates what Chimeraforge itself does per chunk, once
// the chunk has been read and its text appended to the output.
func BenchmarkOnChunk(b *testing.B) {
	m, err := exporters.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	rec := m.Recorder(observe.Labels{Workload: "w", Agent: "a", Target: "t", Model: "m", Step: "ask"})
	timer := time.AfterFunc(time.Hour, func() {})
	defer timer.Stop()
	obs := &observe.Request{}
	s := &stream{rec: rec, watch: timer, idle: time.Hour, obs: obs, start: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		s.out = append(s.out, "token "...)
		s.onChunk(true, false, nil)
		if len(s.out) > 1<<20 {
			s.out = s.out[:0]
		}
	}
}

// BenchmarkParseChunk measures the fast path's read of one content chunk
// as Ollama streams it.
func BenchmarkParseChunk(b *testing.B) {
	for _, bc := range []struct {
		name     string
		generate bool
		line     string
	}{
		{"chat", false, `{"model":"llama3.2:3b","created_at":"2026-11-27T10:00:00.123456789Z","message":{"role":"assistant","content":" token"},"done":false}`},
		{"chat-offset", false, `{"model":"llama3.2:3b","created_at":"2026-11-27T10:00:00.123456789+01:00","message":{"role":"assistant","content":" token"},"done":false}`},
		{"chat-escapes", false, `{"model":"llama3.2:3b","created_at":"2026-11-27T10:00:00.123456789Z","message":{"role":"assistant","content":"\n\u003cb\u003e \"x\" \ud83d\ude00 é"},"done":false}`},
		{"chat-thinking", false, `{"model":"qwen3:4b","created_at":"2026-11-27T10:00:00.123456789Z","message":{"role":"assistant","content":"","thinking":" Okay"},"done":false}`},
		{"generate", true, `{"model":"llama3.2:3b","created_at":"2026-11-27T10:00:00.123456789Z","response":" token","done":false}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			line := []byte(bc.line)
			out := make([]byte, 0, 64)
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			for b.Loop() {
				var ok bool
				if out, _, ok = parseChunk(line, bc.generate, out[:0], nil); !ok {
					b.Fatal("refused")
				}
			}
		})
	}
}
