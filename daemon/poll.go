package daemon

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/chimeraforge/chimeraforge/observe"
)

// poll reads a target's /api/version and /api/ps once, bounded by the
// connect timeout plus a second for each answer.
func (t *target) poll(ctx context.Context) (observe.TargetState, error) {
	start := time.Now()
	s := observe.TargetState{Target: t.name}
	ctx, cancel := context.WithTimeout(ctx, 2*(t.cfg.Timeouts.Connect+time.Second))
	defer cancel()
	v, err := t.client.Version(ctx)
	if err != nil {
		s.ProbeDuration = time.Since(start)
		return s, fmt.Errorf("poll %s /api/version: %w", t.name, err)
	}
	ps, err := t.client.ListRunning(ctx)
	s.ProbeDuration = time.Since(start)
	if err != nil {
		return s, fmt.Errorf("poll %s /api/ps: %w", t.name, err)
	}
	s.Up, s.Version = true, v
	for _, m := range ps.Models {
		s.Models = append(s.Models, observe.LoadedModel{
			Name: m.Name, SizeBytes: m.Size, VRAMBytes: m.SizeVRAM,
			ContextLength: m.ContextLength, ExpiresAt: m.ExpiresAt,
		})
	}
	return s, nil
}

// pollTarget polls t until ctx ends: at once, then every
// global.readiness_probe_interval until it first answers, then every
// targets[].poll_interval. Each poll is recorded; a new version is logged
// and recalibrates the workloads that use the target. A target going down
// or coming back is logged once per change, not once per poll.
func (d *Daemon) pollTarget(ctx context.Context, t *target, retry time.Duration) {
	var version string
	wasUp, first := false, true
	for {
		s, err := t.poll(ctx)
		if ctx.Err() != nil {
			return // replaced or stopping: this poll is not news
		}
		d.sink.TargetPolled(s)
		switch {
		case err != nil && (wasUp || first):
			d.log.Warn("target not answering; polling on", zap.String("target", t.name), zap.Error(err))
		case err == nil && !wasUp:
			d.log.Info("target answered", zap.String("target", t.name), zap.String("version", s.Version))
		}
		if err == nil {
			t.setVersion(s.Version)
			if version != "" && s.Version != version {
				d.log.Warn("target version changed", zap.String("target", t.name), zap.String("from", version), zap.String("to", s.Version))
				d.calibrateUsers(t.name)
			}
			version = s.Version
		}
		wasUp, first = err == nil, false
		wait := t.cfg.PollInterval
		if version == "" {
			wait = retry
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// calibrateUsers requests a calibration of every workload that sends to
// target and recalibrates on version changes.
func (d *Daemon) calibrateUsers(target string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.workloads {
		if !w.cfg.Calibration.OnVersionChange {
			continue
		}
		for _, ar := range w.agents {
			if slices.Contains(ar.agent.TargetNames(), target) {
				w.requestCalibration()
				break
			}
		}
	}
}
