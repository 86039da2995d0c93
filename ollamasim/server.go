package ollamasim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Model is a model an instance serves.
type Model struct {
	// Name as clients ask for it; a name without a tag means ":latest".
	Name string
	// SizeBytes is the memory the loaded model takes; default 512 MiB.
	SizeBytes int64
}

// Faults injects failures, each a probability per request in [0, 1] drawn
// from the seeded source, so that clients' error handling can be soaked.
type Faults struct {
	// ErrorRatio answers 500 {"error":"simulated failure"} before anything
	// is streamed.
	ErrorRatio float64
	// StallRatio pauses the stream once, mid-stream, for StallDuration
	// (default 1s).
	StallRatio    float64
	StallDuration time.Duration
	// DropRatio aborts the connection mid-stream, after some tokens, so the
	// client sees a broken stream without a done chunk.
	DropRatio float64
}

// Config configures a Server. Zero fields take their defaults.
type Config struct {
	// Name labels the instance; default "ollamasim".
	Name string
	// GPU is shared with other instances to make them compete for decode
	// throughput and memory; nil gives the instance a private GPU with
	// defaults.
	GPU *GPU
	// NumParallel is the number of requests served at once (Ollama's
	// OLLAMA_NUM_PARALLEL); default 1.
	NumParallel int
	// MaxQueue is the number of requests that may wait for a slot before
	// the next is answered 503 (OLLAMA_MAX_QUEUE); default 512.
	MaxQueue int
	// PromptEvalRate is prompt tokens evaluated per second; default 2000.
	PromptEvalRate float64
	// Jitter is the relative random variation, in [0, 1], of each token
	// interval; zero means the default 0.1, negative means none.
	Jitter float64
	// LoadDelay is how long a model load takes; zero means the default
	// 300ms, negative means loads are instant (but still counted).
	LoadDelay time.Duration
	// DefaultKeepAlive is how long a model stays loaded after its last
	// request when the request names no keep_alive; zero means the default
	// 5m, negative means forever.
	DefaultKeepAlive time.Duration
	// FirstTokenDelay is an extra delay before the first token, to model a
	// slow time to first token; default 0.
	FirstTokenDelay time.Duration
	// MinTokens and MaxTokens bound the response length, in tokens, when a
	// request sets no num_predict; defaults 32 and 128.
	MinTokens, MaxTokens int
	// Seed seeds every random draw; with the same requests in the same
	// order, the same seed gives the same text, lengths and faults.
	Seed int64
	// Version is what /api/version reports; default "0.17.4-sim".
	Version string
	// Models are the models served; default one, "sim-tiny" of 512 MiB.
	Models []Model
	Faults Faults
}

// Stats counts what a Server did since it was created.
type Stats struct {
	// Requests counts chat and generate requests received.
	Requests int64
	// Completed counts requests answered with a done response.
	Completed int64
	// Errors counts injected 500s; Rejected counts 503s (queue full);
	// NotFound counts 404s (unknown model); BadRequests counts 400s.
	Errors, Rejected, NotFound, BadRequests int64
	// Dropped counts streams aborted by the DropRatio fault; Stalled counts
	// requests paused by the StallRatio fault.
	Dropped, Stalled int64
	// Canceled counts requests whose client went away before the end.
	Canceled int64
	// Loads counts model loads and reloads started.
	Loads int64
	// EvalTokens is the sum of eval_count in the done responses sent.
	EvalTokens int64
	// StreamedTokens counts every content chunk sent, including those of
	// requests that were dropped or canceled later.
	StreamedTokens int64
	// PromptTokens is the sum of prompt_eval_count of evaluated prompts.
	PromptTokens int64
	// Running and Queued are the requests holding and waiting for a slot now.
	Running, Queued int
	// LoadedModels is the number of models loaded now.
	LoadedModels int
	// VRAMBytes is the simulated GPU memory its loaded models hold now.
	VRAMBytes int64
}

// Server is one simulated Ollama instance. Serve its Handler; call Close
// when done with it.
type Server struct {
	cfg     Config
	gpu     *GPU
	slots   *slots
	models  map[string]*modelState // by normalized name
	order   []*modelState          // as configured
	created time.Time
	mux     *http.ServeMux

	ctx       context.Context // canceled by Close
	cancel    context.CancelFunc
	closeOnce sync.Once

	seq atomic.Uint64

	mu     sync.Mutex // guards modelState's loaded fields and closed
	closed bool

	requests, completed, errs, rejected, notFound, badRequests atomic.Int64
	dropped, stalled, canceled, loads                          atomic.Int64
	evalTokens, streamedTokens, promptTokens                   atomic.Int64
}

// New validates c, fills in its defaults and returns a Server.
func New(c Config) (*Server, error) {
	if err := c.setDefaults(); err != nil {
		return nil, fmt.Errorf("ollamasim config %q: %w", c.Name, err)
	}
	s := &Server{
		cfg:     c,
		gpu:     c.GPU,
		slots:   &slots{size: c.NumParallel, max: c.MaxQueue},
		models:  make(map[string]*modelState, len(c.Models)),
		created: time.Now().UTC().Truncate(time.Second),
	}
	for _, m := range c.Models {
		name := normalize(m.Name)
		sum := sha256.Sum256([]byte(name))
		ms := &modelState{
			Model:   Model{Name: name, SizeBytes: m.SizeBytes},
			digest:  hex.EncodeToString(sum[:]),
			loadSem: make(chan struct{}, 1),
		}
		s.models[name] = ms
		s.order = append(s.order, ms)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.handleRoot) // GET patterns also match HEAD
	mux.HandleFunc("GET /api/version", s.handleVersion)
	mux.HandleFunc("GET /api/tags", s.handleTags)
	mux.HandleFunc("GET /api/ps", s.handlePS)
	mux.HandleFunc("POST /api/show", s.handleShow)
	mux.HandleFunc("POST /api/chat", s.handleChat)
	mux.HandleFunc("POST /api/generate", s.handleGenerate)
	s.mux = mux
	return s, nil
}

func (c *Config) setDefaults() error {
	if c.Name == "" {
		c.Name = "ollamasim"
	}
	if c.GPU == nil {
		c.GPU = NewGPU(GPUConfig{})
	}
	var errs []error
	check := func(bad bool, format string, args ...any) {
		if bad {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.NumParallel < 0, "num_parallel %d is negative", c.NumParallel)
	check(c.MaxQueue < 0, "max_queue %d is negative", c.MaxQueue)
	check(c.PromptEvalRate < 0 || math.IsNaN(c.PromptEvalRate) || math.IsInf(c.PromptEvalRate, 0),
		"prompt_eval_rate %v must be a positive number", c.PromptEvalRate)
	check(c.Jitter > 1 || math.IsNaN(c.Jitter), "jitter %v must be at most 1", c.Jitter)
	check(c.FirstTokenDelay < 0, "first_token_delay %v is negative", c.FirstTokenDelay)
	check(c.MinTokens < 0, "min_tokens %d is negative", c.MinTokens)
	check(c.MaxTokens < 0, "max_tokens %d is negative", c.MaxTokens)
	ratio := func(name string, v float64) {
		check(!(v >= 0 && v <= 1), "faults.%s %v must be within [0, 1]", name, v)
	}
	ratio("error_ratio", c.Faults.ErrorRatio)
	ratio("stall_ratio", c.Faults.StallRatio)
	ratio("drop_ratio", c.Faults.DropRatio)
	check(c.Faults.StallDuration < 0, "faults.stall_duration %v is negative", c.Faults.StallDuration)
	seen := map[string]bool{}
	for i, m := range c.Models {
		name := normalize(m.Name)
		switch {
		case strings.TrimSpace(m.Name) == "":
			errs = append(errs, fmt.Errorf("models[%d]: name is empty", i))
		case seen[name]:
			errs = append(errs, fmt.Errorf("models[%d]: duplicate name %q", i, m.Name))
		}
		seen[name] = true
		check(m.SizeBytes < 0, "models[%d] %q: size_bytes %d is negative", i, m.Name, m.SizeBytes)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	if c.NumParallel == 0 {
		c.NumParallel = 1
	}
	if c.MaxQueue == 0 {
		c.MaxQueue = 512
	}
	if c.PromptEvalRate == 0 {
		c.PromptEvalRate = 2000
	}
	switch {
	case c.Jitter == 0:
		c.Jitter = 0.1
	case c.Jitter < 0:
		c.Jitter = 0
	}
	switch {
	case c.LoadDelay == 0:
		c.LoadDelay = 300 * time.Millisecond
	case c.LoadDelay < 0:
		c.LoadDelay = 0
	}
	if c.DefaultKeepAlive == 0 {
		c.DefaultKeepAlive = 5 * time.Minute
	}
	if c.MaxTokens == 0 {
		c.MaxTokens = max(128, c.MinTokens)
	}
	if c.MinTokens == 0 {
		c.MinTokens = min(32, c.MaxTokens)
	}
	if c.MinTokens > c.MaxTokens {
		return fmt.Errorf("min_tokens %d exceeds max_tokens %d", c.MinTokens, c.MaxTokens)
	}
	if c.Faults.StallDuration == 0 {
		c.Faults.StallDuration = time.Second
	}
	if c.Version == "" {
		c.Version = "0.17.4-sim"
	}
	if len(c.Models) == 0 {
		c.Models = []Model{{Name: "sim-tiny", SizeBytes: 512 << 20}}
	}
	models := make([]Model, len(c.Models)) // do not alias the caller's slice
	copy(models, c.Models)
	for i := range models {
		if models[i].SizeBytes == 0 {
			models[i].SizeBytes = 512 << 20
		}
	}
	c.Models = models
	return nil
}

// normalize gives a model name Ollama's implicit ":latest" tag.
func normalize(name string) string {
	name = strings.TrimSpace(name)
	if i := strings.LastIndexByte(name, '/'); !strings.Contains(name[i+1:], ":") {
		name += ":latest"
	}
	return name
}

// Config returns the Server's configuration with defaults filled in.
func (s *Server) Config() Config { return s.cfg }

// GPU returns the GPU the Server decodes on.
func (s *Server) GPU() *GPU { return s.gpu }

// Handler returns the HTTP handler serving Ollama's API.
func (s *Server) Handler() http.Handler { return s.mux }

// Stats returns what the Server did so far and what it is doing now.
func (s *Server) Stats() Stats {
	running, queued := s.slots.state()
	s.mu.Lock()
	loaded, vram := 0, int64(0)
	for _, m := range s.order {
		if m.loaded {
			loaded++
			vram += m.vram
		}
	}
	s.mu.Unlock()
	return Stats{
		Requests:       s.requests.Load(),
		Completed:      s.completed.Load(),
		Errors:         s.errs.Load(),
		Rejected:       s.rejected.Load(),
		NotFound:       s.notFound.Load(),
		BadRequests:    s.badRequests.Load(),
		Dropped:        s.dropped.Load(),
		Stalled:        s.stalled.Load(),
		Canceled:       s.canceled.Load(),
		Loads:          s.loads.Load(),
		EvalTokens:     s.evalTokens.Load(),
		StreamedTokens: s.streamedTokens.Load(),
		PromptTokens:   s.promptTokens.Load(),
		Running:        running,
		Queued:         queued,
		LoadedModels:   loaded,
		VRAMBytes:      vram,
	}
}

// Close unloads every model, freeing its share of the GPU, stops the
// keep-alive timers and ends requests in flight. It is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		for _, m := range s.order {
			s.unloadLocked(m)
		}
		s.mu.Unlock()
		s.cancel()
	})
}

func (s *Server) handleRoot(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("Ollama is running"))
}

func (s *Server) handleVersion(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"version": s.cfg.Version})
}

// writeJSON writes v as one line of JSON, as Ollama's non-streamed answers.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
