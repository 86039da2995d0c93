package ollamasim

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
)

// forever is a keep-alive at or beyond which a model never expires; the
// api package turns a negative keep_alive into math.MaxInt64.
const forever = time.Duration(math.MaxInt64)

// modelState is one configured model and, guarded by Server.mu, what is
// loaded of it.
type modelState struct {
	Model
	digest  string
	loadSem chan struct{} // held while checking or loading, so loads of one model do not overlap

	loaded    bool
	numCtx    int
	numGPU    int
	vram      int64
	refs      int           // requests using the loaded model
	keepAlive time.Duration // of the latest request
	expiresAt time.Time     // set when refs drops to 0
	timer     *time.Timer
	gen       uint64 // bumped on every load and unload, so stale timers do nothing
}

// loadParams are the request options that, when changed, make Ollama reload
// a model.
type loadParams struct {
	numCtx, numGPU int
}

// acquireModel makes sure m is loaded with p, loading or reloading it if
// needed, and holds it until releaseModel. It returns the load duration as
// Ollama reports it: LoadDelay after a load, the tiny time taken otherwise.
func (s *Server) acquireModel(ctx context.Context, m *modelState, p loadParams) (time.Duration, error) {
	start := time.Now()
	select {
	case m.loadSem <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-m.loadSem }()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, context.Canceled
	}
	expired := m.refs == 0 && !m.expiresAt.IsZero() && !time.Now().Before(m.expiresAt)
	if m.loaded && !expired && m.numCtx == p.numCtx && m.numGPU == p.numGPU {
		s.holdLocked(m)
		s.mu.Unlock()
		return time.Since(start), nil
	}
	s.unloadLocked(m)
	s.mu.Unlock()
	s.loads.Add(1)

	if err := sleep(ctx, s.cfg.LoadDelay); err != nil {
		return time.Since(start), err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return time.Since(start), context.Canceled
	}
	m.loaded, m.numCtx, m.numGPU = true, p.numCtx, p.numGPU
	m.gen++
	if p.numGPU != 0 {
		m.vram = s.gpu.reserve(m.SizeBytes)
	}
	s.holdLocked(m)
	return time.Since(start), nil
}

func (s *Server) holdLocked(m *modelState) {
	m.refs++
	m.expiresAt = time.Time{}
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
}

// releaseModel ends a request's hold on m and starts its keep-alive: zero
// unloads it at once, forever keeps it.
func (s *Server) releaseModel(m *modelState, keepAlive time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m.refs--
	m.keepAlive = keepAlive
	if m.refs > 0 || !m.loaded {
		return
	}
	if s.closed || keepAlive == 0 {
		s.unloadLocked(m)
		return
	}
	now := time.Now()
	if keepAlive < 0 || keepAlive >= forever {
		m.expiresAt = now.Add(forever)
		return
	}
	m.expiresAt = now.Add(keepAlive)
	gen := m.gen
	m.timer = time.AfterFunc(keepAlive, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if m.gen == gen && m.refs == 0 {
			s.unloadLocked(m)
		}
	})
}

// unloadLocked frees m's GPU memory and forgets its load.
func (s *Server) unloadLocked(m *modelState) {
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
	if m.loaded {
		s.gpu.release(m.vram)
		m.gen++
	}
	m.loaded, m.vram, m.expiresAt = false, 0, time.Time{}
}

func (m *modelState) details() api.ModelDetails {
	return api.ModelDetails{
		Format:            "gguf",
		Family:            "llama",
		Families:          []string{"llama"},
		ParameterSize:     paramSize(m.params()),
		QuantizationLevel: "Q4_K_M",
	}
}

// params invents a parameter count from the size, at about 4.5 bits per
// parameter as in a Q4_K_M file.
func (m *modelState) params() int64 { return m.SizeBytes * 16 / 9 }

func paramSize(n int64) string {
	if n >= 1e9 {
		return fmt.Sprintf("%.1fB", float64(n)/1e9)
	}
	return fmt.Sprintf("%dM", (n+5e5)/1e6)
}

func (s *Server) lookup(name string) *modelState {
	if name == "" {
		return nil
	}
	return s.models[normalize(name)]
}

func (s *Server) handleTags(w http.ResponseWriter, _ *http.Request) {
	resp := api.ListResponse{Models: []api.ListModelResponse{}}
	for _, m := range s.order {
		resp.Models = append(resp.Models, api.ListModelResponse{
			Name:       m.Name,
			Model:      m.Name,
			ModifiedAt: s.created,
			Size:       m.SizeBytes,
			Digest:     m.digest,
			Details:    m.details(),
		})
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handlePS(w http.ResponseWriter, _ *http.Request) {
	resp := api.ProcessResponse{Models: []api.ProcessModelResponse{}}
	now := time.Now()
	s.mu.Lock()
	for _, m := range s.order {
		if !m.loaded {
			continue
		}
		expires := m.expiresAt
		if expires.IsZero() { // in use: it expires keep-alive after it is done
			ka := cmp.Or(m.keepAlive, s.cfg.DefaultKeepAlive)
			if ka < 0 {
				ka = forever
			}
			expires = now.Add(ka)
		}
		resp.Models = append(resp.Models, api.ProcessModelResponse{
			Name:          m.Name,
			Model:         m.Name,
			Size:          m.SizeBytes,
			Digest:        m.digest,
			Details:       m.details(),
			ExpiresAt:     expires,
			SizeVRAM:      m.vram,
			ContextLength: m.numCtx,
		})
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleShow(w http.ResponseWriter, r *http.Request) {
	var req api.ShowRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	name := cmp.Or(req.Model, req.Name) //nolint:staticcheck // older clients still send "name"
	if name == "" {
		writeError(w, http.StatusBadRequest, "model is required")
		return
	}
	m := s.lookup(name)
	if m == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", name))
		return
	}
	writeJSON(w, http.StatusOK, api.ShowResponse{
		Modelfile:  fmt.Sprintf("# Simulated by ollamasim; not a real model.\nFROM %s\nTEMPLATE {{ .Prompt }}\n", m.Name),
		Parameters: "stop \"<|eot|>\"",
		Template:   "{{ .Prompt }}",
		Details:    m.details(),
		ModelInfo: map[string]any{
			"general.architecture":         "llama",
			"general.basename":             "sim",
			"general.file_type":            15,
			"general.parameter_count":      m.params(),
			"general.quantization_version": 2,
			"llama.context_length":         defaultNumCtx * 32,
			"llama.embedding_length":       2048,
			"llama.block_count":            16,
		},
		Capabilities: []model.Capability{model.CapabilityCompletion},
		ModifiedAt:   s.created,
	})
}
