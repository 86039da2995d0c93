package exporters

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chimeraforge/chimeraforge/observe"
)

// ollamaMetrics are the state of each Ollama server, from the daemon's polls
// of /api/version and /api/ps: what surrounds the load, joined to it by the
// target label.
type ollamaMetrics struct {
	up             *prometheus.GaugeVec
	info           *prometheus.GaugeVec
	versionChanges *prometheus.CounterVec
	loadedModels   *prometheus.GaugeVec
	size           *prometheus.GaugeVec
	vram           *prometheus.GaugeVec
	vramRatio      *prometheus.GaugeVec
	contextLength  *prometheus.GaugeVec
	expiry         *prometheus.GaugeVec
	loads          *prometheus.CounterVec
	unloads        *prometheus.CounterVec
	probeDuration  *prometheus.GaugeVec

	mu   sync.Mutex
	last map[string]polled // by target
}

// polled is what the previous poll of a target saw.
type polled struct {
	version string
	models  map[string]observe.LoadedModel
}

var (
	targetLabels = []string{LabelTarget}
	modelLabels  = []string{LabelTarget, LabelModel}
)

func newOllamaMetrics() *ollamaMetrics {
	g := func(name, help string, labels []string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	c := func(name, help string, labels []string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	return &ollamaMetrics{
		up:             g(MetricOllamaUp, "1 if the last poll of the target's /api/version and /api/ps succeeded, else 0.", targetLabels),
		info:           g(MetricOllamaInfo, "Constant 1, labelled with the Ollama version the target last reported.", []string{LabelTarget, LabelVersion}),
		versionChanges: c(MetricOllamaVersionChangesTotal, "Times the target reported a version different from the one before.", targetLabels),
		loadedModels:   g(MetricOllamaLoadedModels, "Models the target has loaded (/api/ps).", targetLabels),
		size:           g(MetricOllamaModelSizeBytes, "Memory a loaded model takes (/api/ps size).", modelLabels),
		vram:           g(MetricOllamaModelVRAMBytes, "Part of a loaded model's memory on the GPU (/api/ps size_vram).", modelLabels),
		vramRatio:      g(MetricOllamaModelVRAMRatio, "size_vram / size of a loaded model: 1 fully on the GPU, below 1 partly spilled to CPU, 0 on CPU only.", modelLabels),
		contextLength:  g(MetricOllamaModelContextLength, "Context length a loaded model runs with (/api/ps context_length).", modelLabels),
		expiry:         g(MetricOllamaModelExpiryTimestampSeconds, "When the server will unload the model unless used again (/api/ps expires_at), in seconds since the Unix epoch.", modelLabels),
		loads:          c(MetricOllamaModelLoadsTotal, "Models seen loaded (or loaded again with another context length) since the previous poll.", targetLabels),
		unloads:        c(MetricOllamaModelUnloadsTotal, "Models seen gone since the previous poll (unloaded or evicted).", targetLabels),
		probeDuration:  g(MetricOllamaProbeDurationSeconds, "How long the last poll of the target took.", targetLabels),
		last:           map[string]polled{},
	}
}

func (o *ollamaMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{o.up, o.info, o.versionChanges, o.loadedModels, o.size, o.vram,
		o.vramRatio, o.contextLength, o.expiry, o.loads, o.unloads, o.probeDuration}
}

// TargetPolled records one poll. Series of models no longer loaded are
// deleted, not left with their last values; while a target does not answer,
// its model series are gone too (their state is unknown) and only up,
// the last version seen and the counters remain.
func (m *Metrics) TargetPolled(s observe.TargetState) {
	o := m.ollama
	o.mu.Lock()
	defer o.mu.Unlock()
	t := s.Target
	o.probeDuration.WithLabelValues(t).Set(s.ProbeDuration.Seconds())
	o.versionChanges.WithLabelValues(t)
	o.loads.WithLabelValues(t)
	o.unloads.WithLabelValues(t)
	prev := o.last[t]
	if !s.Up {
		o.up.WithLabelValues(t).Set(0)
		o.loadedModels.DeleteLabelValues(t)
		o.deleteModels(t)
		o.last[t] = polled{version: prev.version}
		return
	}
	o.up.WithLabelValues(t).Set(1)
	if prev.version != s.Version {
		if prev.version != "" {
			o.versionChanges.WithLabelValues(t).Inc()
		}
		o.info.DeletePartialMatch(prometheus.Labels{LabelTarget: t})
		o.info.WithLabelValues(t, s.Version).Set(1)
	}
	now := make(map[string]observe.LoadedModel, len(s.Models))
	for _, lm := range s.Models {
		now[lm.Name] = lm
		if was, ok := prev.models[lm.Name]; prev.models != nil && (!ok || was.ContextLength != lm.ContextLength) {
			o.loads.WithLabelValues(t).Inc()
		}
	}
	for name := range prev.models {
		if _, ok := now[name]; !ok {
			o.unloads.WithLabelValues(t).Inc()
		}
	}
	o.deleteModels(t)
	o.loadedModels.WithLabelValues(t).Set(float64(len(s.Models)))
	for _, lm := range s.Models {
		o.size.WithLabelValues(t, lm.Name).Set(float64(lm.SizeBytes))
		o.vram.WithLabelValues(t, lm.Name).Set(float64(lm.VRAMBytes))
		ratio := 1.0 // a model of no size is not on the CPU
		if lm.SizeBytes > 0 {
			ratio = float64(lm.VRAMBytes) / float64(lm.SizeBytes)
		}
		o.vramRatio.WithLabelValues(t, lm.Name).Set(ratio)
		o.contextLength.WithLabelValues(t, lm.Name).Set(float64(lm.ContextLength))
		if !lm.ExpiresAt.IsZero() {
			o.expiry.WithLabelValues(t, lm.Name).Set(float64(lm.ExpiresAt.UnixMilli()) / 1e3)
		}
	}
	o.last[t] = polled{version: s.Version, models: now}
}

func (o *ollamaMetrics) deleteModels(target string) {
	match := prometheus.Labels{LabelTarget: target}
	for _, v := range []*prometheus.GaugeVec{o.size, o.vram, o.vramRatio, o.contextLength, o.expiry} {
		v.DeletePartialMatch(match)
	}
}

// TargetRemoved deletes every series of a target that a reload removed.
func (m *Metrics) TargetRemoved(target string) {
	o := m.ollama
	o.mu.Lock()
	defer o.mu.Unlock()
	match := prometheus.Labels{LabelTarget: target}
	for _, c := range o.collectors() {
		if v, ok := c.(interface {
			DeletePartialMatch(prometheus.Labels) int
		}); ok {
			v.DeletePartialMatch(match)
		}
	}
	delete(o.last, target)
}
