package requestlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/chimeraforge/chimeraforge/observe"
)

// request returns a finished request of agent, numbered i in its
// ContentChunks so that lines can be told apart.
func request(agent string, i int) *observe.Request {
	l := testLabels
	l.Agent = agent
	return &observe.Request{Labels: l, Outcome: observe.OutcomeSuccess, Status: 200, Duration: time.Second,
		FirstToken: true, TimeToFirst: time.Millisecond, ContentChunks: i, Done: true, EvalCount: i}
}

// readLines reads path and decodes every line.
func readLines(t testing.TB, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for line := range bytes.Lines(b) {
		out = append(out, decodeLine(t, line))
	}
	return out
}

func openTemp(t testing.TB, opts Options) (*Writer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "requests.jsonl")
	w, err := Open(t.Context(), path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w, path
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "requests.jsonl")
	if err := os.WriteFile(path, []byte("kept\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.Record(testAt, request("a", 1))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), "kept\n{") || strings.Count(string(b), "\n") != 2 {
		t.Errorf("appended file:\n%s", b)
	}

	// A new file gets mode 0o640, less the umask.
	fresh := filepath.Join(dir, "fresh.jsonl")
	w, err = Open(t.Context(), fresh, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	st, err := os.Stat(fresh)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm&^0o640 != 0 || perm&0o600 != 0o600 {
		t.Errorf("mode %v, want 0640 less the umask", perm)
	}

	for _, bad := range []string{filepath.Join(dir, "missing", "x.jsonl"), dir} {
		if _, err := Open(t.Context(), bad, Options{}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("Open(%q): %v, want an error naming the path", bad, err)
		}
	}
}

func TestSizeCap(t *testing.T) {
	line := AppendLine(nil, testAt, request("a", 1))
	for _, tt := range []struct {
		name      string
		max       int64
		records   int
		wantLines int
	}{
		{"no cap", 0, 5, 5},
		{"exactly two lines", int64(2 * len(line)), 5, 2},
		{"two lines and a bit", int64(2*len(line) + 1), 5, 2},
		{"not one line", int64(len(line) - 1), 3, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			w, path := openTemp(t, Options{MaxBytes: tt.max, Logger: zap.New(core)})
			for i := range tt.records {
				w.Record(testAt, request("a", 1+i%9)) // lines of one length
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			lines := readLines(t, path)
			if len(lines) != tt.wantLines || w.Lines() != uint64(tt.wantLines) {
				t.Errorf("%d lines in the file, %d counted; want %d", len(lines), w.Lines(), tt.wantLines)
			}
			if got, want := w.Dropped(), uint64(tt.records-tt.wantLines); got != want {
				t.Errorf("dropped %d, want %d", got, want)
			}
			warned := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("max-bytes").All()
			if wantWarn := tt.wantLines < tt.records; (len(warned) == 1) != wantWarn || logs.Len() != len(warned) {
				t.Errorf("logged %v; want one warning: %t", logs.All(), wantWarn)
			}
			for _, e := range warned {
				if e.ContextMap()["path"] != path || e.ContextMap()["max_bytes"] != tt.max {
					t.Errorf("warning %v: want path and max_bytes", e.ContextMap())
				}
			}
		})
	}
}

// failingWriter writes its first ok bytes and fails every write after.
type failingWriter struct {
	mu     sync.Mutex
	ok     int
	b      bytes.Buffer
	writes int
}

var errDiskFull = errors.New("no space left on device")

func (f *failingWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	n := min(len(p), f.ok-f.b.Len())
	f.b.Write(p[:n])
	if n < len(p) {
		return n, errDiskFull
	}
	return n, nil
}

func TestWriteError(t *testing.T) {
	line := AppendLine(nil, testAt, request("a", 1))
	// The file takes one and a half lines, then fails: one line reached it,
	// the torn second line and everything after are dropped.
	core, logs := observer.New(zap.InfoLevel)
	out := &failingWriter{ok: len(line) + len(line)/2}
	w := New(t.Context(), out, Options{Logger: zap.New(core)})
	for i := range 3 {
		w.Record(testAt, request("a", 1+i))
	}
	w.flush()
	for i := range 2 {
		w.Record(testAt, request("a", 4+i))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err) // failingWriter is no io.Closer
	}
	if w.Lines() != 1 || w.Dropped() != 4 {
		t.Errorf("lines %d, dropped %d; want 1 and 4", w.Lines(), w.Dropped())
	}
	if out.writes != 1 {
		t.Errorf("%d writes to the failing writer, want 1: a Writer stops at its first error", out.writes)
	}
	errs := logs.FilterLevelExact(zapcore.ErrorLevel).All()
	if len(errs) != 1 || logs.Len() != 1 {
		t.Fatalf("logged %v, want one error", logs.All())
	}
	if ctx := errs[0].ContextMap(); ctx["error"] != errDiskFull.Error() || ctx["lines_lost"] != uint64(2) {
		t.Errorf("error log fields %v", ctx)
	}
}

func TestClosedFile(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "requests.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	core, logs := observer.New(zap.InfoLevel)
	w := New(t.Context(), f, Options{Logger: zap.New(core)})
	w.Record(testAt, request("a", 1))
	w.Record(testAt, request("a", 2))
	if err := w.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Close: %v, want %v", err, os.ErrClosed)
	}
	w.Record(testAt, request("a", 3)) // after Close: dropped, not logged
	if w.Lines() != 0 || w.Dropped() != 3 {
		t.Errorf("lines %d, dropped %d; want 0 and 3", w.Lines(), w.Dropped())
	}
	if errs := logs.FilterLevelExact(zapcore.ErrorLevel).All(); len(errs) != 1 || logs.Len() != 1 ||
		!strings.Contains(errs[0].ContextMap()["error"].(string), os.ErrClosed.Error()) {
		t.Errorf("logged %v, want one error naming the closed file", logs.All())
	}
}

func TestConcurrentRecords(t *testing.T) {
	const goroutines, each = 32, 300
	// A short interval, so that flushes race with records.
	w, path := openTemp(t, Options{FlushInterval: time.Millisecond})
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(w); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				w.Record(time.Now(), request(fmt.Sprintf("agent-%d", g), i))
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			if _, err := reg.Gather(); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != goroutines*each || w.Lines() != goroutines*each || w.Dropped() != 0 {
		t.Fatalf("%d lines, %d counted, %d dropped; want %d, %d, 0", len(lines), w.Lines(), w.Dropped(), goroutines*each, goroutines*each)
	}
	// Each goroutine's lines are whole and in its order.
	next := map[string]int{}
	for _, l := range lines {
		a := l["agent"].(string)
		if got := l["content_chunks"].(interface{ String() string }).String(); got != fmt.Sprint(next[a]) {
			t.Fatalf("%s: line %s after %d", a, got, next[a]-1)
		}
		next[a]++
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(fmt.Sprintf(`
# HELP chimeraforge_request_log_dropped_lines_total %s
# TYPE chimeraforge_request_log_dropped_lines_total counter
chimeraforge_request_log_dropped_lines_total 0
# HELP chimeraforge_request_log_lines_total %s
# TYPE chimeraforge_request_log_lines_total counter
chimeraforge_request_log_lines_total %d
`, helpOf(droppedDesc), helpOf(linesDesc), goroutines*each))); err != nil {
		t.Error(err)
	}
}

// helpOf returns a description's help text, as the exposition escapes it.
func helpOf(d *prometheus.Desc) string {
	s := d.String()
	i := strings.Index(s, `help: "`) + len(`help: "`)
	return s[i : i+strings.Index(s[i:], `", `)]
}

// TestFlushInterval: a line reaches the file within the flush interval, not
// at once, and without Close.
func TestFlushInterval(t *testing.T) {
	start := time.Now()
	w, path := openTemp(t, Options{}) // DefaultFlushInterval
	w.Record(testAt, request("a", 1))
	if st, err := os.Stat(path); err != nil || (st.Size() != 0 && time.Since(start) < DefaultFlushInterval/2) {
		t.Errorf("a line reached the file at once (%v): the Writer does not buffer", err)
	}
	// The interval, and scheduling slack for a loaded machine under -race.
	limit := DefaultFlushInterval + time.Second
	for {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 0 {
			break
		}
		if time.Since(start) > limit {
			t.Fatalf("the line did not reach the file within %s", limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if w.Lines() != 1 {
		t.Errorf("%d lines counted, want 1", w.Lines())
	}
}

// TestContextEnd: when ctx ends the Writer flushes once and its goroutine
// returns; later lines wait for Close.
func TestContextEnd(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	path := filepath.Join(t.TempDir(), "requests.jsonl")
	w, err := Open(ctx, path, Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	w.Record(testAt, request("a", 1))
	cancel()
	<-w.flushDone
	if len(readLines(t, path)) != 1 {
		t.Error("the line was not flushed when ctx ended")
	}
	w.Record(testAt, request("a", 2))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(readLines(t, path)); got != 2 || w.Lines() != 2 {
		t.Errorf("%d lines, %d counted after Close; want 2", got, w.Lines())
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestLongLine: a line longer than the buffer is written whole.
func TestLongLine(t *testing.T) {
	w, path := openTemp(t, Options{})
	q := request("a", 1)
	q.Workload = strings.Repeat("w\"", bufferSize)
	w.Record(testAt, request("a", 0))
	w.Record(testAt, q)
	w.Record(testAt, request("a", 2))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != 3 || lines[1]["workload"] != q.Workload || w.Lines() != 3 {
		t.Errorf("%d lines, %d counted; want 3 with the long one whole", len(lines), w.Lines())
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	w := New(t.Context(), io.Discard, Options{})
	t.Cleanup(func() { _ = w.Close() })
	q := request("a", 1)
	if n := testing.AllocsPerRun(1000, func() { w.Record(testAt, q) }); n != 0 {
		t.Errorf("Record: %v allocations per line, want 0", n)
	}
}
