// Package requestlog writes one JSON line per Ollama request that ended, for
// the questions histograms cannot answer: exact per-request figures for a
// benchmark harness, and a record to debug from (like vegeta's results file
// or k6's JSON output).
//
// Wrap decorates the observe.Sink that feeds the Prometheus exporter: every
// observation still reaches it, and each finished request is also handed to
// a Writer. A line holds only values from configuration (the labels) and
// measurements, never prompt or response text or error strings; the field
// list is in docs/metrics.md ("Request log").
package requestlog

import (
	"time"

	"github.com/chimeraforge/chimeraforge/observe"
)

// Sink is an observe.Sink that passes everything to the sink it wraps and
// logs each finished request. It also forwards the optional interfaces the
// daemon looks for on its sink (Forget, Shard) when the wrapped sink has
// them; one added to the daemon must be forwarded here too.
type Sink struct {
	observe.Sink
	w *Writer
}

// Wrap returns next with every finished request also recorded by w.
func Wrap(next observe.Sink, w *Writer) *Sink {
	return &Sink{Sink: next, w: w}
}

// Recorder returns the wrapped sink's recorder for l, decorated.
func (s *Sink) Recorder(l observe.Labels) observe.Recorder {
	return &recorder{next: s.Sink.Recorder(l), w: s.w}
}

// Forget passes to the wrapped sink if it drops the series of removed
// agents (daemon.Forgetter).
func (s *Sink) Forget(workload, agent string) {
	if f, ok := s.Sink.(interface{ Forget(workload, agent string) }); ok {
		f.Forget(workload, agent)
	}
}

// Shard passes to the wrapped sink if it exports the daemon's shard
// (daemon.ShardReporter).
func (s *Sink) Shard(index, count int) {
	if r, ok := s.Sink.(interface{ Shard(index, count int) }); ok {
		r.Shard(index, count)
	}
}

// recorder delegates to the wrapped recorder and, when a request finishes,
// records its line too.
type recorder struct {
	next observe.Recorder
	w    *Writer
}

func (r *recorder) Started(saturated bool) { r.next.Started(saturated) }

// TokenGap only delegates: it is on the per-chunk hot path.
func (r *recorder) TokenGap(d time.Duration) { r.next.TokenGap(d) }

// Finished records q with the wrapped recorder, then its line, stamped with
// the time Finished was called.
func (r *recorder) Finished(q *observe.Request) {
	at := time.Now()
	r.next.Finished(q)
	r.w.Record(at, q)
}

func (r *recorder) Retried(reason observe.Reason) { r.next.Retried(reason) }
