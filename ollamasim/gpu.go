package ollamasim

import (
	"sync"
	"time"
)

// GPUConfig describes a simulated GPU. Zero fields take their defaults.
type GPUConfig struct {
	// Name labels the GPU in Stats; default "sim-gpu".
	Name string
	// DecodeRate is the tokens per second of one stream alone on the GPU;
	// default 60.
	DecodeRate float64
	// ConcurrencyGain is the extra aggregate throughput each additional
	// concurrent stream adds, as a fraction of DecodeRate: 0.5 means two
	// streams together decode 1.5×DecodeRate. Zero means the default 0.5;
	// a negative value means no gain (streams split DecodeRate).
	ConcurrencyGain float64
	// MemoryBytes is the GPU memory that loaded models occupy; what does not
	// fit is "on CPU". Zero means the default 24 GiB; negative means none.
	MemoryBytes int64
}

// GPUStats is a snapshot of a GPU's state.
type GPUStats struct {
	Name string
	// ActiveStreams is the number of requests decoding on the GPU now,
	// across every instance that shares it.
	ActiveStreams int
	// BusyTime is the total time at least one stream was decoding.
	BusyTime time.Duration
	// DecodedTokens counts every token decoded on the GPU.
	DecodedTokens int64
	// UsedMemoryBytes is the GPU memory held by loaded models.
	UsedMemoryBytes int64
	MemoryBytes     int64
}

// GPU is a simulated GPU whose decode throughput and memory are shared by
// every Server configured with it, so that two instances on one GPU do not
// double throughput. It is safe for concurrent use.
type GPU struct {
	cfg GPUConfig

	mu        sync.Mutex
	active    int
	busySince time.Time
	busy      time.Duration
	tokens    int64
	used      int64
}

// NewGPU returns a GPU with c's settings, defaults filled in.
func NewGPU(c GPUConfig) *GPU {
	if c.Name == "" {
		c.Name = "sim-gpu"
	}
	if !(c.DecodeRate > 0) {
		c.DecodeRate = 60
	}
	switch {
	case c.ConcurrencyGain == 0:
		c.ConcurrencyGain = 0.5
	case c.ConcurrencyGain < 0 || c.ConcurrencyGain != c.ConcurrencyGain: // negative or NaN
		c.ConcurrencyGain = 0
	}
	switch {
	case c.MemoryBytes == 0:
		c.MemoryBytes = 24 << 30
	case c.MemoryBytes < 0:
		c.MemoryBytes = 0
	}
	return &GPU{cfg: c}
}

// Config returns the GPU's settings with defaults filled in.
func (g *GPU) Config() GPUConfig { return g.cfg }

// Stats returns a snapshot of the GPU's state.
func (g *GPU) Stats() GPUStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	busy := g.busy
	if g.active > 0 {
		busy += time.Since(g.busySince)
	}
	return GPUStats{
		Name:            g.cfg.Name,
		ActiveStreams:   g.active,
		BusyTime:        busy,
		DecodedTokens:   g.tokens,
		UsedMemoryBytes: g.used,
		MemoryBytes:     g.cfg.MemoryBytes,
	}
}

// tokenInterval is the time one of n concurrent streams takes per token:
// together they decode rate×(1+(n−1)×gain) tokens per second, split evenly.
func tokenInterval(rate, gain float64, n int) time.Duration {
	if n < 1 {
		n = 1
	}
	perSec := rate * (1 + float64(n-1)*gain) / float64(n)
	return time.Duration(float64(time.Second) / perSec)
}

// interval returns the base time for the next token of a decoding stream,
// given how many streams decode now.
func (g *GPU) interval() time.Duration {
	g.mu.Lock()
	n := g.active
	g.mu.Unlock()
	return tokenInterval(g.cfg.DecodeRate, g.cfg.ConcurrencyGain, n)
}

func (g *GPU) beginDecode() {
	g.mu.Lock()
	if g.active == 0 {
		g.busySince = time.Now()
	}
	g.active++
	g.mu.Unlock()
}

func (g *GPU) endDecode() {
	g.mu.Lock()
	g.active--
	if g.active == 0 {
		g.busy += time.Since(g.busySince)
	}
	g.mu.Unlock()
}

func (g *GPU) addToken() {
	g.mu.Lock()
	g.tokens++
	g.mu.Unlock()
}

// reserve takes up to want bytes of free GPU memory and returns how much it
// took; the rest of the model is notionally on the CPU.
func (g *GPU) reserve(want int64) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	got := min(want, g.cfg.MemoryBytes-g.used)
	if got < 0 {
		got = 0
	}
	g.used += got
	return got
}

func (g *GPU) release(n int64) {
	g.mu.Lock()
	g.used -= n
	g.mu.Unlock()
}
