package requestlog

import (
	"bytes"
	"encoding/json"
	"maps"
	"math"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chimeraforge/chimeraforge/observe"
)

var (
	testAt     = time.Date(2026, 11, 27, 11, 15, 20, 123456789, time.FixedZone("CET", 3600))
	testLabels = observe.Labels{Workload: "chat", Agent: "planner", Target: "gpu0", Model: "llama3.2:1b", Step: "outline"}
)

// decodeLine decodes one line, numbers kept as written.
func decodeLine(t testing.TB, line []byte) map[string]any {
	t.Helper()
	if !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("line %q: want exactly one newline, at the end", line)
	}
	if !utf8.Valid(line) {
		t.Fatalf("line %q: invalid UTF-8", line)
	}
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("line %q: %v", line, err)
	}
	if d.More() {
		t.Fatalf("line %q: more than one JSON value", line)
	}
	return m
}

// labelFields are the fields of testLabels.
func labelFields() map[string]any {
	return map[string]any{"workload": "chat", "agent": "planner", "step": "outline", "target": "gpu0", "model": "llama3.2:1b"}
}

func with(base map[string]any, kv ...any) map[string]any {
	m := maps.Clone(base)
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

func TestAppendLine(t *testing.T) {
	n := func(s string) json.Number { return json.Number(s) }
	base := with(labelFields(), "time", "2026-11-27T10:15:20.123456789Z")
	for _, tt := range []struct {
		name string
		req  observe.Request
		want map[string]any
	}{{
		name: "success",
		req: observe.Request{
			Labels: testLabels, Outcome: observe.OutcomeSuccess, Status: 200,
			Duration: 1500 * time.Millisecond, FirstToken: true, TimeToFirst: 200*time.Millisecond + 1,
			LastToken: 1499 * time.Millisecond, MaxTokenGap: 30 * time.Millisecond, ContentChunks: 29,
			Done: true, EvalCount: 30, PromptEvalCount: 12, EvalDuration: 900 * time.Millisecond,
			PromptEvalDuration: 50 * time.Millisecond, LoadDuration: 2 * time.Millisecond, TotalDuration: 1400 * time.Millisecond,
			QueueWait: 148*time.Millisecond + 1,
			// Contention flags are not part of the line.
			ModelReload: true, QueueWaited: true,
		},
		want: with(base, "outcome", "success", "reason", "", "status", n("200"), "duration_seconds", n("1.5"),
			"ttft_seconds", n("0.200000001"), "last_token_seconds", n("1.499"), "max_token_gap_seconds", n("0.03"),
			"content_chunks", n("29"), "done", true, "eval_count", n("30"), "prompt_eval_count", n("12"),
			"eval_duration_seconds", n("0.9"), "prompt_eval_duration_seconds", n("0.05"), "load_duration_seconds", n("0.002"),
			"total_duration_seconds", n("1.4"), "queue_wait_seconds", n("0.148000001")),
	}, {
		name: "success without text",
		req: observe.Request{
			Labels: testLabels, Outcome: observe.OutcomeSuccess, Status: 200, Duration: time.Second,
			TimeToFirst: time.Second, Done: true, EvalCount: 0, PromptEvalCount: 3, TotalDuration: 900 * time.Millisecond,
		},
		want: with(base, "outcome", "success", "reason", "", "status", n("200"), "duration_seconds", n("1"),
			"max_token_gap_seconds", n("0"), "content_chunks", n("0"), "done", true, "eval_count", n("0"),
			"prompt_eval_count", n("3"), "eval_duration_seconds", n("0"), "prompt_eval_duration_seconds", n("0"),
			"load_duration_seconds", n("0"), "total_duration_seconds", n("0.9"), "queue_wait_seconds", n("0")),
	}, {
		name: "connect error",
		req:  observe.Request{Labels: testLabels, Outcome: observe.OutcomeError, Reason: observe.ReasonConnect, Duration: time.Nanosecond},
		want: with(base, "outcome", "error", "reason", "connect", "status", n("0"), "duration_seconds", n("0.000000001"),
			"max_token_gap_seconds", n("0"), "content_chunks", n("0"), "done", false),
	}, {
		name: "idle timeout mid-stream",
		req: observe.Request{Labels: testLabels, Outcome: observe.OutcomeError, Reason: observe.ReasonIdleTimeout, Status: 200,
			Duration: 5*time.Second + 250*time.Millisecond, FirstToken: true, TimeToFirst: 40 * time.Millisecond,
			LastToken: 250 * time.Millisecond, MaxTokenGap: 100 * time.Millisecond, ContentChunks: 4},
		want: with(base, "outcome", "error", "reason", "idle_timeout", "status", n("200"), "duration_seconds", n("5.25"),
			"ttft_seconds", n("0.04"), "last_token_seconds", n("0.25"), "max_token_gap_seconds", n("0.1"),
			"content_chunks", n("4"), "done", false),
	}, {
		name: "queue full",
		req:  observe.Request{Labels: testLabels, Outcome: observe.OutcomeError, Reason: observe.ReasonQueueFull, Status: 503, Duration: 3 * time.Millisecond, QueueRejected: true},
		want: with(base, "outcome", "error", "reason", "queue_full", "status", n("503"), "duration_seconds", n("0.003"),
			"max_token_gap_seconds", n("0"), "content_chunks", n("0"), "done", false),
	}, {
		name: "canceled: reason canceled whatever the daemon set",
		req:  observe.Request{Labels: testLabels, Outcome: observe.OutcomeCanceled, Reason: observe.ReasonNone, Duration: 2 * time.Second},
		want: with(base, "outcome", "canceled", "reason", "canceled", "status", n("0"), "duration_seconds", n("2"),
			"max_token_gap_seconds", n("0"), "content_chunks", n("0"), "done", false),
	}, {
		name: "unknown outcome and reason: error, server_error; never the text",
		req:  observe.Request{Labels: testLabels, Outcome: "boom", Reason: "dial tcp: secret-host:11434", Status: 500},
		want: with(base, "outcome", "error", "reason", "server_error", "status", n("500"), "duration_seconds", n("0"),
			"max_token_gap_seconds", n("0"), "content_chunks", n("0"), "done", false),
	}, {
		name: "success reason is empty whatever the daemon set",
		req:  observe.Request{Labels: testLabels, Outcome: observe.OutcomeSuccess, Reason: observe.ReasonConnect, Done: true},
		want: with(base, "outcome", "success", "reason", "", "status", n("0"), "duration_seconds", n("0"),
			"max_token_gap_seconds", n("0"), "content_chunks", n("0"), "done", true, "eval_count", n("0"),
			"prompt_eval_count", n("0"), "eval_duration_seconds", n("0"), "prompt_eval_duration_seconds", n("0"),
			"load_duration_seconds", n("0"), "total_duration_seconds", n("0"), "queue_wait_seconds", n("0")),
	}, {
		name: "negative server-reported values are logged as reported",
		req: observe.Request{Labels: testLabels, Outcome: observe.OutcomeSuccess, Done: true, EvalCount: -1,
			LoadDuration: -1500 * time.Millisecond, EvalDuration: math.MinInt64},
		want: with(base, "outcome", "success", "reason", "", "status", n("0"), "duration_seconds", n("0"),
			"max_token_gap_seconds", n("0"), "content_chunks", n("0"), "done", true, "eval_count", n("-1"),
			"prompt_eval_count", n("0"), "eval_duration_seconds", n("-9223372036.854775808"), "prompt_eval_duration_seconds", n("0"),
			"load_duration_seconds", n("-1.5"), "total_duration_seconds", n("0"), "queue_wait_seconds", n("0")),
	}, {
		name: "label values with quotes, control characters, unicode and invalid UTF-8",
		req: observe.Request{Labels: observe.Labels{
			Workload: "say \"hi\"\nand\r\tleave \\ now", Agent: "caf\u00e9 \u2615 \u65e5\u672c \U0001F600",
			Step: "\x00\x01\x1f\x7f", Target: "a\u2028b\u2029c</script>&", Model: "bad\xffutf8\xc3",
		}, Outcome: observe.OutcomeSuccess},
		want: map[string]any{
			"time": "2026-11-27T10:15:20.123456789Z", "workload": "say \"hi\"\nand\r\tleave \\ now",
			"agent": "caf\u00e9 \u2615 \u65e5\u672c \U0001F600", "step": "\x00\x01\x1f\x7f", "target": "a\u2028b\u2029c</script>&",
			"model": "bad\ufffdutf8\ufffd", "outcome": "success", "reason": "", "status": n("0"), "duration_seconds": n("0"),
			"max_token_gap_seconds": n("0"), "content_chunks": n("0"), "done": false,
		},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			line := AppendLine(nil, testAt, &tt.req)
			if got := decodeLine(t, line); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("line %s", line)
				for k := range mergedKeys(got, tt.want) {
					if !reflect.DeepEqual(got[k], tt.want[k]) {
						t.Errorf("%s: got %#v, want %#v", k, got[k], tt.want[k])
					}
				}
			}
		})
	}
}

func mergedKeys(a, b map[string]any) map[string]bool {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	return keys
}

// TestFieldOrder pins the order of the fields, so that lines read well and
// diff cleanly.
func TestFieldOrder(t *testing.T) {
	q := observe.Request{Labels: testLabels, Outcome: observe.OutcomeSuccess, FirstToken: true, Done: true}
	line := string(AppendLine(nil, testAt, &q))
	order := []string{"time", "workload", "agent", "step", "target", "model", "outcome", "reason", "status",
		"duration_seconds", "ttft_seconds", "last_token_seconds", "max_token_gap_seconds", "content_chunks", "done",
		"eval_count", "prompt_eval_count", "eval_duration_seconds", "prompt_eval_duration_seconds",
		"load_duration_seconds", "total_duration_seconds", "queue_wait_seconds"}
	last := -1
	for _, f := range order {
		i := strings.Index(line, `"`+f+`":`)
		if i <= last {
			t.Fatalf("field %q at %d, after the previous one at %d:\n%s", f, i, last, line)
		}
		last = i
	}
	if got := strings.Count(line, `":`); got != len(order) {
		t.Errorf("%d fields, want %d:\n%s", got, len(order), line)
	}
}

// TestSecondsKeepNanoseconds: a duration read back as a float64 and rounded
// to the nanosecond is the duration logged, up to 2^53 ns (104 days).
func TestSecondsKeepNanoseconds(t *testing.T) {
	ds := []time.Duration{0, 1, 9, 10, 999, 1000, 999_999_999, time.Second, time.Second + 1, 1<<53 - 1, -1, -time.Second - 1}
	for d := time.Duration(7); d < 1<<53; d = d*3 + 1 {
		ds = append(ds, d, d-1, d+1)
	}
	for _, d := range ds {
		b := appendSeconds(nil, d)
		if bytes.ContainsAny(b, "eE+") {
			t.Errorf("%d: %s has an exponent", d, b)
		}
		var f float64
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("%d: %s: %v", d, b, err)
		}
		if got := time.Duration(math.Round(f * 1e9)); got != d {
			t.Errorf("%d: %s reads back as %d", d, b, got)
		}
	}
}

func FuzzAppendLine(f *testing.F) {
	f.Add("w", "a\"\n", "caf\u00e9", "\xff\x00", "\u2028", int64(1), int64(-1))
	f.Add("", "", "", "", "", int64(math.MinInt64), int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, w, a, s, tg, m string, d1, d2 int64) {
		q := observe.Request{Labels: observe.Labels{Workload: w, Agent: a, Step: s, Target: tg, Model: m},
			Outcome: observe.OutcomeSuccess, Duration: time.Duration(d1), FirstToken: true, TimeToFirst: time.Duration(d2), Done: true}
		got := decodeLine(t, AppendLine(nil, testAt, &q))
		for field, v := range map[string]string{"workload": w, "agent": a, "step": s, "target": tg, "model": m} {
			// encoding/json's reading of the value is the reference.
			ref, _ := json.Marshal(v)
			var want string
			if err := json.Unmarshal(ref, &want); err != nil {
				t.Fatal(err)
			}
			if got[field] != want {
				t.Errorf("%s: got %q, want %q", field, got[field], want)
			}
		}
		for field, d := range map[string]int64{"duration_seconds": d1, "ttft_seconds": d2} {
			r, ok := new(big.Rat).SetString(string(got[field].(json.Number)))
			if !ok || r.Cmp(new(big.Rat).SetFrac64(d, 1e9)) != 0 {
				t.Errorf("%s: %s, want exactly %d ns", field, got[field], d)
			}
		}
	})
}
