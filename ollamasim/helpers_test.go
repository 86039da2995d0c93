package ollamasim

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
)

// fast is a config whose requests take milliseconds.
func fast() Config {
	return Config{
		GPU:            NewGPU(GPUConfig{DecodeRate: 2000}),
		Jitter:         -1,
		LoadDelay:      20 * time.Millisecond,
		PromptEvalRate: 1e6,
		MinTokens:      5,
		MaxTokens:      10,
		Seed:           1,
	}
}

// start serves a new Server on 127.0.0.1 and returns it with a client.
func start(t *testing.T, c Config) (*Server, *api.Client, string) {
	t.Helper()
	s, err := New(c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	t.Cleanup(s.Close) // runs first: ends requests in flight
	u, err := url.Parse(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	return s, api.NewClient(u, http.DefaultClient), ts.URL
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// result is what a client saw of one chat.
type result struct {
	chunks     int
	text       string
	final      *api.ChatResponse
	firstToken time.Time // as the client saw it
	firstSent  time.Time // created_at of the first chunk, as the server sent it
	done       time.Time
	err        error
}

func chat(ctx context.Context, c *api.Client, req *api.ChatRequest) result {
	var r result
	r.err = c.Chat(ctx, req, func(resp api.ChatResponse) error {
		if resp.Done {
			r.final = &resp
			r.text += resp.Message.Content
			r.done = time.Now()
			return nil
		}
		if r.chunks == 0 {
			r.firstToken, r.firstSent = time.Now(), resp.CreatedAt
		}
		r.chunks++
		r.text += resp.Message.Content
		return nil
	})
	return r
}

func chatReq(model string, opts map[string]any) *api.ChatRequest {
	return &api.ChatRequest{
		Model:    model,
		Messages: []api.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "why is the sky blue"}},
		Options:  opts,
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func wordCount(s string) int { return len(strings.Fields(s)) }
