package ollamasim

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // in the error; "" for none
	}{
		{"zero is valid", Config{}, ""},
		{"negative parallel", Config{NumParallel: -1}, "num_parallel"},
		{"negative queue", Config{MaxQueue: -1}, "max_queue"},
		{"jitter above 1", Config{Jitter: 1.5}, "jitter"},
		{"ratio above 1", Config{Faults: Faults{DropRatio: 2}}, "drop_ratio"},
		{"negative ratio", Config{Faults: Faults{ErrorRatio: -0.1}}, "error_ratio"},
		{"min above max", Config{MinTokens: 10, MaxTokens: 5}, "min_tokens"},
		{"empty model name", Config{Models: []Model{{Name: " "}}}, "name is empty"},
		{"duplicate model", Config{Models: []Model{{Name: "a"}, {Name: "a:latest"}}}, "duplicate"},
		{"negative size", Config{Models: []Model{{Name: "a", SizeBytes: -1}}}, "size_bytes"},
		{"negative first token delay", Config{FirstTokenDelay: -time.Second}, "first_token_delay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				s.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error about %s", err, tc.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	s, err := New(Config{MaxTokens: 10, Jitter: -1, LoadDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := s.Config()
	if c.NumParallel != 1 || c.MaxQueue != 512 || c.PromptEvalRate != 2000 || c.DefaultKeepAlive != 5*time.Minute ||
		c.MinTokens != 10 || c.MaxTokens != 10 || c.Jitter != 0 || c.LoadDelay != 0 || c.Version != "0.17.4-sim" ||
		len(c.Models) != 1 || c.Models[0].Name != "sim-tiny" || c.Models[0].SizeBytes != 512<<20 {
		t.Errorf("defaults = %+v", c)
	}
	g := s.GPU().Config()
	if g.DecodeRate != 60 || g.ConcurrencyGain != 0.5 || g.MemoryBytes != 24<<30 {
		t.Errorf("GPU defaults = %+v", g)
	}
	if g := NewGPU(GPUConfig{ConcurrencyGain: -1, MemoryBytes: -1}).Config(); g.ConcurrencyGain != 0 || g.MemoryBytes != 0 {
		t.Errorf("negative GPU settings = %+v", g)
	}
}

func TestTokenInterval(t *testing.T) {
	for _, tc := range []struct {
		rate, gain float64
		n          int
		want       time.Duration
	}{
		{100, 0.5, 1, 10 * time.Millisecond},
		{100, 0.5, 0, 10 * time.Millisecond},
		{100, 0.5, 2, 13333333 * time.Nanosecond}, // 2 streams share 150 tok/s
		{100, 0.5, 3, 15 * time.Millisecond},      // 3 share 200
		{100, 0, 2, 20 * time.Millisecond},        // no gain: half each
		{100, 1, 4, 10 * time.Millisecond},        // linear: each as if alone
	} {
		got := tokenInterval(tc.rate, tc.gain, tc.n)
		if d := got - tc.want; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("tokenInterval(%v, %v, %d) = %v, want %v", tc.rate, tc.gain, tc.n, got, tc.want)
		}
	}
}

func TestSlotsFIFO(t *testing.T) {
	q := &slots{size: 1, max: 2}
	ctx := context.Background()
	if err := q.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	order := make(chan int, 2)
	for i := range 2 {
		go func() {
			if err := q.acquire(ctx); err == nil {
				order <- i
			}
		}()
		for { // wait until it queues, to fix the arrival order
			if _, queued := q.state(); queued == i+1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	if err := q.acquire(ctx); !errors.Is(err, errBusy) {
		t.Errorf("third waiter: %v, want errBusy", err)
	}
	q.release()
	if got := <-order; got != 0 {
		t.Errorf("first served = %d, want 0", got)
	}
	q.release()
	if got := <-order; got != 1 {
		t.Errorf("second served = %d, want 1", got)
	}
	q.release()
	if busy, queued := q.state(); busy != 0 || queued != 0 {
		t.Errorf("state = %d busy, %d queued", busy, queued)
	}

	// A waiter that gives up leaves the queue.
	_ = q.acquire(ctx)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- q.acquire(cctx) }()
	for _, queued := q.state(); queued != 1; _, queued = q.state() {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled waiter: %v", err)
	}
	if busy, queued := q.state(); busy != 1 || queued != 0 {
		t.Errorf("state = %d busy, %d queued", busy, queued)
	}
	q.release()
}
