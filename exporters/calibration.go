package exporters

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chimeraforge/chimeraforge/observe"
)

// calibrationMetrics are the series that make efficiency computable in
// PromQL: solo baselines, who is running, and when a calibration is going on.
type calibrationMetrics struct {
	baseline     *prometheus.GaugeVec
	baselineTime *prometheus.GaugeVec
	calibrating  *prometheus.GaugeVec
	active       *prometheus.GaugeVec
	calibrations *prometheus.CounterVec
}

func newCalibrationMetrics() calibrationMetrics {
	return calibrationMetrics{
		baseline: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricBaselineTokensPerSecond,
			Help: "Solo baseline: generated tokens per wall-clock second of the agent's own workflow loop, one replica, the other agents of its workload paused.",
		}, baselineLabels),
		baselineTime: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricBaselineTimestampSeconds,
			Help: "When the agent's current solo baseline was measured, in seconds since the Unix epoch.",
		}, agentLabels),
		calibrating: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricCalibrating,
			Help: "1 while the workload is calibrating solo baselines, else 0.",
		}, workloadLabels),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricAgentActive,
			Help: "Replicas of the agent that are running now (not paused for a calibration, not stopped).",
		}, agentLabels),
		calibrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricCalibrationsTotal,
			Help: "Solo calibrations of an agent that ended, by outcome (success, or error when a solo run failed and the previous baseline was kept).",
		}, runLabels),
	}
}

func (c calibrationMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{c.baseline, c.baselineTime, c.calibrating, c.active, c.calibrations}
}

func (c calibrationMetrics) perAgent() []interface {
	DeletePartialMatch(prometheus.Labels) int
} {
	return []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{c.baseline, c.baselineTime, c.active, c.calibrations}
}

// AgentActive moves the running-replica count of an agent.
func (m *Metrics) AgentActive(workload, agent string, delta int) {
	m.cal.active.WithLabelValues(workload, agent).Add(float64(delta))
}

// Calibrating sets the workload's calibrating gauge.
func (m *Metrics) Calibrating(workload string, on bool) {
	v := 0.0
	if on {
		v = 1
	}
	m.cal.calibrating.WithLabelValues(workload).Set(v)
}

// Calibrated records one agent's calibration; a failed one keeps the
// previous baselines.
func (m *Metrics) Calibrated(c observe.Calibration) {
	if !c.OK {
		m.cal.calibrations.WithLabelValues(c.Workload, c.Agent, string(observe.OutcomeError)).Inc()
		return
	}
	// The targets of this measurement replace the agent's previous ones.
	m.cal.baseline.DeletePartialMatch(prometheus.Labels{LabelWorkload: c.Workload, LabelAgent: c.Agent})
	for target, tps := range c.TokensPerSecond {
		m.cal.baseline.WithLabelValues(c.Workload, c.Agent, target, c.Model).Set(tps)
	}
	m.cal.baselineTime.WithLabelValues(c.Workload, c.Agent).Set(float64(c.At.UnixMilli()) / 1e3)
	m.cal.calibrations.WithLabelValues(c.Workload, c.Agent, string(observe.OutcomeSuccess)).Inc()
}
