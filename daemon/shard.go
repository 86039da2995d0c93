package daemon

import (
	"github.com/chimeraforge/chimeraforge/config"
)

// Scale-out by sharding: several daemons run one configuration, each with
// its own global.shard index, and each generates its share of the load;
// Prometheus adds the shares up. Nothing is coordinated at run time: a
// shard's share follows from the configuration and its index alone, so a
// shard that restarts takes up exactly the share it had.

// ShardReporter is implemented by sinks that export which shard the daemon
// runs. The daemon calls Shard when it starts and when a reload changes the
// shard.
type ShardReporter interface {
	Shard(index, count int)
}

// share is the part of a workload that one shard runs.
type share struct {
	// cfg is the workload as the shard runs it. Closed loop: only the agents
	// with at least one replica on the shard, with their replica count on
	// it. Open loop: every agent, with the shard's part of the rate and of
	// max_in_flight.
	cfg config.Workload
	// replicas holds, per agent of cfg (closed loop only), the numbers of
	// the agent's replicas the shard runs, among 0 … replicas-1 of the
	// whole configuration.
	replicas [][]int
}

// shareOf returns the part of workload w that shard s runs.
//
// Closed loop: the workload's replicas are numbered in order, agent after
// agent (the first agent's replicas 0 … R₁−1, then the second agent's, and
// so on), and dealt round-robin: shard i runs the replicas whose position p
// has p mod count = i. Every agent's replicas are then spread as evenly as
// they can be (the shards' counts of it differ by at most 1 and add up to
// its replicas), and so are the workload's: agents of one replica each go
// to different shards instead of all to shard 0. An agent with R replicas
// whose first replica has position o runs ⌊(R + count − 1 − j) / count⌋
// replicas on shard i, where j = (i − o) mod count.
//
// Open loop: every shard runs every agent, with the same weights, at
// rate / count arrivals per second and at most ⌈max_in_flight / count⌉
// runs in flight.
func shareOf(w config.Workload, s config.Shard) share {
	n := max(s.Count, 1)
	if w.Arrival.Mode != config.ArrivalClosed {
		w.Arrival.Rate /= float64(n)
		w.Arrival.MaxInFlight = ceilDiv(w.Arrival.MaxInFlight, n)
		return share{cfg: w}
	}
	var sh share
	all := w.Agents
	w.Agents = nil
	pos := 0
	for _, wa := range all {
		rs := dealReplicas(pos, wa.Replicas, s.Index, n)
		pos += wa.Replicas
		if len(rs) == 0 {
			continue
		}
		w.Agents = append(w.Agents, config.WorkloadAgent{Agent: wa.Agent, Replicas: len(rs)})
		sh.replicas = append(sh.replicas, rs)
	}
	sh.cfg = w
	return sh
}

// dealReplicas returns the replicas r of an agent (0 ≤ r < replicas) that
// shard index of count runs when its first replica has workload position
// first: those with (first + r) mod count = index.
func dealReplicas(first, replicas, index, count int) []int {
	var out []int
	r := ((index-first)%count + count) % count
	for ; r < replicas; r += count {
		out = append(out, r)
	}
	return out
}

func ceilDiv(a, b int) int {
	return (a + b - 1) / b
}

// shardSeed is the Poisson seed of a shard: the configured (or picked) seed
// on shard 0, so that one daemon alone draws what it always drew, and a
// different, reproducible stream on every other shard, so that shards do not
// send their arrivals at the same instants.
func shardSeed(seed int64, index int) int64 {
	const golden = 0x9e3779b97f4a7c15 // 2⁶⁴/φ: consecutive indexes land far apart
	return int64(uint64(seed) + uint64(index)*golden)
}
