package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/chimeraforge/chimeraforge/ollamasim"
)

// simOptions are the flags of `chimeraforge sim`.
type simOptions struct {
	listen string
	gpu    ollamasim.GPUConfig
	cfg    ollamasim.Config
	models []string
	// For tests: serve on this listener.
	listener net.Listener
}

func registerSimFlags(c *kingpin.CmdClause) *simOptions {
	o := &simOptions{}
	c.Flag("listen-address", "Address to serve the Ollama API on.").Default("127.0.0.1:11434").StringVar(&o.listen)
	c.Flag("num-parallel", "Requests served at once (OLLAMA_NUM_PARALLEL).").Default("1").IntVar(&o.cfg.NumParallel)
	c.Flag("max-queue", "Requests waiting beyond the busy slots before 503 (OLLAMA_MAX_QUEUE).").Default("512").IntVar(&o.cfg.MaxQueue)
	c.Flag("decode-rate", "Tokens per second of one stream alone on the simulated GPU.").Default("60").Float64Var(&o.gpu.DecodeRate)
	c.Flag("concurrency-gain", "Extra aggregate throughput per extra concurrent stream, as a fraction of decode-rate.").Default("0.5").Float64Var(&o.gpu.ConcurrencyGain)
	c.Flag("prompt-eval-rate", "Prompt tokens per second.").Default("2000").Float64Var(&o.cfg.PromptEvalRate)
	c.Flag("jitter", "Relative jitter on each token interval (0..1).").Default("0.1").Float64Var(&o.cfg.Jitter)
	c.Flag("load-delay", "Time to load a model (first use, keep_alive expiry, num_ctx/num_gpu change).").Default("300ms").DurationVar(&o.cfg.LoadDelay)
	c.Flag("first-token-delay", "Extra delay injected before the first token.").Default("0s").DurationVar(&o.cfg.FirstTokenDelay)
	c.Flag("seed", "Seed for text, lengths, jitter and faults.").Default("1").Int64Var(&o.cfg.Seed)
	c.Flag("version-string", "Version answered on /api/version.").Default("0.17.4-sim").StringVar(&o.cfg.Version)
	c.Flag("model", "Model served (repeatable).").Default("sim-tiny").StringsVar(&o.models)
	c.Flag("fault.error-ratio", "Share of requests answered 500 before streaming.").Default("0").Float64Var(&o.cfg.Faults.ErrorRatio)
	c.Flag("fault.stall-ratio", "Share of requests that pause mid-stream.").Default("0").Float64Var(&o.cfg.Faults.StallRatio)
	c.Flag("fault.stall-duration", "Length of a mid-stream pause.").Default("5s").DurationVar(&o.cfg.Faults.StallDuration)
	c.Flag("fault.drop-ratio", "Share of requests whose connection is dropped mid-stream.").Default("0").Float64Var(&o.cfg.Faults.DropRatio)
	return o
}

// runSim serves one simulator until ctx ends.
func runSim(ctx context.Context, o *simOptions, stdout, _ io.Writer) error {
	o.gpu.Name = "simulated"
	// The simulator reads 0 as "my default"; on the command line 0 means none.
	for _, v := range []*float64{&o.cfg.Jitter, &o.gpu.ConcurrencyGain} {
		if *v == 0 {
			*v = -1
		}
	}
	if o.cfg.LoadDelay == 0 {
		o.cfg.LoadDelay = -1
	}
	o.cfg.Name = "sim"
	o.cfg.GPU = ollamasim.NewGPU(o.gpu)
	for _, m := range o.models {
		o.cfg.Models = append(o.cfg.Models, ollamasim.Model{Name: m})
	}
	srv, err := ollamasim.New(o.cfg)
	if err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	defer srv.Close()
	l := o.listener
	if l == nil {
		if l, err = (&net.ListenConfig{}).Listen(ctx, "tcp", o.listen); err != nil {
			return fmt.Errorf("simulator: listen on %s: %w", o.listen, err)
		}
	}
	// /sim/stats is not Ollama's: the simulator's own counters (tokens
	// streamed, requests running), for the benchmark harness.
	mux := http.NewServeMux()
	mux.Handle("/", srv.Handler())
	mux.HandleFunc("GET /sim/stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(srv.Stats())
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(l) }()
	fmt.Fprintf(stdout, "chimeraforge sim: Ollama API simulator at http://%s (a test double, not Ollama)\n", l.Addr())
	select {
	case err = <-done:
		return fmt.Errorf("simulator: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("simulator: shutdown: %w", err)
	}
	return nil
}
