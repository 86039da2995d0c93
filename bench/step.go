package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chimeraforge/chimeraforge/internal/soak"
)

// step is one load level: Concurrency closed-loop streams, each answer
// NumPredict tokens at Rate tokens per second after an injected
// first-token delay.
type step struct {
	Concurrency int
	Rate        float64 // tokens per second of each stream
	NumPredict  int
	FirstDelay  time.Duration
}

// injectedTTFT is the time the simulator waits from taking a request to
// writing its first token: the injected delay, then one token interval
// (prompt evaluation and model loading are set to take no time).
func (s step) injectedTTFT() time.Duration {
	return s.FirstDelay + s.interval()
}

func (s step) interval() time.Duration { return time.Duration(float64(time.Second) / s.Rate) }

// idealTokensPerSecond is what the streams would deliver with no overhead
// at all: each request takes injectedTTFT plus NumPredict-1 intervals.
func (s step) idealTokensPerSecond() float64 {
	return float64(s.Concurrency) * float64(s.NumPredict) / s.requestTime().Seconds()
}

func (s step) String() string {
	return fmt.Sprintf("%d streams × %g tok/s × %d tokens", s.Concurrency, s.Rate, s.NumPredict)
}

// parseSteps reads "CxR,CxRxN": concurrency × tokens per second of each
// stream, and optionally × tokens per answer (numPredict otherwise).
func parseSteps(v string, numPredict int, firstDelay time.Duration) ([]step, error) {
	var out []step
	for _, f := range strings.Split(v, ",") {
		parts := strings.Split(strings.TrimSpace(f), "x")
		s := step{NumPredict: numPredict, FirstDelay: firstDelay}
		var err1, err2, err3 error
		if len(parts) == 2 || len(parts) == 3 {
			s.Concurrency, err1 = strconv.Atoi(parts[0])
			s.Rate, err2 = strconv.ParseFloat(parts[1], 64)
			if len(parts) == 3 {
				s.NumPredict, err3 = strconv.Atoi(parts[2])
			}
		}
		if len(parts) < 2 || len(parts) > 3 || err1 != nil || err2 != nil || err3 != nil ||
			s.Concurrency < 1 || !(s.Rate > 0) || s.NumPredict < 1 {
			return nil, fmt.Errorf("--steps: %q is not CONCURRENCYxTOKENS_PER_SECOND[xTOKENS_PER_ANSWER] (e.g. 100x50 or 5000x4x64)", f)
		}
		out = append(out, s)
	}
	return out, nil
}

// requestTime is how long one answer takes with no overhead at all.
func (s step) requestTime() time.Duration {
	return s.injectedTTFT() + time.Duration(s.NumPredict-1)*s.interval()
}

// ramp is how long a client takes to start its streams: one answer's
// time, so that they are evenly spread over it and stay so, instead of
// sending every request of a round at once.
func (s step) ramp() time.Duration { return s.requestTime() }

// result is what one client did in one step's measured window.
type result struct {
	Client string // "daemon" or "floor"
	Step   step

	Window        time.Duration
	Tokens        int64   // streamed by the simulator in the window
	TokensPerSec  float64 // Tokens / Window
	Ideal         float64 // idealTokensPerSecond
	ClientCores   float64 // client CPU seconds per second of window
	SimCores      float64
	MachineBusy   float64 // share of all CPUs busy
	CPUPerMTokens float64 // client CPU seconds per million tokens
	AllocsPerTok  float64
	PeakRSS       int64
	Goroutines    int
	Requests      int // successful requests that ended in the window
	Failed        int // other requests that ended in the window

	TTFTErr    summary // daemon TTFT − injected TTFT
	MeanGapErr summary // per request: mean gap between tokens − injected interval
	MaxGapErr  summary // per request: longest gap − injected interval
}

// limited names what ran out of CPU in the window, if anything: the
// machine was busy (≥ 95 % of every CPU) or the streams fell behind the
// ideal by more than 5 %, and the busier of the two processes is named.
func (r result) limited() string {
	if r.MachineBusy < 0.95 && r.TokensPerSec >= 0.95*r.Ideal {
		return "no"
	}
	who := r.Client
	if r.SimCores > r.ClientCores {
		who = "simulator"
	}
	return fmt.Sprintf("yes: %s (machine %.0f%% busy)", who, 100*r.MachineBusy)
}

type runner struct {
	bin     string // chimeraforge
	self    string // this harness, for `floor`
	dir     string
	warmup  time.Duration
	window  time.Duration
	maxRamp time.Duration
}

// windowFor is the measured window of s: at least two whole requests long,
// so that every stream finishes requests inside it.
func (r *runner) windowFor(s step) time.Duration {
	return max(r.window, 2*s.requestTime())
}

// client is the process under measurement in a step.
type client interface {
	proc() *proc
	stats(ctx context.Context) (clientStats, error)
	records() string // file of per-request records, complete once stopped
}

// run measures one client kind at one step, each in fresh processes.
func (r *runner) run(ctx context.Context, kind string, s step) (res result, err error) {
	res = result{Client: kind, Step: s, Ideal: s.idealTokensPerSecond()}
	sim, simURL, err := r.startSim(s)
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := sim.stop(10 * time.Second); serr != nil && err == nil {
			err = serr
		}
	}()
	var c client
	switch kind {
	case "daemon":
		c, err = r.startDaemon(s, simURL)
	default:
		c, err = r.startFloor(s, simURL)
	}
	if err != nil {
		return res, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = c.proc().stop(10 * time.Second)
		}
	}()

	// Ramp: every stream in flight, then the warm-up.
	deadline := time.Now().Add(r.maxRamp)
	for {
		st, err := readSimStats(ctx, simURL)
		if err != nil {
			return res, err
		}
		if st.Running >= s.Concurrency {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("%s, %s: only %d of %d streams running after %s", kind, s, st.Running, s.Concurrency, r.maxRamp)
		}
		if done, perr := c.proc().exited(); done {
			return res, fmt.Errorf("%s exited during the ramp: %w: %s", kind, exitStatus(perr), c.proc().stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := sleepCtx(ctx, r.warmup); err != nil {
		return res, err
	}

	// The window. The client's stats are read outside the CPU readings, so
	// that answering them is not charged to it.
	// Two readings back to back: the second minus the first is what
	// answering one reading allocates, taken out of the window's count.
	pre, err := c.stats(ctx)
	if err != nil {
		return res, err
	}
	st0, err := c.stats(ctx)
	if err != nil {
		return res, err
	}
	readingAllocs := st0.Mallocs - pre.Mallocs
	a, err := sample(c.proc().pid(), sim.pid(), simURL)
	if err != nil {
		return res, err
	}
	if err := sleepCtx(ctx, r.windowFor(s)); err != nil {
		return res, err
	}
	b, err := sample(c.proc().pid(), sim.pid(), simURL)
	if err != nil {
		return res, err
	}
	st1, err := c.stats(ctx)
	if err != nil {
		return res, err
	}
	mem, err := readMemory(c.proc().pid())
	if err != nil {
		return res, err
	}
	stopped = true
	if err := c.proc().stop(15 * time.Second); err != nil {
		return res, err
	}

	wall := b.at.Sub(a.at)
	res.Window = wall
	res.Tokens = b.sim.StreamedTokens - a.sim.StreamedTokens
	res.TokensPerSec = float64(res.Tokens) / wall.Seconds()
	res.ClientCores = (b.client - a.client).Seconds() / wall.Seconds()
	res.SimCores = (b.simCPU - a.simCPU).Seconds() / wall.Seconds()
	res.MachineBusy = busyShare(a.machine, b.machine)
	if res.Tokens > 0 {
		res.CPUPerMTokens = (b.client - a.client).Seconds() / float64(res.Tokens) * 1e6
		res.AllocsPerTok = float64(st1.Mallocs-st0.Mallocs-min(readingAllocs, st1.Mallocs-st0.Mallocs)) / float64(res.Tokens)
	}
	res.PeakRSS = mem.Peak
	res.Goroutines = max(st0.Goroutines, st1.Goroutines)

	recs, err := readRecords(c.records())
	if err != nil {
		return res, err
	}
	var ttft, meanGap, maxGap []float64
	inj, iv := s.injectedTTFT().Seconds(), s.interval().Seconds()
	for _, rec := range recs {
		if rec.Time.Before(a.at) || rec.Time.After(b.at) {
			continue
		}
		if rec.Outcome != "success" || rec.TTFT == nil || rec.LastToken == nil {
			res.Failed++
			continue
		}
		res.Requests++
		ttft = append(ttft, *rec.TTFT-inj)
		if rec.Chunks > 1 {
			meanGap = append(meanGap, (*rec.LastToken-*rec.TTFT)/float64(rec.Chunks-1)-iv)
			maxGap = append(maxGap, rec.MaxTokenGap-iv)
		}
	}
	res.TTFTErr, res.MeanGapErr, res.MaxGapErr = summarize(ttft), summarize(meanGap), summarize(maxGap)
	return res, nil
}

// point is one reading of the clocks of a step.
type point struct {
	at             time.Time
	client, simCPU time.Duration
	machine        machineCPU
	sim            simStats
}

func sample(clientPID, simPID int, simURL string) (point, error) {
	var p point
	var err error
	p.at = time.Now()
	if p.client, err = cpuTime(clientPID); err != nil {
		return p, err
	}
	if p.simCPU, err = cpuTime(simPID); err != nil {
		return p, err
	}
	if p.machine, err = readMachineCPU(); err != nil {
		return p, err
	}
	p.sim, err = readSimStats(context.Background(), simURL)
	return p, err
}

// simStats is the part of `chimeraforge sim`'s /sim/stats the harness reads.
type simStats struct {
	StreamedTokens int64
	Completed      int64
	Running        int
}

func readSimStats(ctx context.Context, base string) (simStats, error) {
	var st simStats
	return st, getJSON(ctx, base+"/sim/stats", &st)
}

func getJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// simEnv turns the simulator's garbage collector off up to a 2 GiB heap.
// The simulator allocates for every token it encodes; with thousands of
// streams its collections delayed tokens by up to ~80 ms, which both
// clients measured as error although it is the test double's, not theirs
// and not Ollama's (5,000 streams: daemon TTFT error p99 9.1 ms with the
// simulator's default GC, 4.0 ms without).
var simEnv = []string{"GOGC=off", "GOMEMLIMIT=2GiB"}

// startSim starts `chimeraforge sim` so that every stream gets s.Rate
// tokens per second however many run (concurrency gain 1), with no jitter,
// no model load and no prompt evaluation time: the TTFT it injects is
// exactly s.injectedTTFT() after it takes the request.
func (r *runner) startSim(s step) (*proc, string, error) {
	p, err := startProcEnv("simulator", simEnv, r.bin, "sim",
		"--listen-address=127.0.0.1:0",
		"--num-parallel="+strconv.Itoa(s.Concurrency),
		"--max-queue="+strconv.Itoa(s.Concurrency),
		"--decode-rate="+strconv.FormatFloat(s.Rate, 'g', -1, 64),
		"--concurrency-gain=1",
		"--prompt-eval-rate=1e18",
		"--jitter=0",
		"--load-delay=0s",
		"--first-token-delay="+s.FirstDelay.String())
	if err != nil {
		return nil, "", err
	}
	line, err := p.firstLine("http://", 10*time.Second)
	if err != nil {
		_ = p.stop(time.Second)
		return nil, "", err
	}
	url := line[strings.Index(line, "http://"):]
	url, _, _ = strings.Cut(url, " ")
	return p, url, nil
}

type daemonClient struct {
	p       *proc
	metrics string
	log     string
}

func (d *daemonClient) proc() *proc     { return d.p }
func (d *daemonClient) records() string { return d.log }

// stats reads go_goroutines and go_memstats_mallocs_total from /metrics.
func (d *daemonClient) stats(ctx context.Context) (clientStats, error) {
	var st clientStats
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.metrics, nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, fmt.Errorf("scrape the daemon: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, fmt.Errorf("scrape the daemon: %w", err)
	}
	sc, err := soak.ParseScrape(string(body))
	if err != nil {
		return st, fmt.Errorf("scrape the daemon: %w", err)
	}
	goroutines, ok1 := sc.Get("go_goroutines")
	mallocs, ok2 := sc.Get("go_memstats_mallocs_total")
	if !ok1 || !ok2 {
		return st, errors.New("scrape the daemon: go_goroutines or go_memstats_mallocs_total missing")
	}
	return clientStats{Goroutines: int(goroutines), Mallocs: uint64(mallocs)}, nil
}

// startDaemon runs `chimeraforge run` with one agent of s.Concurrency
// closed-loop replicas, no think time and no calibration, and its request
// log on.
func (r *runner) startDaemon(s step, simURL string) (*daemonClient, error) {
	cfg := filepath.Join(r.dir, "bench.yaml")
	if err := os.WriteFile(cfg, []byte(daemonConfig(simURL, s.Concurrency, s.NumPredict, s.ramp())), 0o600); err != nil {
		return nil, fmt.Errorf("write the daemon's config: %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	log := filepath.Join(r.dir, "daemon-requests.jsonl")
	_ = os.Remove(log)
	p, err := startProc("daemon", r.bin, "run", "--config="+cfg, "--web.listen-address="+addr,
		"--request-log="+log, "--log.level=warn")
	if err != nil {
		return nil, err
	}
	d := &daemonClient{p: p, metrics: "http://" + addr + "/metrics", log: log}
	if err := waitReady(p, "http://"+addr+"/readyz", 30*time.Second); err != nil {
		_ = p.stop(time.Second)
		return nil, err
	}
	return d, nil
}

// daemonConfig is the daemon's configuration for a step: what the floor
// does, in the daemon's terms.
func daemonConfig(url string, concurrency, numPredict int, ramp time.Duration) string {
	return fmt.Sprintf(`global:
  shutdown_timeout: 5s
targets:
  - name: sim
    url: %s
    num_parallel: %d
agents:
  - name: bench
    target: sim
    model: sim-tiny
    options:
      num_predict: %d
      temperature: 0
    workflow:
      - name: answer
        prompt: Count to ten.
workloads:
  - name: bench
    agents:
      - agent: bench
        replicas: %d
    ramp_up: %s
    calibration:
      at_start: false
      on_version_change: false
`, url, concurrency, numPredict, concurrency, ramp)
}

// waitReady polls url until it answers 200.
func waitReady(p *proc, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url) //nolint:noctx // loopback, bounded by the loop
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if done, perr := p.exited(); done {
			return fmt.Errorf("%s exited before it was ready: %w: %s", p.name, exitStatus(perr), p.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %s: %s", p.name, timeout, p.stderr)
}

type floorClient struct {
	p    *proc
	base string // the floor's stats server
	out  string
}

func (f *floorClient) proc() *proc     { return f.p }
func (f *floorClient) records() string { return f.out }
func (f *floorClient) stats(ctx context.Context) (clientStats, error) {
	var st clientStats
	return st, getJSON(ctx, f.base+"/stats", &st)
}

func (r *runner) startFloor(s step, simURL string) (*floorClient, error) {
	out := filepath.Join(r.dir, "floor-requests.jsonl")
	_ = os.Remove(out)
	p, err := startProc("floor", r.self, "floor", "--url="+simURL,
		"--concurrency="+strconv.Itoa(s.Concurrency), "--num-predict="+strconv.Itoa(s.NumPredict),
		"--ramp="+s.ramp().String(), "--out="+out)
	if err != nil {
		return nil, err
	}
	line, err := p.firstLine("http://", 10*time.Second)
	if err != nil {
		_ = p.stop(time.Second)
		return nil, err
	}
	return &floorClient{p: p, base: line[strings.Index(line, "http://"):], out: out}, nil
}

// record is one request of the daemon's request log or the floor's.
type record struct {
	Time        time.Time `json:"time"`
	Outcome     string    `json:"outcome"`
	TTFT        *float64  `json:"ttft_seconds"`
	LastToken   *float64  `json:"last_token_seconds"`
	MaxTokenGap float64   `json:"max_token_gap_seconds"`
	Chunks      int       `json:"content_chunks"`
}

func readRecords(path string) ([]record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read requests: %w", err)
	}
	defer f.Close()
	var out []record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("read requests: %s:%d: %w", path, n, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// summary is a distribution of measurement errors in seconds.
type summary struct {
	N                  int
	Min, P50, P99, Max float64
}

// summarize takes nearest-rank percentiles; N is 0 when v is empty.
func summarize(v []float64) summary {
	if len(v) == 0 {
		return summary{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(i, 0)]
	}
	return summary{N: len(s), Min: s[0], P50: rank(0.50), P99: rank(0.99), Max: s[len(s)-1]}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
