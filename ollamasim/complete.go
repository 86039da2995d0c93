package ollamasim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
)

// maxLag is how far decoding may fall behind its schedule and still catch up.
const maxLag = 100 * time.Millisecond

// defaultNumCtx is Ollama's context length when a request sets no num_ctx.
const defaultNumCtx = 4096

// request is what chat and generate have in common once decoded.
type request struct {
	model     string // as the client named it, echoed back
	m         *modelState
	stream    bool
	keepAlive time.Duration
	load      loadParams
	predict   int // num_predict, 0 if unset
	prompt    int // prompt tokens
	empty     bool
	chat      bool
}

// plan is everything random about one request, drawn up front so the
// stream of draws does not depend on timing.
type plan struct {
	tokens        int
	fail          bool
	stallAt       int // token index before which to stall; -1 for none
	dropAt        int // tokens sent before the connection drops; -1 for none
	timing, words *rand.Rand
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	var req api.ChatRequest
	if !s.decode(w, r, &req) {
		return
	}
	texts := make([]string, 0, len(req.Messages))
	for _, msg := range req.Messages {
		texts = append(texts, msg.Content)
	}
	s.complete(w, r, req.Model, req.Stream, req.KeepAlive, req.Options, texts, len(req.Messages) == 0, true)
}

func (s *Server) handleGenerate(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	var req api.GenerateRequest
	if !s.decode(w, r, &req) {
		return
	}
	var texts []string
	if req.System != "" {
		texts = append(texts, req.System)
	}
	if req.Prompt != "" {
		texts = append(texts, req.Prompt)
	}
	s.complete(w, r, req.Model, req.Stream, req.KeepAlive, req.Options, texts, req.Prompt == "", false)
}

func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 32<<20)).Decode(v)
	if err != nil {
		s.badRequests.Add(1)
		writeError(w, http.StatusBadRequest, err.Error())
		return false
	}
	return true
}

// complete serves one chat or generate request: queue for a slot, load the
// model, evaluate the prompt, decode.
func (s *Server) complete(w http.ResponseWriter, r *http.Request, name string, stream *bool,
	keepAlive *api.Duration, opts map[string]any, texts []string, empty, chat bool) {
	start := time.Now()
	if name == "" {
		s.badRequests.Add(1)
		writeError(w, http.StatusBadRequest, "model is required")
		return
	}
	m := s.lookup(name)
	if m == nil {
		s.notFound.Add(1)
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", name))
		return
	}
	req := request{model: name, m: m, stream: stream == nil || *stream, chat: chat,
		keepAlive: s.cfg.DefaultKeepAlive, prompt: countTokens(texts), empty: empty}
	if keepAlive != nil {
		req.keepAlive = keepAlive.Duration
	}
	var err error
	if req.load, req.predict, err = parseOptions(opts); err != nil {
		s.badRequests.Add(1)
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if s.ctx.Err() != nil {
		writeError(w, http.StatusServiceUnavailable, "server shutting down")
		return
	}
	p := s.plan(req.predict)

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)() // Close ends requests in flight

	switch err := s.slots.acquire(ctx); {
	case errors.Is(err, errBusy):
		s.rejected.Add(1)
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	case err != nil:
		s.canceled.Add(1)
		return
	}
	defer s.slots.release()

	loadDur, err := s.acquireModel(ctx, m, req.load)
	if err != nil {
		s.canceled.Add(1)
		if r.Context().Err() == nil { // the server closed, the client is still there
			writeError(w, http.StatusServiceUnavailable, "server shutting down")
		}
		return
	}
	defer func() { s.releaseModel(m, req.keepAlive) }()

	if req.empty { // Ollama loads the model and answers at once
		s.completed.Add(1)
		s.writeFinal(w, &req, "load", "", api.Metrics{TotalDuration: time.Since(start), LoadDuration: loadDur})
		return
	}
	if p.fail {
		s.errs.Add(1)
		writeError(w, http.StatusInternalServerError, "simulated failure")
		return
	}

	promptStart := time.Now()
	if err := sleep(ctx, rateDuration(req.prompt, s.cfg.PromptEvalRate)); err != nil {
		s.canceled.Add(1)
		return
	}
	promptDur := time.Since(promptStart)
	s.promptTokens.Add(int64(req.prompt))
	if err := sleep(ctx, s.cfg.FirstTokenDelay); err != nil {
		s.canceled.Add(1)
		return
	}

	text, evalDur, err := s.decodeTokens(ctx, w, &req, &p)
	if err != nil {
		s.canceled.Add(1)
		return
	}
	reason := "stop"
	if req.predict > 0 && p.tokens >= req.predict {
		reason = "length"
	}
	s.completed.Add(1)
	s.evalTokens.Add(int64(p.tokens))
	if !req.stream {
		s.streamedTokens.Add(int64(p.tokens))
	}
	s.writeFinal(w, &req, reason, text, api.Metrics{
		TotalDuration:      time.Since(start),
		LoadDuration:       loadDur,
		PromptEvalCount:    req.prompt,
		PromptEvalDuration: promptDur,
		EvalCount:          p.tokens,
		EvalDuration:       evalDur,
	})
}

// plan draws what is random about request number seq.
func (s *Server) plan(predict int) plan {
	seq := s.seq.Add(1)
	p := plan{
		timing: rand.New(rand.NewPCG(uint64(s.cfg.Seed), seq<<1)),
		words:  rand.New(rand.NewPCG(uint64(s.cfg.Seed), seq<<1|1)),
	}
	f := s.cfg.Faults
	p.fail = p.timing.Float64() < f.ErrorRatio
	stall := p.timing.Float64() < f.StallRatio
	drop := p.timing.Float64() < f.DropRatio
	p.tokens = s.cfg.MinTokens + p.timing.IntN(s.cfg.MaxTokens-s.cfg.MinTokens+1)
	if predict > 0 {
		p.tokens = predict
	}
	// Mid-stream: after the first token and, when there are two or more,
	// before the last.
	mid := 1 + p.timing.IntN(max(p.tokens-1, 1))
	p.stallAt, p.dropAt = -1, -1
	if stall {
		p.stallAt = min(mid, p.tokens-1)
	}
	if drop {
		p.dropAt = mid
	}
	return p
}

// decodeTokens sends (or, not streaming, collects) the tokens of p at the
// GPU's pace and returns the text collected and the decode time.
func (s *Server) decodeTokens(ctx context.Context, w http.ResponseWriter, req *request, p *plan) (string, time.Duration, error) {
	s.gpu.beginDecode()
	defer s.gpu.endDecode()
	var text strings.Builder
	flusher, _ := w.(http.Flusher)
	if req.stream {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
	}
	t := time.NewTimer(0)
	<-t.C
	defer t.Stop()
	start := time.Now()
	// Tokens are due on a schedule, so that timer slack and a busy machine
	// do not slow every stream: late tokens catch up, as a real server's
	// output does once its process gets the CPU back. Only a lag beyond
	// maxLag restarts the schedule, so that it never bursts for long.
	due := start
	for i := range p.tokens {
		if i == p.stallAt {
			s.stalled.Add(1)
			if err := sleepTimer(ctx, t, s.cfg.Faults.StallDuration); err != nil {
				return "", 0, err
			}
			due = time.Now()
		}
		d := s.gpu.interval()
		if j := s.cfg.Jitter; j > 0 {
			d = time.Duration(float64(d) * (1 + j*(2*p.timing.Float64()-1)))
		}
		if now := time.Now(); now.Sub(due) > maxLag {
			due = now
		}
		due = due.Add(d)
		if err := sleepTimer(ctx, t, time.Until(due)); err != nil {
			return "", 0, err
		}
		s.gpu.addToken()
		word := words[p.words.IntN(len(words))] + " "
		if req.stream {
			if err := s.writeLine(w, req.chunk(word)); err != nil {
				return "", 0, err
			}
			if flusher != nil {
				flusher.Flush()
			}
			s.streamedTokens.Add(1)
		} else {
			text.WriteString(word)
		}
		if i+1 == p.dropAt {
			s.dropped.Add(1)
			panic(http.ErrAbortHandler) // net/http closes the connection, no done chunk
		}
	}
	return text.String(), time.Since(start), nil
}

// chunk is one streamed content chunk.
func (req *request) chunk(content string) any {
	now := time.Now().UTC()
	if req.chat {
		return api.ChatResponse{Model: req.model, CreatedAt: now,
			Message: api.Message{Role: "assistant", Content: content}}
	}
	return api.GenerateResponse{Model: req.model, CreatedAt: now, Response: content}
}

// writeFinal writes the done response: the last chunk of a stream, or the
// whole answer when not streaming.
func (s *Server) writeFinal(w http.ResponseWriter, req *request, reason, text string, mt api.Metrics) {
	now := time.Now().UTC()
	var v any
	if req.chat {
		v = api.ChatResponse{Model: req.model, CreatedAt: now, Done: true, DoneReason: reason, Metrics: mt,
			Message: api.Message{Role: "assistant", Content: text}}
	} else {
		v = api.GenerateResponse{Model: req.model, CreatedAt: now, Done: true, DoneReason: reason, Metrics: mt,
			Response: text}
	}
	if !req.stream {
		writeJSON(w, http.StatusOK, v)
		return
	}
	if req.empty { // nothing streamed yet
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	_ = s.writeLine(w, v)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) writeLine(w http.ResponseWriter, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// parseOptions reads the options that matter here: num_ctx and num_gpu,
// which decide reloads, and num_predict.
func parseOptions(opts map[string]any) (loadParams, int, error) {
	p := loadParams{numCtx: defaultNumCtx, numGPU: -1}
	predict := 0
	for key, dst := range map[string]*int{"num_ctx": &p.numCtx, "num_gpu": &p.numGPU, "num_predict": &predict} {
		v, ok := opts[key]
		if !ok || v == nil {
			continue
		}
		f, ok := v.(float64)
		if !ok || f != float64(int(f)) {
			return p, 0, fmt.Errorf("option %q must be an integer, got %v", key, v)
		}
		*dst = int(f)
	}
	if p.numCtx <= 0 {
		p.numCtx = defaultNumCtx
	}
	return p, max(predict, 0), nil
}

// rateDuration is the time n items take at rate per second.
func rateDuration(n int, rate float64) time.Duration {
	return time.Duration(float64(n) / rate * float64(time.Second))
}

// sleep waits for d or until ctx ends, whichever is first.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sleepTimer is sleep reusing t, which must be stopped or drained.
func sleepTimer(ctx context.Context, t *time.Timer, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t.Reset(d)
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
}
