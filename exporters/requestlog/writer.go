package requestlog

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/chimeraforge/chimeraforge/observe"
)

// Metric names of the Writer's own counters, registered only when the
// request log is enabled.
const (
	MetricLinesTotal        = "chimeraforge_request_log_lines_total"
	MetricDroppedLinesTotal = "chimeraforge_request_log_dropped_lines_total"
)

// DefaultFlushInterval is how often a Writer writes its buffered lines out
// unless Options say otherwise.
const DefaultFlushInterval = time.Second

// bufferSize is the size of a Writer's buffer: lines reach the file when it
// fills, at each flush interval, and on Close.
const bufferSize = 64 << 10

var (
	linesDesc = prometheus.NewDesc(MetricLinesTotal,
		"Lines written to the request log (--request-log): one per request that ended, counted when it reaches the file.", nil, nil)
	droppedDesc = prometheus.NewDesc(MetricDroppedLinesTotal,
		"Request log lines not written: the log reached --request-log.max-bytes, a write to it failed (every later line is dropped too), or the request ended after the log was closed.", nil, nil)
)

// Options configure a Writer.
type Options struct {
	// MaxBytes caps the bytes the Writer writes: the first line that would
	// take it past the cap, and every line after it, are dropped. 0 or less
	// means no cap. Bytes already in an appended file do not count.
	MaxBytes int64
	// FlushInterval is how often buffered lines are written out;
	// DefaultFlushInterval when 0 or less.
	FlushInterval time.Duration
	// Logger receives one warning when the cap is reached and one error on
	// the first failed write; nil logs nothing.
	Logger *zap.Logger
}

// Writer appends request log lines to a file through a 64 KiB buffer. It
// is safe for concurrent use. Lines reach the file when the buffer fills,
// every flush interval and on Close. After the size cap is reached or a
// write fails it writes nothing more and counts each line it does not
// write. A Writer is a prometheus.Collector of those two counts.
type Writer struct {
	log            *zap.Logger
	max            int64
	lines, dropped atomic.Uint64

	mu      sync.Mutex // guards the fields below and every write to out
	out     io.Writer
	bw      *bufio.Writer
	line    []byte // the line being written, reused
	size    int64  // bytes accepted: written or in bw
	pending uint64 // lines accepted and not yet written out
	full    bool   // the cap was reached
	err     error  // the first write error
	closed  bool

	stop      chan struct{} // closed by Close
	flushDone chan struct{} // closed when the flusher returns
	closeOnce sync.Once
	closeErr  error
}

var _ prometheus.Collector = (*Writer)(nil)

// Open opens path for appending (creating it with mode 0o640 if needed)
// and returns a Writer on it; see New for ctx. Close closes the file.
func Open(ctx context.Context, path string, opts Options) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, err
	}
	if opts.Logger != nil {
		opts.Logger = opts.Logger.With(zap.String("path", path))
	}
	return New(ctx, f, opts), nil
}

// New returns a Writer on out. A goroutine writes the buffered lines out
// every flush interval until ctx ends (writing them once more then) or
// Close is called; lines recorded after ctx ended wait for Close. Close
// closes out if it is an io.Closer.
func New(ctx context.Context, out io.Writer, opts Options) *Writer {
	w := &Writer{
		log:       opts.Logger,
		max:       opts.MaxBytes,
		out:       out,
		stop:      make(chan struct{}),
		flushDone: make(chan struct{}),
	}
	if w.log == nil {
		w.log = zap.NewNop()
	}
	w.bw = bufio.NewWriterSize(lineCounter{w}, bufferSize)
	every := opts.FlushInterval
	if every <= 0 {
		every = DefaultFlushInterval
	}
	go w.flushEvery(ctx, every)
	return w
}

// Record appends the line of q, which finished at at. It copies what it
// needs from q before it returns, and does not allocate once its line
// buffer has grown to the longest line. Lines are encoded and buffered
// under one lock, held while the buffer is written out.
func (w *Writer) Record(at time.Time, q *observe.Request) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.full || w.err != nil {
		w.dropped.Add(1)
		return
	}
	w.line = AppendLine(w.line[:0], at, q)
	if w.max > 0 && w.size+int64(len(w.line)) > w.max {
		w.full = true
		w.dropped.Add(1)
		w.log.Warn("request log reached --request-log.max-bytes; every later line is dropped and counted in "+MetricDroppedLinesTotal,
			zap.Int64("max_bytes", w.max))
		return
	}
	w.size += int64(len(w.line))
	w.pending++
	if _, err := w.bw.Write(w.line); err != nil {
		w.failLocked(err)
	}
}

// Lines returns the number of lines written out.
func (w *Writer) Lines() uint64 { return w.lines.Load() }

// Dropped returns the number of lines not written: over the cap, after a
// write error, or after Close.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Close writes the buffered lines out, stops the flushing goroutine and
// closes the underlying writer if it is an io.Closer, returning that
// error. A failed final write is logged like any other. Lines recorded
// after Close are dropped. Close is idempotent.
func (w *Writer) Close() error {
	w.closeOnce.Do(func() {
		close(w.stop)
		<-w.flushDone
		w.mu.Lock()
		defer w.mu.Unlock()
		w.flushLocked()
		w.closed = true
		if c, ok := w.out.(io.Closer); ok {
			w.closeErr = c.Close()
		}
	})
	return w.closeErr
}

// Describe implements prometheus.Collector.
func (w *Writer) Describe(ch chan<- *prometheus.Desc) {
	ch <- linesDesc
	ch <- droppedDesc
}

// Collect implements prometheus.Collector.
func (w *Writer) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(linesDesc, prometheus.CounterValue, float64(w.lines.Load()))
	ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(w.dropped.Load()))
}

func (w *Writer) flushEvery(ctx context.Context, every time.Duration) {
	defer close(w.flushDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-ctx.Done():
			w.flush()
			return
		case <-t.C:
			w.flush()
		}
	}
}

func (w *Writer) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
}

func (w *Writer) flushLocked() {
	if w.err != nil || w.closed || w.bw.Buffered() == 0 {
		return
	}
	if err := w.bw.Flush(); err != nil {
		w.failLocked(err)
	}
}

// failLocked stops the Writer after a write error: the lines that were not
// written out, and every later one, are dropped.
func (w *Writer) failLocked(err error) {
	w.err = err
	lost := w.pending
	w.pending = 0
	w.dropped.Add(lost)
	w.log.Error("request log write failed; the lines not yet written and every later line are dropped and counted in "+MetricDroppedLinesTotal,
		zap.Error(err), zap.Uint64("lines_lost", lost))
}

// lineCounter sits between the buffer and the file and counts the lines
// that reached the file: those whose newline was written. Its Write is
// called with w.mu held.
type lineCounter struct{ w *Writer }

func (c lineCounter) Write(p []byte) (int, error) {
	n, err := c.w.out.Write(p)
	if k := uint64(bytes.Count(p[:n], []byte{'\n'})); k > 0 {
		c.w.pending -= k
		c.w.lines.Add(k)
	}
	return n, err
}
