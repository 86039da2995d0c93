package ollamasim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
)

func TestCompletionCounts(t *testing.T) {
	const n = 12
	for _, tc := range []struct {
		name   string
		gen    bool
		stream bool
	}{
		{"chat stream", false, true},
		{"chat whole", false, false},
		{"generate stream", true, true},
		{"generate whole", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, c, _ := start(t, fast())
			ctx := ctxT(t)
			stream := tc.stream
			opts := map[string]any{"num_predict": n}
			var calls, chunks, evalCount, promptCount int
			var text, reason string
			var m api.Metrics
			var err error
			if tc.gen {
				req := &api.GenerateRequest{Model: "sim-tiny", Prompt: "tell me a story", Stream: &stream, Options: opts}
				err = c.Generate(ctx, req, func(r api.GenerateResponse) error {
					calls++
					text += r.Response
					if !r.Done {
						chunks++
						if wordCount(r.Response) != 1 {
							t.Errorf("chunk %q is not one token", r.Response)
						}
						return nil
					}
					reason, m = r.DoneReason, r.Metrics
					return nil
				})
			} else {
				req := chatReq("sim-tiny", opts)
				req.Stream = &stream
				err = c.Chat(ctx, req, func(r api.ChatResponse) error {
					calls++
					text += r.Message.Content
					if r.Message.Role != "assistant" {
						t.Errorf("role = %q", r.Message.Role)
					}
					if !r.Done {
						chunks++
						return nil
					}
					reason, m = r.DoneReason, r.Metrics
					return nil
				})
			}
			if err != nil {
				t.Fatal(err)
			}
			evalCount, promptCount = m.EvalCount, m.PromptEvalCount
			wantChunks, wantCalls := n, n+1
			if !tc.stream {
				wantChunks, wantCalls = 0, 1
			}
			if chunks != wantChunks || calls != wantCalls {
				t.Errorf("chunks, calls = %d, %d; want %d, %d", chunks, calls, wantChunks, wantCalls)
			}
			if evalCount != n || wordCount(text) != n {
				t.Errorf("eval_count = %d, words = %d; want %d", evalCount, wordCount(text), n)
			}
			if reason != "length" {
				t.Errorf("done_reason = %q, want length", reason)
			}
			if promptCount <= 0 || m.PromptEvalDuration <= 0 || m.EvalDuration <= 0 || m.LoadDuration <= 0 {
				t.Errorf("metrics missing: %+v", m)
			}
			if m.TotalDuration < m.LoadDuration+m.PromptEvalDuration+m.EvalDuration {
				t.Errorf("total_duration %v < load+prompt+eval in %+v", m.TotalDuration, m)
			}
			st := s.Stats()
			if st.EvalTokens != n || st.StreamedTokens != n || st.Completed != 1 || st.Requests != 1 ||
				st.PromptTokens != int64(promptCount) {
				t.Errorf("stats = %+v", st)
			}
		})
	}
}

func TestDefaultLengthStops(t *testing.T) {
	cfg := fast()
	cfg.MinTokens, cfg.MaxTokens = 3, 6
	s, c, _ := start(t, cfg)
	var total int64
	for range 5 {
		r := chat(ctxT(t), c, chatReq("sim-tiny", nil))
		if r.err != nil || r.final == nil {
			t.Fatalf("chat: %v, final %v", r.err, r.final)
		}
		if n := r.final.EvalCount; n < 3 || n > 6 || n != r.chunks {
			t.Errorf("eval_count = %d with %d chunks, want 3..6 and equal", n, r.chunks)
		}
		if r.final.DoneReason != "stop" {
			t.Errorf("done_reason = %q, want stop", r.final.DoneReason)
		}
		total += int64(r.final.EvalCount)
	}
	if got := s.Stats().EvalTokens; got != total {
		t.Errorf("Stats.EvalTokens = %d, want %d", got, total)
	}
}

// TestWireFormat reads the stream raw, as something other than the api
// package would.
func TestWireFormat(t *testing.T) {
	_, _, base := start(t, fast())
	body := `{"model":"sim-tiny","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":2}}`
	resp, err := http.Post(base+"/api/chat", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("Content-Type = %q", ct)
	}
	var lines []map[string]any
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3", len(lines))
	}
	for _, key := range []string{"model", "created_at", "message", "done"} {
		if _, ok := lines[0][key]; !ok {
			t.Errorf("chunk lacks %q: %v", key, lines[0])
		}
	}
	if lines[0]["done"] != false {
		t.Errorf("chunk done = %v", lines[0]["done"])
	}
	last := lines[2]
	for _, key := range []string{"done_reason", "total_duration", "load_duration", "prompt_eval_count",
		"prompt_eval_duration", "eval_count", "eval_duration"} {
		if _, ok := last[key]; !ok {
			t.Errorf("final chunk lacks %q: %v", key, last)
		}
	}
	if last["done"] != true || last["eval_count"] != 2.0 {
		t.Errorf("final chunk = %v", last)
	}
}

func TestErrors(t *testing.T) {
	cfg := fast()
	s, c, base := start(t, cfg)
	ctx := ctxT(t)

	r := chat(ctx, c, chatReq("nope", nil))
	var se api.StatusError
	if !errors.As(r.err, &se) || se.StatusCode != http.StatusNotFound || se.ErrorMessage != "model 'nope' not found" {
		t.Errorf("unknown model: %v", r.err)
	}
	_, err := c.Show(ctx, &api.ShowRequest{Model: "nope"})
	if !errors.As(err, &se) || se.StatusCode != http.StatusNotFound {
		t.Errorf("show unknown model: %v", err)
	}

	for _, body := range []string{`{"model":`, `{"messages":[]}`, `{"model":"sim-tiny","options":{"num_predict":"x"}}`} {
		resp, err := http.Post(base+"/api/chat", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"error"`) {
			t.Errorf("%s: %d %s", body, resp.StatusCode, b)
		}
	}
	if st := s.Stats(); st.NotFound != 1 || st.BadRequests != 3 || st.Requests != 4 {
		t.Errorf("stats = %+v", st)
	}
}

func TestQueueFull(t *testing.T) {
	cfg := fast()
	cfg.NumParallel, cfg.MaxQueue = 1, 1
	cfg.GPU = NewGPU(GPUConfig{DecodeRate: 400})
	s, c, _ := start(t, cfg)
	ctx := ctxT(t)
	results := make([]result, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = chat(ctx, c, chatReq("sim-tiny", map[string]any{"num_predict": 30}))
		}()
		// Arrive one after another: running, queued, then one too many.
		switch i {
		case 0:
			waitFor(t, "a running request", func() bool { return s.Stats().Running == 1 })
		case 1:
			waitFor(t, "a queued request", func() bool { return s.Stats().Queued == 1 })
		}
	}
	wg.Wait()
	busy := 0
	for i, r := range results {
		var se api.StatusError
		switch {
		case errors.As(r.err, &se) && se.StatusCode == http.StatusServiceUnavailable:
			busy++
			if se.ErrorMessage != errBusy.Error() {
				t.Errorf("503 message = %q", se.ErrorMessage)
			}
		case r.err != nil || r.final == nil:
			t.Errorf("request %d: %v", i, r.err)
		}
	}
	if busy != 1 || results[2].err == nil {
		t.Errorf("got %d 503s, want exactly one, for the third request", busy)
	}
	if st := s.Stats(); st.Rejected != 1 || st.Completed != 2 {
		t.Errorf("stats = %+v", st)
	}
}

func TestFIFO(t *testing.T) {
	cfg := fast()
	cfg.LoadDelay = 100 * time.Millisecond
	cfg.GPU = NewGPU(GPUConfig{DecodeRate: 400})
	s, c, _ := start(t, cfg)
	ctx := ctxT(t)
	const n = 3
	results := make([]result, n)
	sent := make([]time.Time, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sent[i] = time.Now()
		go func() {
			defer wg.Done()
			results[i] = chat(ctx, c, chatReq("sim-tiny", map[string]any{"num_predict": 20}))
		}()
		if i == 0 {
			waitFor(t, "the first request to hold the slot", func() bool { return s.Stats().Running == 1 })
		} else {
			waitFor(t, "the queue to grow", func() bool { return s.Stats().Queued == i })
		}
	}
	wg.Wait()
	for i, r := range results {
		if r.err != nil || r.final == nil {
			t.Fatalf("request %d: %v", i, r.err)
		}
	}
	for i := 1; i < n; i++ {
		prev, r := results[i-1], results[i]
		// Compare the server's timestamps: the clients' goroutines may
		// see the chunks late, in any order.
		if !r.firstSent.After(prev.final.CreatedAt) {
			t.Errorf("request %d streamed before request %d was done", i, i-1)
		}
		// The first request's decode started after the others were sent
		// (they arrived during its load), so each queued request waited
		// at least as long as the one before it decoded.
		if ttft := r.firstToken.Sub(sent[i]); ttft < prev.final.EvalDuration {
			t.Errorf("request %d: TTFT %v < previous eval_duration %v", i, ttft, prev.final.EvalDuration)
		}
		if r.final.LoadDuration >= cfg.LoadDelay {
			t.Errorf("request %d: load_duration %v includes the queue wait", i, r.final.LoadDuration)
		}
		if r.final.TotalDuration < prev.final.EvalDuration {
			t.Errorf("request %d: total_duration %v excludes the queue wait", i, r.final.TotalDuration)
		}
	}
}

func TestModelLoads(t *testing.T) {
	cfg := fast()
	cfg.LoadDelay = 50 * time.Millisecond
	cfg.GPU = NewGPU(GPUConfig{DecodeRate: 2000, MemoryBytes: 1 << 30})
	s, c, _ := start(t, cfg)
	ctx := ctxT(t)
	zero := &api.Duration{Duration: 0}
	for _, step := range []struct {
		name      string
		opts      map[string]any
		keepAlive *api.Duration
		cold      bool
		loaded    bool // after the request
		numCtx    int
		vram      int64
	}{
		{"first use loads", nil, nil, true, true, 4096, 512 << 20},
		{"warm", map[string]any{"temperature": 0.2}, nil, false, true, 4096, 512 << 20},
		{"num_ctx change reloads", map[string]any{"num_ctx": 8192}, nil, true, true, 8192, 512 << 20},
		{"same num_ctx is warm", map[string]any{"num_ctx": 8192}, nil, false, true, 8192, 512 << 20},
		{"num_gpu 0 reloads on CPU", map[string]any{"num_ctx": 8192, "num_gpu": 0}, nil, true, true, 8192, 0},
		{"keep_alive 0 unloads after", map[string]any{"num_ctx": 8192, "num_gpu": 0}, zero, false, false, 0, 0},
		{"after unload loads again", nil, nil, true, true, 4096, 512 << 20},
	} {
		loadsBefore := s.Stats().Loads
		req := chatReq("sim-tiny", step.opts)
		req.KeepAlive = step.keepAlive
		r := chat(ctx, c, req)
		if r.err != nil || r.final == nil {
			t.Fatalf("%s: %v", step.name, r.err)
		}
		loads := s.Stats().Loads - loadsBefore
		ld := r.final.LoadDuration
		if step.cold && (loads != 1 || ld < cfg.LoadDelay) || !step.cold && (loads != 0 || ld >= cfg.LoadDelay) {
			t.Errorf("%s: %d loads, load_duration %v", step.name, loads, ld)
		}
		ps, err := c.ListRunning(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !step.loaded {
			if len(ps.Models) != 0 || s.GPU().Stats().UsedMemoryBytes != 0 {
				t.Errorf("%s: still loaded: %+v", step.name, ps.Models)
			}
			continue
		}
		if len(ps.Models) != 1 {
			t.Fatalf("%s: ps = %+v", step.name, ps.Models)
		}
		m := ps.Models[0]
		if m.Name != "sim-tiny:latest" || m.ContextLength != step.numCtx || m.SizeVRAM != step.vram ||
			m.Size != 512<<20 || m.Digest == "" || m.Details.Family != "llama" {
			t.Errorf("%s: ps model = %+v", step.name, m)
		}
		if until := time.Until(m.ExpiresAt); until < 4*time.Minute || until > 5*time.Minute {
			t.Errorf("%s: expires in %v, want about 5m", step.name, until)
		}
		if got := s.GPU().Stats().UsedMemoryBytes; got != step.vram {
			t.Errorf("%s: GPU memory used = %d, want %d", step.name, got, step.vram)
		}
	}
}

func TestKeepAliveExpires(t *testing.T) {
	s, c, _ := start(t, fast())
	ctx := ctxT(t)
	req := chatReq("sim-tiny", nil)
	req.KeepAlive = &api.Duration{Duration: 30 * time.Millisecond}
	if r := chat(ctx, c, req); r.err != nil {
		t.Fatal(r.err)
	}
	waitFor(t, "the model to expire", func() bool { return s.Stats().LoadedModels == 0 })
	if used := s.GPU().Stats().UsedMemoryBytes; used != 0 {
		t.Errorf("GPU memory used after expiry = %d", used)
	}
	r := chat(ctx, c, chatReq("sim-tiny", nil))
	if r.err != nil || r.final.LoadDuration < 20*time.Millisecond || s.Stats().Loads != 2 {
		t.Errorf("after expiry: %v, load_duration %v, loads %d", r.err, r.final.LoadDuration, s.Stats().Loads)
	}
	// A negative keep_alive keeps the model for good.
	req.KeepAlive = &api.Duration{Duration: -1}
	if r := chat(ctx, c, req); r.err != nil {
		t.Fatal(r.err)
	}
	ps, err := c.ListRunning(ctx)
	if err != nil || len(ps.Models) != 1 || time.Until(ps.Models[0].ExpiresAt) < 100*365*24*time.Hour {
		t.Errorf("ps after keep_alive -1: %+v, %v", ps, err)
	}
}

func TestMemoryOverflowsToCPU(t *testing.T) {
	cfg := fast()
	cfg.GPU = NewGPU(GPUConfig{DecodeRate: 2000, MemoryBytes: 1 << 30})
	cfg.Models = []Model{{Name: "big", SizeBytes: 3 << 29}, {Name: "small:q4", SizeBytes: 1 << 28}}
	s, c, _ := start(t, cfg)
	ctx := ctxT(t)
	for _, name := range []string{"big", "small:q4"} {
		if r := chat(ctx, c, chatReq(name, nil)); r.err != nil {
			t.Fatal(r.err)
		}
	}
	ps, err := c.ListRunning(ctx)
	if err != nil || len(ps.Models) != 2 {
		t.Fatalf("ps: %+v, %v", ps, err)
	}
	if ps.Models[0].SizeVRAM != 1<<30 || ps.Models[1].SizeVRAM != 0 {
		t.Errorf("size_vram = %d, %d; want all of the GPU, then none", ps.Models[0].SizeVRAM, ps.Models[1].SizeVRAM)
	}
	s.Close()
	if used := cfg.GPU.Stats().UsedMemoryBytes; used != 0 {
		t.Errorf("GPU memory used after Close = %d", used)
	}
}

func TestSharedGPU(t *testing.T) {
	const (
		rate = 400.0
		n    = 80
	)
	gpu := NewGPU(GPUConfig{DecodeRate: rate, ConcurrencyGain: 0.5})
	cfg := fast()
	cfg.GPU = gpu
	_, ca, _ := start(t, cfg)
	_, cb, _ := start(t, cfg)
	ctx := ctxT(t)
	opts := map[string]any{"num_predict": n}
	// Warm both so that the streams start together.
	for _, c := range []*api.Client{ca, cb} {
		if r := chat(ctx, c, chatReq("sim-tiny", map[string]any{"num_predict": 1})); r.err != nil {
			t.Fatal(r.err)
		}
	}
	alone := chat(ctx, ca, chatReq("sim-tiny", opts))
	if alone.err != nil {
		t.Fatal(alone.err)
	}
	var wg sync.WaitGroup
	shared := make([]result, 2)
	for i, c := range []*api.Client{ca, cb} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			shared[i] = chat(ctx, c, chatReq("sim-tiny", opts))
		}()
	}
	waitFor(t, "two streams on the GPU", func() bool { return gpu.Stats().ActiveStreams == 2 })
	wg.Wait()
	ideal := time.Duration(n / rate * float64(time.Second))
	t.Logf("alone %v, shared %v and %v, ideal alone %v", alone.final.EvalDuration,
		shared[0].final.EvalDuration, shared[1].final.EvalDuration, ideal)
	if alone.final.EvalDuration < ideal {
		t.Errorf("alone: eval_duration %v < %v", alone.final.EvalDuration, ideal)
	}
	for i, r := range shared {
		if r.err != nil {
			t.Fatal(r.err)
		}
		// Each of two streams gets 1.5/2 of the rate: 4/3 of the time.
		if d := r.final.EvalDuration; d < ideal*6/5 || d <= alone.final.EvalDuration {
			t.Errorf("shared stream %d: eval_duration %v, want ≥ %v and > alone %v", i, d, ideal*6/5, alone.final.EvalDuration)
		}
	}
	if gs := gpu.Stats(); gs.ActiveStreams != 0 || gs.DecodedTokens != 2+3*n || gs.BusyTime <= 0 {
		t.Errorf("GPU stats = %+v", gs)
	}
}

func TestFaults(t *testing.T) {
	const n = 20
	for _, tc := range []struct {
		name   string
		faults Faults
		check  func(t *testing.T, r result, st Stats)
	}{
		{"error", Faults{ErrorRatio: 1}, func(t *testing.T, r result, st Stats) {
			var se api.StatusError
			if !errors.As(r.err, &se) || se.StatusCode != http.StatusInternalServerError || se.ErrorMessage != "simulated failure" {
				t.Errorf("err = %v", r.err)
			}
			if r.chunks != 0 || st.Errors != 1 || st.StreamedTokens != 0 {
				t.Errorf("chunks %d, stats %+v", r.chunks, st)
			}
		}},
		{"drop", Faults{DropRatio: 1}, func(t *testing.T, r result, st Stats) {
			if r.final != nil {
				t.Errorf("got a done chunk from a dropped stream")
			}
			if r.chunks < 1 || r.chunks >= n {
				t.Errorf("dropped after %d chunks, want 1..%d", r.chunks, n-1)
			}
			if st.Dropped != 1 || st.StreamedTokens != int64(r.chunks) || st.EvalTokens != 0 || st.Completed != 0 {
				t.Errorf("stats = %+v", st)
			}
		}},
		{"stall", Faults{StallRatio: 1, StallDuration: 150 * time.Millisecond}, func(t *testing.T, r result, st Stats) {
			if r.err != nil || r.final == nil {
				t.Fatalf("err = %v", r.err)
			}
			if r.final.EvalDuration < 150*time.Millisecond || r.final.EvalCount != n {
				t.Errorf("eval_duration %v, eval_count %d", r.final.EvalDuration, r.final.EvalCount)
			}
			if st.Stalled != 1 || st.Completed != 1 {
				t.Errorf("stats = %+v", st)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fast()
			cfg.Faults = tc.faults
			s, c, _ := start(t, cfg)
			r := chat(ctxT(t), c, chatReq("sim-tiny", map[string]any{"num_predict": n}))
			tc.check(t, r, s.Stats())
			// The slot is free again whatever happened.
			waitFor(t, "the slot to free", func() bool { return s.Stats().Running == 0 })
		})
	}
}

func TestDeterminism(t *testing.T) {
	texts := func(seed int64) []string {
		cfg := fast()
		cfg.Seed = seed
		cfg.Jitter = 0.5
		_, c, _ := start(t, cfg)
		var out []string
		for range 3 {
			r := chat(ctxT(t), c, chatReq("sim-tiny", nil))
			if r.err != nil {
				t.Fatal(r.err)
			}
			out = append(out, r.text)
		}
		return out
	}
	a, b, other := texts(7), texts(7), texts(8)
	if strings.Join(a, "|") != strings.Join(b, "|") {
		t.Errorf("same seed, different text:\n%q\n%q", a, b)
	}
	if strings.Join(a, "|") == strings.Join(other, "|") {
		t.Errorf("different seeds, same text: %q", a)
	}
	if a[0] == a[1] {
		t.Errorf("two requests, same text: %q", a[0])
	}
}

func TestCancel(t *testing.T) {
	cfg := fast()
	cfg.GPU = NewGPU(GPUConfig{DecodeRate: 100})
	s, c, _ := start(t, cfg)
	ctx := ctxT(t)

	// A long request holds the slot; a second one queues, then gives up.
	ctx1, cancel1 := context.WithCancel(ctx)
	done1 := make(chan result, 1)
	go func() { done1 <- chat(ctx1, c, chatReq("sim-tiny", map[string]any{"num_predict": 1000})) }()
	waitFor(t, "the long request to stream", func() bool { return s.Stats().StreamedTokens > 0 })
	ctx2, cancel2 := context.WithCancel(ctx)
	done2 := make(chan result, 1)
	go func() { done2 <- chat(ctx2, c, chatReq("sim-tiny", nil)) }()
	waitFor(t, "a queued request", func() bool { return s.Stats().Queued == 1 })
	cancel2()
	<-done2
	waitFor(t, "the queue to empty", func() bool { return s.Stats().Queued == 0 })

	// The long request's client goes away mid-stream: the slot frees at once.
	cancel1()
	<-done1
	waitFor(t, "the slot to free", func() bool { return s.Stats().Running == 0 && s.GPU().Stats().ActiveStreams == 0 })
	if st := s.Stats(); st.Canceled != 2 || st.Completed != 0 {
		t.Errorf("stats = %+v", st)
	}
	if r := chat(ctx, c, chatReq("sim-tiny", map[string]any{"num_predict": 2})); r.err != nil || r.final == nil {
		t.Errorf("after cancels: %v", r.err)
	}
}

func TestCloseEndsRequests(t *testing.T) {
	cfg := fast()
	cfg.GPU = NewGPU(GPUConfig{DecodeRate: 100})
	s, c, _ := start(t, cfg)
	ctx := ctxT(t)
	done := make(chan result, 1)
	go func() { done <- chat(ctx, c, chatReq("sim-tiny", map[string]any{"num_predict": 1000})) }()
	waitFor(t, "streaming", func() bool { return s.Stats().StreamedTokens > 0 })
	s.Close()
	s.Close()
	select {
	case r := <-done:
		if r.final != nil {
			t.Errorf("request finished after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("request still running after Close")
	}
	r := chat(ctx, c, chatReq("sim-tiny", nil))
	var se api.StatusError
	if !errors.As(r.err, &se) || se.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("after Close: %v", r.err)
	}
	if gs := s.GPU().Stats(); gs.UsedMemoryBytes != 0 || gs.ActiveStreams != 0 {
		t.Errorf("GPU after Close = %+v", gs)
	}
}

func TestLoadOnly(t *testing.T) {
	s, c, _ := start(t, fast())
	var got []api.GenerateResponse
	err := c.Generate(ctxT(t), &api.GenerateRequest{Model: "sim-tiny"}, func(r api.GenerateResponse) error {
		got = append(got, r)
		return nil
	})
	if err != nil || len(got) != 1 || !got[0].Done || got[0].DoneReason != "load" || got[0].LoadDuration < 20*time.Millisecond {
		t.Errorf("load-only generate: %v, %+v", err, got)
	}
	if st := s.Stats(); st.Loads != 1 || st.LoadedModels != 1 || st.EvalTokens != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestInfoEndpoints(t *testing.T) {
	cfg := fast()
	cfg.Models = []Model{{Name: "sim-tiny", SizeBytes: 512 << 20}, {Name: "sim-big:8b", SizeBytes: 5 << 30}}
	_, c, base := start(t, cfg)
	ctx := ctxT(t)

	if v, err := c.Version(ctx); err != nil || v != "0.17.4-sim" {
		t.Errorf("version = %q, %v", v, err)
	}
	if err := c.Heartbeat(ctx); err != nil {
		t.Errorf("heartbeat: %v", err)
	}
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "Ollama is running" {
		t.Errorf("GET / = %d %q", resp.StatusCode, b)
	}

	tags, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range tags.Models {
		names = append(names, m.Name)
		if m.Model != m.Name || len(m.Digest) != 64 || m.Details.Format != "gguf" || m.ModifiedAt.IsZero() {
			t.Errorf("tag = %+v", m)
		}
	}
	if strings.Join(names, ",") != "sim-tiny:latest,sim-big:8b" || tags.Models[1].Size != 5<<30 {
		t.Errorf("tags = %+v", tags.Models)
	}

	ps, err := c.ListRunning(ctx)
	if err != nil || ps.Models == nil || len(ps.Models) != 0 {
		t.Errorf("ps before any request = %+v, %v", ps, err)
	}

	show, err := c.Show(ctx, &api.ShowRequest{Model: "sim-big:8b"})
	if err != nil {
		t.Fatal(err)
	}
	d := show.Details
	if d.Family != "llama" || d.Format != "gguf" || d.ParameterSize != "9.5B" || d.QuantizationLevel != "Q4_K_M" {
		t.Errorf("details = %+v", d)
	}
	if show.ModelInfo["general.architecture"] != "llama" || show.ModelInfo["llama.context_length"] == nil {
		t.Errorf("model_info = %v", show.ModelInfo)
	}
	if len(show.Capabilities) != 1 || show.Capabilities[0] != "completion" {
		t.Errorf("capabilities = %v", show.Capabilities)
	}
	if _, err := c.Show(ctx, &api.ShowRequest{Model: "sim-tiny"}); err != nil {
		t.Errorf("show without tag: %v", err)
	}
}
