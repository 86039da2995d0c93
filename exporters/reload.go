package exporters

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reload exports the outcome of the last configuration load, like
// Prometheus' own prometheus_config_last_reload_* metrics.
type Reload struct {
	successful prometheus.Gauge
	timestamp  prometheus.Gauge
}

// NewReload creates the configuration reload gauges and registers them with
// reg. On error nothing stays registered.
func NewReload(reg prometheus.Registerer) (*Reload, error) {
	r := &Reload{
		successful: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricConfigLastReloadSuccessful,
			Help: "Whether the last configuration load or reload succeeded (1) or failed (0).",
		}),
		timestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricConfigLastReloadSuccessTimestampSeconds,
			Help: "Time of the last successful configuration load or reload, in seconds since the Unix epoch.",
		}),
	}
	if err := registerAll(reg, r.successful, r.timestamp); err != nil {
		return nil, err
	}
	return r, nil
}

// Observe records a configuration load or reload attempted at at. The daemon
// calls it with ok true for the first load too. A failure leaves the time of
// the last success as it was.
func (r *Reload) Observe(ok bool, at time.Time) {
	if !ok {
		r.successful.Set(0)
		return
	}
	r.successful.Set(1)
	r.timestamp.Set(float64(at.UnixMilli()) / 1e3)
}
