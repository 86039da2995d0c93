package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// The floor is the smallest honest Go client for the streams the daemon
// sends: net/http, a line reader, and encoding/json decoding only the fields
// a measurement needs. It measures what the daemon measures (time to first
// token, the last token, the longest gap between tokens) and nothing else:
// no metrics, no templates, no retries. The harness runs it in a process of
// its own, beside the daemon, and reports the daemon's figures as ratios to
// it.

// floorChunk is the part of a streamed chat chunk the floor reads.
type floorChunk struct {
	Message struct {
		Content string `json:"content"`
	} `json:"message"`
	Done bool `json:"done"`
}

// floorRecord is one request as the floor measured it. It is written in the
// field names of the daemon's request log, so that one parser reads both.
type floorRecord struct {
	Time        time.Time `json:"time"`
	Outcome     string    `json:"outcome"`
	Duration    float64   `json:"duration_seconds"`
	TTFT        *float64  `json:"ttft_seconds,omitempty"`
	LastToken   *float64  `json:"last_token_seconds,omitempty"`
	MaxTokenGap float64   `json:"max_token_gap_seconds"`
	Chunks      int       `json:"content_chunks"`
}

type floorOptions struct {
	url         string
	concurrency int
	numPredict  int
	prompt      string
	model       string
	statsAddr   string
	out         string
	duration    time.Duration
	ramp        time.Duration
}

// runFloor is `bench floor`: it runs until SIGTERM or its duration, then
// writes every request it finished to --out.
func runFloor(args []string) error {
	var o floorOptions
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	fs.StringVar(&o.url, "url", "", "base URL of the Ollama API")
	fs.IntVar(&o.concurrency, "concurrency", 1, "concurrent streams")
	fs.IntVar(&o.numPredict, "num-predict", 256, "tokens per answer")
	fs.StringVar(&o.prompt, "prompt", "Count to ten.", "prompt")
	fs.StringVar(&o.model, "model", "sim-tiny", "model")
	fs.StringVar(&o.statsAddr, "stats-address", "127.0.0.1:0", "address serving /stats (goroutines, allocations)")
	fs.StringVar(&o.out, "out", "", "file to write the requests to at the end (JSON lines)")
	fs.DurationVar(&o.duration, "duration", 10*time.Minute, "stop after this long at most")
	fs.DurationVar(&o.ramp, "ramp", 0, "start the streams evenly spread over this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.url == "" || o.out == "" {
		return errors.New("floor: --url and --out are required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()

	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", o.statsAddr)
	if err != nil {
		return fmt.Errorf("floor: listen for stats: %w", err)
	}
	stats := &http.Server{Handler: http.HandlerFunc(serveStats), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = stats.Serve(l) }()
	defer stats.Close()
	// The harness reads the stats address from the first line.
	fmt.Printf("floor stats at http://%s\n", l.Addr())

	records := floor(ctx, o)
	f, err := os.Create(o.out)
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for i := range records {
		if err := enc.Encode(&records[i]); err != nil {
			return fmt.Errorf("floor: write %s: %w", o.out, err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("floor: write %s: %w", o.out, err)
	}
	return f.Close()
}

// serveStats answers the harness's questions the daemon answers on
// /metrics: goroutines and heap allocations so far.
func serveStats(w http.ResponseWriter, _ *http.Request) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	_ = json.NewEncoder(w).Encode(clientStats{Goroutines: runtime.NumGoroutine(), Mallocs: ms.Mallocs})
}

// clientStats is what the harness reads from a client during a step.
type clientStats struct {
	Goroutines int
	Mallocs    uint64
}

// floor runs o.concurrency closed loops of requests until ctx ends.
func floor(ctx context.Context, o floorOptions) []floorRecord {
	body, _ := json.Marshal(map[string]any{
		"model":    o.model,
		"messages": []map[string]string{{"role": "user", "content": o.prompt}},
		"options":  map[string]any{"num_predict": o.numPredict, "temperature": 0},
	})
	client := &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: o.concurrency,
		IdleConnTimeout:     90 * time.Second,
	}}
	url := o.url + "/api/chat"
	var (
		mu  sync.Mutex
		all []floorRecord
		wg  sync.WaitGroup
	)
	for i := range o.concurrency {
		wg.Go(func() {
			select { // the daemon's ramp_up
			case <-time.After(time.Duration(int64(o.ramp) * int64(i) / int64(o.concurrency))):
			case <-ctx.Done():
				return
			}
			var mine []floorRecord
			br := bufio.NewReaderSize(nil, 4096)
			for ctx.Err() == nil {
				r, ok := floorRequest(ctx, client, url, body, br)
				if ok {
					mine = append(mine, r)
				}
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return all
}

// floorRequest sends one request and reads its stream. It returns false
// when ctx ended it, which is how every loop ends.
func floorRequest(ctx context.Context, client *http.Client, url string, body []byte, br *bufio.Reader) (floorRecord, bool) {
	start := time.Now()
	rec := floorRecord{Outcome: "error"}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return rec, false
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return rec, false
		}
		rec.Time, rec.Duration = time.Now(), time.Since(start).Seconds()
		return rec, true
	}
	defer resp.Body.Close()
	br.Reset(resp.Body)
	var first, last time.Time
	var maxGap time.Duration
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			var c floorChunk
			if json.Unmarshal(line, &c) != nil {
				break
			}
			now := time.Now()
			if c.Message.Content != "" {
				if first.IsZero() {
					first = now
				} else if gap := now.Sub(last); gap > maxGap {
					maxGap = gap
				}
				last = now
				rec.Chunks++
			}
			if c.Done {
				rec.Outcome = "success"
				break
			}
		}
		if err != nil {
			break
		}
	}
	if ctx.Err() != nil {
		return rec, false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	end := time.Now()
	rec.Time, rec.Duration = end, end.Sub(start).Seconds()
	if !first.IsZero() {
		ttft, lastTok := first.Sub(start).Seconds(), last.Sub(start).Seconds()
		rec.TTFT, rec.LastToken = &ttft, &lastTok
	}
	rec.MaxTokenGap = maxGap.Seconds()
	return rec, true
}
