package daemon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/ollama/ollama/api"
)

const chatChunk = `{"model":"m","created_at":"2026-11-27T10:00:00.123456789Z","message":{"role":"assistant","content":"foo "},"done":false}`

// TestParseChunk: what the fast path accepts, and the text it reads; every
// line it refuses goes to the client's decoding.
func TestParseChunk(t *testing.T) {
	for _, tc := range []struct {
		name     string
		generate bool
		line     string
		ok       bool
		content  string
		text     bool
	}{
		{"chat chunk", false, chatChunk, true, "foo ", true},
		{"generate chunk", true, `{"model":"m","created_at":"2026-11-27T10:00:00.123456789Z","response":"foo ","done":false}`, true, "foo ", true},
		{"chat thinking", false, `{"model":"m","created_at":"2026-11-27T10:00:00Z","message":{"role":"assistant","content":"","thinking":"hmm"},"done":false}`, true, "", true},
		{"generate thinking", true, `{"model":"m","created_at":"2026-11-27T10:00:00Z","response":"","thinking":"hmm","done":false}`, true, "", true},
		{"no text", false, `{"model":"m","created_at":"2026-11-27T10:00:00Z","message":{"role":"assistant","content":""},"done":false}`, true, "", false},
		{"keys in another order, some left out", false, `{"done":false,"message":{"content":"x","role":"assistant"}}`, true, "x", true},
		{"empty object", false, `{}`, true, "", false},
		{"empty message", false, `{"message":{}}`, true, "", false},
		{"white space", false, " \t{ \"message\" : { \"content\" :\"a\" } , \"done\"\t:\tfalse }\r ", true, "a", true},
		{"escapes", false, `{"message":{"content":"\"\\\/\b\f\n\r\t"}}`, true, "\"\\/\b\f\n\r\t", true},
		{"unicode escapes", false, `{"message":{"content":"\u0041\u00e9\u20AC\u0000\ud83d\ude00"}}`, true, "Aé€\x00😀", true},
		{"raw UTF-8", true, `{"response":"héllo 😀 \u2028"}`, true, "héllo 😀 \u2028", true},
		{"offset time", false, `{"created_at":"2026-02-28T23:59:59.5-07:30","message":{"content":"x"}}`, true, "x", true},
		{"leap day", false, `{"created_at":"2024-02-29T00:00:00Z","message":{"content":"x"}}`, true, "x", true},
		{"year zero leap day", false, `{"created_at":"0000-02-29T00:00:00Z","message":{"content":"x"}}`, true, "x", true},

		{"final chunk", false, `{"model":"m","created_at":"2026-11-27T10:00:00Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","eval_count":3}`, false, "", false},
		{"done true", false, `{"message":{"content":"x"},"done":true}`, false, "", false},
		{"done null", false, `{"message":{"content":"x"},"done":null}`, false, "", false},
		{"done falsey", false, `{"message":{"content":"x"},"done":falsey}`, false, "", false},
		{"error", false, `{"error":"boom"}`, false, "", false},
		{"upper-case key", false, `{"Message":{"content":"x"}}`, false, "", false},
		{"upper-case inner key", false, `{"message":{"Content":"x"}}`, false, "", false},
		{"escaped key", false, `{"message":{"cont\u0065nt":"x"}}`, false, "", false},
		{"duplicate key", false, `{"message":{"content":"x"},"message":{"content":"y"}}`, false, "", false},
		{"duplicate inner key", false, `{"message":{"content":"x","content":"y"}}`, false, "", false},
		{"unknown key", false, `{"message":{"content":"x"},"done_reason":"stop"}`, false, "", false},
		{"message in generate", true, `{"message":{"content":"x"}}`, false, "", false},
		{"response in chat", false, `{"response":"x"}`, false, "", false},
		{"thinking at the top of chat", false, `{"thinking":"x"}`, false, "", false},
		{"message null", false, `{"message":null}`, false, "", false},
		{"content a number", false, `{"message":{"content":1}}`, false, "", false},
		{"model a number", false, `{"model":1}`, false, "", false},
		{"trailing garbage", false, `{"message":{"content":"x"}}x`, false, "", false},
		{"two objects", false, `{}{}`, false, "", false},
		{"trailing comma", false, `{"message":{"content":"x"},}`, false, "", false},
		{"not closed", false, `{"message":{"content":"x"}`, false, "", false},
		{"not JSON", false, `{"model":"m","message":{"con`, false, "", false},
		{"empty line", false, ``, false, "", false},
		{"lone high surrogate", false, `{"message":{"content":"\ud83d"}}`, false, "", false},
		{"lone low surrogate", false, `{"message":{"content":"\ude00"}}`, false, "", false},
		{"high surrogate, then a letter", false, `{"message":{"content":"\ud83d\u0041"}}`, false, "", false},
		{"bad escape", false, `{"message":{"content":"\x"}}`, false, "", false},
		{"short unicode escape", false, `{"message":{"content":"\u12"}}`, false, "", false},
		{"raw control character", false, "{\"message\":{\"content\":\"a\tb\"}}", false, "", false},
		{"invalid UTF-8", false, "{\"message\":{\"content\":\"a\xffb\"}}", false, "", false},
		{"UTF-8 surrogate", false, "{\"message\":{\"content\":\"\xed\xa0\x80\"}}", false, "", false},
		{"invalid UTF-8 in the model", false, "{\"model\":\"\xc3\",\"message\":{\"content\":\"x\"}}", false, "", false},
		{"bad time", false, `{"created_at":"not a time","message":{"content":"x"}}`, false, "", false},
		{"month 13", false, `{"created_at":"2026-13-01T00:00:00Z"}`, false, "", false},
		{"February 29 of a common year", false, `{"created_at":"2026-02-29T00:00:00Z"}`, false, "", false},
		{"hour 24", false, `{"created_at":"2026-01-01T24:00:00Z"}`, false, "", false},
		{"lower-case z", false, `{"created_at":"2026-01-01T00:00:00z"}`, false, "", false},
		{"no zone", false, `{"created_at":"2026-01-01T00:00:00"}`, false, "", false},
		{"zone hour 24", false, `{"created_at":"2026-01-01T00:00:00+24:00"}`, false, "", false},
		{"comma fraction", false, `{"created_at":"2026-01-01T00:00:00,5Z"}`, false, "", false},
		{"escaped time", false, `{"created_at":"2026-01-01T00:00:00\u005a"}`, false, "", false},
		{"time null", false, `{"created_at":null}`, false, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("before|")
			out, text, ok := parseChunk([]byte(tc.line), tc.generate, prefix[:len(prefix):len(prefix)], nil)
			if !bytes.HasPrefix(out, prefix) {
				t.Fatalf("output %q lost its prefix", out)
			}
			if ok != tc.ok {
				t.Fatalf("accepted %v, want %v", ok, tc.ok)
			}
			if !ok {
				if len(out) != len(prefix) {
					t.Errorf("refused, but the output grew to %q", out)
				}
				return
			}
			if got := string(out[len(prefix):]); got != tc.content || text != tc.text {
				t.Errorf("read %q (text %v), want %q (text %v)", got, text, tc.content, tc.text)
			}
			checkLikeClient(t, []byte(tc.line), tc.generate, out[len(prefix):], nil, text)
		})
	}
}

// checkLikeClient decodes a line the fast path accepted as the Ollama
// client does, and compares: no error, the same content, thinking (when
// thinking is not nil) and text, not done.
func checkLikeClient(t *testing.T, line []byte, generate bool, content, thinking []byte, text bool) {
	t.Helper()
	var e struct {
		Error     string `json:"error,omitempty"`
		SigninURL string `json:"signin_url,omitempty"`
	}
	if err := json.Unmarshal(line, &e); err != nil || e.Error != "" {
		t.Fatalf("fast path accepted %q; the client's error check says %v, error %q", line, err, e.Error)
	}
	var c, th string
	var done bool
	if generate {
		var r api.GenerateResponse
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("fast path accepted %q; the client fails: %v", line, err)
		}
		c, th, done = r.Response, r.Thinking, r.Done
	} else {
		var r api.ChatResponse
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("fast path accepted %q; the client fails: %v", line, err)
		}
		c, th, done = r.Message.Content, r.Message.Thinking, r.Done
	}
	if string(content) != c {
		t.Fatalf("line %q: fast path content %q, client %q", line, content, c)
	}
	if thinking != nil && string(thinking) != th {
		t.Fatalf("line %q: fast path thinking %q, client %q", line, thinking, th)
	}
	if text != (c != "" || th != "") {
		t.Fatalf("line %q: fast path text %v, client content %q thinking %q", line, text, c, th)
	}
	if done {
		t.Fatalf("fast path accepted a final chunk %q", line)
	}
}

// FuzzChunkFastPath is a differential test of parseChunk against the
// Ollama client's decoding: whenever the fast path accepts a line, the
// client's two json.Unmarshal calls read it without error, with the same
// content and thinking, and not done. And every content chunk that
// encoding/json writes (as Ollama does) is accepted.
func FuzzChunkFastPath(f *testing.F) {
	for _, seed := range []string{
		chatChunk,
		`{"model":"m","created_at":"2026-11-27T10:00:00.123456789Z","response":"foo ","done":false}`,
		`{"model":"qwen3:4b","created_at":"2026-11-27T10:00:00.1+05:30","message":{"role":"assistant","content":"","thinking":"Okay, "},"done":false}`,
		`{"model":"m","created_at":"2026-11-27T10:00:00Z","response":"","thinking":"so","done":false}`,
		`{"model":"m","created_at":"2026-11-27T10:00:00Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","eval_count":3}`,
		`{"message":{"content":"\"\\\/\b\f\n\r\t\u0000\u001f\u00e9\uD83D\uDE00\u2028"}}`,
		`{"message":{"content":"\ud83d"}}`, `{"message":{"content":"\ude00\ud83d"}}`, `{"message":{"content":"\ud83d\u0041"}}`,
		"{\"message\":{\"content\":\"h\xc3\xa9 \xf0\x9f\x98\x80 \xff \xed\xa0\x80 \xc0\xaf\"}}",
		" \t\r{ \"message\" : { \"content\" : \"a\" } , \"done\" : false } \r",
		`{"message":{"content":"x"},"message":{"content":"y"}}`, `{"message":{"content":"x","content":"y"}}`,
		`{"Message":{"Content":"x"}}`, `{"MODEL":"m","message":{"content":"x"}}`, `{"mod\u0065l":"m"}`, `{"\u212aey":"x"}`,
		`{"created_at":"not a time"}`, `{"created_at":"2026-02-29T00:00:00Z"}`, `{"created_at":"2026-01-01T00:00:00.Z"}`,
		`{"created_at":"2026-01-01T00:00:00+23:59"}`, `{"created_at":"2026-01-01T00:00:00+24:00"}`, `{"created_at":"2026-01-01 00:00:00Z"}`,
		`{"created_at":"2026-01-01T00:00:00.123456789123Z"}`, `{"created_at":"2026-01-01T00:00:00\u005a"}`, `{"created_at":"9999-12-31T23:59:59-00:00"}`,
		`{"done":false}`, `{"done":true}`, `{"done":null}`, `{"done":0}`, `{"message":null}`, `{"message":{"content":null}}`,
		`{"error":"boom"}`, `{"error":""}`, `{"message":{"images":["aGk="]}}`, `{}`, `{}{}`, `[]`, ``, `"x"`, `{"message":{"content":"x"}`,
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, line []byte, generate bool) {
		prefix := []byte("before|")
		thinking := []byte{}
		out, text, ok := parseChunk(line, generate, prefix[:len(prefix):len(prefix)], &thinking)
		if !bytes.Equal(out[:min(len(out), len(prefix))], prefix) {
			t.Fatalf("output %q lost its prefix", out)
		}
		if ok {
			checkLikeClient(t, line, generate, out[len(prefix):], thinking, text)
		} else if len(out) != len(prefix) {
			t.Fatalf("refused %q, but the output grew to %q", line, out)
		}

		// What Ollama writes is accepted, and reads the same.
		zones := []*time.Location{time.UTC, time.FixedZone("", -7*3600-1800), time.FixedZone("", 14*3600)}
		at := time.Unix(1_700_000_000+int64(len(line))*86_413, int64(len(line))*7919).In(zones[len(line)%len(zones)])
		var chunk []byte
		var err error
		half := string(line[:len(line)/2])
		if generate {
			chunk, err = json.Marshal(api.GenerateResponse{Model: half, CreatedAt: at, Response: string(line), Thinking: half})
		} else {
			chunk, err = json.Marshal(api.ChatResponse{Model: half, CreatedAt: at,
				Message: api.Message{Role: "assistant", Content: string(line), Thinking: half}})
		}
		if err != nil {
			t.Fatal(err)
		}
		thinking = thinking[:0]
		out, text, ok = parseChunk(chunk, generate, nil, &thinking)
		if !ok {
			t.Fatalf("refused the chunk %s that encoding/json wrote", chunk)
		}
		checkLikeClient(t, chunk, generate, out, thinking, text)
	})
}

// TestLineReaderMatchesScanner splits bodies into lines with lineReader and
// with the Ollama client's bufio.Scanner, through readers that return the
// data in various pieces and end in various ways: the same lines, and a
// line too long in the same places.
func TestLineReaderMatchesScanner(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	bodies := map[string]string{
		"empty":               "",
		"one newline":         "\n",
		"lines":               "a\nbb\n\nccc\n",
		"no final newline":    "a\nb",
		"CRLF":                "a\r\nb\r\n\r\n\r",
		"CR inside":           "a\rb\r\r\n",
		"longer than 1 KiB":   long(1500) + "\n" + long(5000) + "\nx",
		"grows then shrinks":  strings.Repeat(long(3000)+"\n"+long(10)+"\n", 20),
		"largest line":        long(clientLineLimit-1) + "\nafter\n",
		"line too long":       "before\n" + long(clientLineLimit) + "\nafter\n",
		"too long at the end": "before\n" + long(clientLineLimit),
	}
	boom := errors.New("boom")
	readers := map[string]func(string) io.Reader{
		"whole":      func(s string) io.Reader { return strings.NewReader(s) },
		"EOF early":  func(s string) io.Reader { return iotest.DataErrReader(strings.NewReader(s)) },
		"halves":     func(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) },
		"read error": func(s string) io.Reader { return io.MultiReader(strings.NewReader(s), iotest.ErrReader(boom)) },
		"one byte":   func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
	}
	for name, body := range bodies {
		for rname, reader := range readers {
			if len(body) > 100_000 && rname == "one byte" {
				continue
			}
			t.Run(name+"/"+rname, func(t *testing.T) {
				sc := bufio.NewScanner(reader(body))
				sc.Buffer(make([]byte, 0, clientLineLimit), clientLineLimit)
				var want []string
				for sc.Scan() {
					want = append(want, sc.Text())
				}
				lr := newLineReader(reader(body))
				defer lr.release()
				var got []string
				for {
					line, ok := lr.next()
					if !ok {
						break
					}
					got = append(got, string(line))
				}
				if len(got) != len(want) {
					t.Fatalf("%d lines, the client reads %d", len(got), len(want))
				}
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("line %d is %.40q (%d bytes), the client reads %.40q (%d bytes)", i, got[i], len(got[i]), want[i], len(want[i]))
					}
				}
				if tooLong := errors.Is(lr.err, bufio.ErrTooLong); tooLong != errors.Is(sc.Err(), bufio.ErrTooLong) {
					t.Errorf("line too long %v, the client's scanner ended with %v", tooLong, sc.Err())
				}
			})
		}
	}
}

// TestBufPoolKeepsSmallBuffers: a grown line buffer goes back to the pool
// up to pooledBufMax, not beyond.
func TestBufPoolKeepsSmallBuffers(t *testing.T) {
	for _, n := range []int{10, 5000, pooledBufMax, pooledBufMax + 1} {
		lr := newLineReader(strings.NewReader(strings.Repeat("a", n) + "\n"))
		if line, ok := lr.next(); !ok || len(line) != n {
			t.Fatalf("line of %d bytes read as %d, %v", n, len(line), ok)
		}
		c := cap(lr.buf)
		p := lr.p
		lr.release()
		if kept := cap(*p) == c; kept != (c <= pooledBufMax) {
			t.Errorf("buffer of %d bytes (line %d): kept %v", c, n, kept)
		}
	}
}
