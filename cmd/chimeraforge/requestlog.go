package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/chimeraforge/chimeraforge/exporters/requestlog"
	"github.com/chimeraforge/chimeraforge/observe"
)

// openRequestLog opens --request-log when it is given, registers its
// counters with reg and returns sink wrapped so that every request that
// ends is also logged, with a function that writes the log out and closes
// it. Without --request-log it returns sink itself and a no-op. The log
// stays open across reloads.
func openRequestLog(ctx context.Context, o runOptions, reg prometheus.Registerer, log *zap.Logger, sink observe.Sink) (observe.Sink, func(), error) {
	if o.requestLog == "" {
		return sink, func() {}, nil
	}
	// The flushing goroutine outlives ctx: when ctx ends the daemon still
	// records the requests it cancels, and the close function, called once
	// the daemon has stopped, writes them out.
	w, err := requestlog.Open(context.WithoutCancel(ctx), o.requestLog, requestlog.Options{MaxBytes: o.requestLogMaxBytes, Logger: log})
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, nil, fmt.Errorf("--request-log %q: open: %w", o.requestLog, err)
	}
	closeLog := func() {
		if err := w.Close(); err != nil {
			log.Error("close the request log", zap.String("path", o.requestLog), zap.Error(err))
		}
	}
	if err := reg.Register(w); err != nil {
		closeLog()
		return nil, nil, fmt.Errorf("register metrics: %w", err)
	}
	log.Info("writing one line per request to the request log", zap.String("path", o.requestLog), zap.Int64("max_bytes", o.requestLogMaxBytes))
	return requestlog.Wrap(sink, w), closeLog, nil
}
