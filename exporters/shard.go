package exporters

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

func newShardInfo() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricShardInfo,
		Help: "Constant 1, labelled with the daemon's shard (global.shard): its index, from 0, and the number of shards that share the load.",
	}, []string{LabelShardIndex, LabelShardCount})
}

// Shard exports the daemon's shard as chimeraforge_shard_info, replacing the
// series of the previous shard, so that queries can tell replicas apart
// where Prometheus' own labels do not.
func (m *Metrics) Shard(index, count int) {
	m.shard.Reset()
	m.shard.WithLabelValues(strconv.Itoa(index), strconv.Itoa(count)).Set(1)
}
