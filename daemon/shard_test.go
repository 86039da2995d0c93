package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/chimeraforge/chimeraforge/config"
	"github.com/chimeraforge/chimeraforge/ollamasim"
)

// Shard records the shards the daemon reported, as "index/count".
func (s *recordingSink) Shard(index, count int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shards = append(s.shards, fmt.Sprintf("%d/%d", index, count))
}

var _ ShardReporter = (*recordingSink)(nil)

func closedWorkload(replicas ...int) config.Workload {
	w := config.Workload{Name: "w", Arrival: config.Arrival{Mode: config.ArrivalClosed}}
	for i, r := range replicas {
		w.Agents = append(w.Agents, config.WorkloadAgent{Agent: fmt.Sprintf("a%d", i), Replicas: r})
	}
	return w
}

// replicasOn returns, per agent name, the replicas shard index of count runs.
func replicasOn(w config.Workload, index, count int) map[string][]int {
	sh := shareOf(w, config.Shard{Index: index, Count: count})
	out := map[string][]int{}
	for i, wa := range sh.cfg.Agents {
		if wa.Replicas != len(sh.replicas[i]) || wa.Replicas == 0 {
			panic(fmt.Sprintf("agent %s: replicas %d, replica numbers %v", wa.Agent, wa.Replicas, sh.replicas[i]))
		}
		out[wa.Agent] = sh.replicas[i]
	}
	return out
}

func TestShareSplitsClosedLoopReplicas(t *testing.T) {
	for _, r := range []int{1, 2, 3, 5} {
		for _, count := range []int{1, 2, 3} {
			t.Run(fmt.Sprintf("R=%d/count=%d", r, count), func(t *testing.T) {
				w := closedWorkload(r)
				var counts []int
				var all []int
				for i := range count {
					rs := replicasOn(w, i, count)["a0"]
					// The first agent of a workload: shard i runs the replicas
					// r with r mod count = i, ⌊(R + count − 1 − i) / count⌋ of
					// them.
					if want := (r + count - 1 - i) / count; len(rs) != want {
						t.Errorf("shard %d runs %v, want %d replicas", i, rs, want)
					}
					for _, x := range rs {
						if x%count != i {
							t.Errorf("shard %d runs replica %d", i, x)
						}
					}
					counts = append(counts, len(rs))
					all = append(all, rs...)
				}
				slices.Sort(all)
				if want := seq(r); !slices.Equal(all, want) {
					t.Errorf("replicas over all shards %v, want each of %v once", all, want)
				}
				if slices.Max(counts)-slices.Min(counts) > 1 {
					t.Errorf("replicas per shard %v differ by more than 1", counts)
				}
			})
		}
	}
}

// TestShareSpreadsAgents: replicas are dealt in workload order, agent after
// agent, so that each agent and the workload as a whole are spread evenly,
// and agents of one replica each land on different shards.
func TestShareSpreadsAgents(t *testing.T) {
	replicas := []int{1, 2, 3, 5, 1, 1}
	w := closedWorkload(replicas...)
	for _, count := range []int{1, 2, 3, 4} {
		perAgent := map[string][]int{}
		var totals []int
		for i := range count {
			on := replicasOn(w, i, count)
			total := 0
			for agent, rs := range on {
				perAgent[agent] = append(perAgent[agent], rs...)
				total += len(rs)
			}
			totals = append(totals, total)
		}
		if slices.Max(totals)-slices.Min(totals) > 1 {
			t.Errorf("count %d: replicas per shard %v differ by more than 1", count, totals)
		}
		for k, r := range replicas {
			agent := fmt.Sprintf("a%d", k)
			got := slices.Sorted(slices.Values(perAgent[agent]))
			if !slices.Equal(got, seq(r)) {
				t.Errorf("count %d: agent %s runs replicas %v over all shards, want %v", count, agent, got, seq(r))
			}
			var per []int
			for i := range count {
				per = append(per, len(replicasOn(w, i, count)[agent]))
			}
			if slices.Max(per)-slices.Min(per) > 1 {
				t.Errorf("count %d: agent %s replicas per shard %v differ by more than 1", count, agent, per)
			}
		}
	}
	// Two agents of one replica each: one on each of two shards.
	two := closedWorkload(1, 1)
	if a, b := replicasOn(two, 0, 2), replicasOn(two, 1, 2); !maps.EqualFunc(a, map[string][]int{"a0": {0}}, slices.Equal) ||
		!maps.EqualFunc(b, map[string][]int{"a1": {0}}, slices.Equal) {
		t.Errorf("agents of one replica over two shards: shard 0 %v, shard 1 %v", a, b)
	}
	// One shard runs the workload unchanged.
	if sh := shareOf(w, config.Shard{Index: 0, Count: 1}); !slices.Equal(sh.cfg.Agents, w.Agents) {
		t.Errorf("one shard runs %v, want %v", sh.cfg.Agents, w.Agents)
	}
}

func TestShareSplitsOpenLoopRate(t *testing.T) {
	for _, tc := range []struct {
		rate          float64
		maxInFlight   int
		count         int
		wantRate      float64
		wantInFlight  int
		wantInFlights int // over all shards: ≥ max_in_flight, less than count more
	}{
		{10, 8, 1, 10, 8, 8},
		{10, 8, 2, 5, 4, 8},
		{10, 7, 2, 5, 4, 8},
		{9, 8, 3, 3, 3, 9},
		{0.5, 1, 3, 0.5 / 3, 1, 3},
		{4, 2, 4, 1, 1, 4},
	} {
		for _, mode := range []string{config.ArrivalConstant, config.ArrivalPoisson} {
			w := closedWorkload(3, 1)
			w.Arrival = config.Arrival{Mode: mode, Rate: tc.rate, MaxInFlight: tc.maxInFlight, Seed: 7}
			var rateSum float64
			inFlight := 0
			for i := range tc.count {
				sh := shareOf(w, config.Shard{Index: i, Count: tc.count})
				a := sh.cfg.Arrival
				if a.Rate != tc.wantRate || a.MaxInFlight != tc.wantInFlight || a.Mode != mode || a.Seed != 7 {
					t.Errorf("%s rate %v max_in_flight %d, shard %d of %d: arrival %+v, want rate %v max_in_flight %d",
						mode, tc.rate, tc.maxInFlight, i, tc.count, a, tc.wantRate, tc.wantInFlight)
				}
				// Every shard runs every agent, with the same weights.
				if !slices.Equal(sh.cfg.Agents, w.Agents) || sh.replicas != nil {
					t.Errorf("%s shard %d runs agents %v (replicas %v), want %v", mode, i, sh.cfg.Agents, sh.replicas, w.Agents)
				}
				rateSum += a.Rate
				inFlight += a.MaxInFlight
			}
			if d := rateSum - tc.rate; d > 1e-9 || d < -1e-9 {
				t.Errorf("%s: rates over %d shards add up to %v, want %v", mode, tc.count, rateSum, tc.rate)
			}
			if inFlight != tc.wantInFlights {
				t.Errorf("%s: max_in_flight over %d shards adds up to %d, want %d", mode, tc.count, inFlight, tc.wantInFlights)
			}
		}
	}
}

func TestShardSeedsDiffer(t *testing.T) {
	if got := shardSeed(42, 0); got != 42 {
		t.Errorf("shard 0 seed %d, want the configured 42", got)
	}
	seen := map[int64]int{}
	for _, seed := range []int64{0, 1, 42, -5} {
		for i := range 8 {
			s := shardSeed(seed, i)
			if j, dup := seen[s]; dup {
				t.Errorf("seed %d shard %d: %d, already the seed of %d", seed, i, s, j)
			}
			seen[s] = i
			if again := shardSeed(seed, i); again != s {
				t.Errorf("seed %d shard %d: %d then %d, want reproducible", seed, i, s, again)
			}
		}
	}
	// The Poisson streams of two shards of one seed differ.
	a, b := NewPoissonPacer(5, shardSeed(7, 0)), NewPoissonPacer(5, shardSeed(7, 1))
	same := 0
	for range 100 {
		if a.Interval() == b.Interval() {
			same++
		}
	}
	if same > 0 {
		t.Errorf("%d of 100 gaps equal on two shards of one seed", same)
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// promptLog is an Ollama simulator behind a handler that records which
// agent replica sent each chat request, from prompts "from AGENT replica N".
type promptLog struct {
	mu   sync.Mutex
	seen map[string]int // "agent/replica" → requests
}

var promptMark = regexp.MustCompile(`from (\w+) replica (\d+)`)

// wrap records the prompts of the chat requests next answered while their
// client stayed: a request canceled by a reload can reach the server after
// the reload, and is not a run of the new configuration.
func (p *promptLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/chat" {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
		if m := promptMark.FindSubmatch(body); m != nil && r.Context().Err() == nil {
			p.mu.Lock()
			p.seen[string(m[1])+"/"+string(m[2])]++
			p.mu.Unlock()
		}
	})
}

// take returns the replicas seen since the last call, sorted, and forgets
// them.
func (p *promptLog) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := slices.Sorted(maps.Keys(p.seen))
	p.seen = map[string]int{}
	return out
}

const shardedConfig = `
global: {shutdown_timeout: 2s, shard: {index: %d, count: %d}}
targets: [{name: t, url: %q, num_parallel: 8}]
agents:
  - {name: a, target: t, model: sim-tiny, options: {num_predict: 3}, workflow: [{name: ask, prompt: "from {{.Agent}} replica {{.Replica}}"}]}
  - {name: b, target: t, model: sim-tiny, options: {num_predict: 3}, workflow: [{name: ask, prompt: "from {{.Agent}} replica {{.Replica}}"}]}
  - {name: c, target: t, model: sim-tiny, options: {num_predict: 3}, workflow: [{name: ask, prompt: "from {{.Agent}} replica {{.Replica}}"}]}
workloads:
  - {name: w, agents: [{agent: a, replicas: 3}, {agent: b, replicas: 2}], calibration: {at_start: false}}
  - {name: solo, agents: [{agent: c}], calibration: {runs: 1}}
`

func newPromptSim(t *testing.T) (*promptLog, string) {
	t.Helper()
	sim, err := ollamasim.New(ollamasim.Config{NumParallel: 8, LoadDelay: -1, Jitter: -1,
		GPU: ollamasim.NewGPU(ollamasim.GPUConfig{DecodeRate: 2000})})
	if err != nil {
		t.Fatal(err)
	}
	p := &promptLog{seen: map[string]int{}}
	srv := httptest.NewServer(p.wrap(sim.Handler()))
	t.Cleanup(func() {
		srv.Close()
		sim.Close()
	})
	return p, srv.URL
}

// TestShardsRunDisjointReplicas runs the two shards of one configuration
// against one server and reads, from the prompts, which agent replicas each
// sent: every replica runs on exactly one shard, as dealt, and a shard that
// has no replica of an agent neither runs nor calibrates it, nor has any
// series for it.
func TestShardsRunDisjointReplicas(t *testing.T) {
	prompts, url := newPromptSim(t)
	// Workload w: a0 a1 a2 b0 b1 dealt over two shards; solo: c0 on shard 0.
	want := [][]string{
		{"a/0", "a/2", "b/1", "c/0"},
		{"a/1", "b/0"},
	}
	for i := range 2 {
		sink := newRecordingSink()
		runFor(t, mustConfig(t, fmt.Sprintf(shardedConfig, i, 2, url)), sink, 700*time.Millisecond)
		got := prompts.take()
		if !slices.Equal(got, want[i]) {
			t.Errorf("shard %d of 2 ran replicas %v, want %v", i, got, want[i])
		}
		sink.mu.Lock()
		agents := map[string]bool{}
		for l := range sink.recorders {
			agents[l.Workload+"/"+l.Agent] = true
		}
		calibrated := len(sink.calibrated)
		shards := slices.Clone(sink.shards)
		sink.mu.Unlock()
		if want := []string{fmt.Sprintf("%d/2", i)}; !slices.Equal(shards, want) {
			t.Errorf("shard %d: reported shards %v, want %v", i, shards, want)
		}
		wantAgents := map[string]bool{"w/a": true, "w/b": true}
		wantCalibrated := 0
		if i == 0 {
			wantAgents["solo/c"], wantCalibrated = true, 1
		}
		if !maps.Equal(agents, wantAgents) {
			t.Errorf("shard %d: series for %v, want %v", i, agents, wantAgents)
		}
		if calibrated != wantCalibrated {
			t.Errorf("shard %d: %d calibrations, want %d (c runs on shard 0 only)", i, calibrated, wantCalibrated)
		}
	}
}

// TestReloadChangesShard: a reload that changes the shard restarts the
// workloads with their new share, and drops the series of the agents that
// moved to other shards.
func TestReloadChangesShard(t *testing.T) {
	prompts, url := newPromptSim(t)
	sink := newRecordingSink()
	dm := New(mustConfig(t, fmt.Sprintf(shardedConfig, 0, 1, url)), sink, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dm.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	time.Sleep(500 * time.Millisecond)
	if got, want := prompts.take(), []string{"a/0", "a/1", "a/2", "b/0", "b/1", "c/0"}; !slices.Equal(got, want) {
		t.Errorf("one shard ran %v, want every replica %v", got, want)
	}
	if err := dm.Reload(mustConfig(t, fmt.Sprintf(shardedConfig, 1, 2, url))); err != nil {
		t.Fatal(err)
	}
	prompts.take() // runs that ended during the reload
	time.Sleep(500 * time.Millisecond)
	if got, want := prompts.take(), []string{"a/1", "b/0"}; !slices.Equal(got, want) {
		t.Errorf("after the reload to shard 1 of 2 ran %v, want %v", got, want)
	}
	sink.mu.Lock()
	forgotten, shards := slices.Clone(sink.forgotten), slices.Clone(sink.shards)
	activeC := sink.active["solo/c"]
	sink.mu.Unlock()
	if want := []string{"solo/c"}; !slices.Equal(forgotten, want) {
		t.Errorf("forgotten %v, want %v (c moved to shard 0; a and b still run here)", forgotten, want)
	}
	if want := []string{"0/1", "1/2"}; !slices.Equal(shards, want) {
		t.Errorf("reported shards %v, want %v", shards, want)
	}
	if activeC != 0 {
		t.Errorf("agent_active of c after it moved away: %d, want 0", activeC)
	}
}

// TestOpenLoopShardsSplitTheRate runs the two shards of a constant 20/s
// workload: each starts 10 arrivals per second.
func TestOpenLoopShardsSplitTheRate(t *testing.T) {
	for i := range 2 {
		cfg := mustConfig(t, fmt.Sprintf(simBase, 400, 4, 0, "1s", 4, "10s", "10s")+`
agents:
  - {name: a, target: s, model: sim-tiny, options: {num_predict: 2}, workflow: [{name: ask, prompt: hi}]}
workloads:
  - name: open
    agents: [{agent: a}]
    arrival: {mode: poisson, rate: 20, max_in_flight: 4, seed: 3}
    calibration: {at_start: false}
`)
		cfg.Global.Shard = config.Shard{Index: i, Count: 2}
		sink := newRecordingSink()
		runFor(t, cfg, sink, 2*time.Second)
		_, runs, arrivals, dropped := sink.snapshot()
		// Poisson with mean 20 over 2 s: 20 ± 2σ (σ ≈ 4.5) is 11..29; a
		// shard that ran the whole rate would see about 40.
		if arrivals < 9 || arrivals > 31 {
			t.Errorf("shard %d of 2: %d arrivals in 2 s at 20/s over 2 shards, want about 20", i, arrivals)
		}
		if dropped+len(runs) > arrivals || len(runs) == 0 {
			t.Errorf("shard %d: %d runs, %d dropped, %d arrivals", i, len(runs), dropped, arrivals)
		}
	}
}
