package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/alecthomas/kingpin/v2"

	"github.com/chimeraforge/chimeraforge/ollamasim"
)

// TestSimStats checks `chimeraforge sim`'s /sim/stats, which the benchmark
// harness counts streamed tokens with: exact counts after one answer.
func TestSimStats(t *testing.T) {
	app := kingpin.New("test", "")
	o := registerSimFlags(app.Command("sim", ""))
	if _, err := app.Parse([]string{"sim", "--decode-rate=1000", "--load-delay=0s", "--jitter=0"}); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.listener = l
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runSim(ctx, o, io.Discard, io.Discard) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	base := "http://" + l.Addr().String()

	body := `{"model":"sim-tiny","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":7}}`
	resp, err := testClient.Post(base+"/api/chat", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	lines, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if n := strings.Count(string(lines), "\n"); n != 8 {
		t.Fatalf("%d lines streamed, want 7 tokens and the final chunk:\n%s", n, lines)
	}

	resp, err = testClient.Get(base + "/sim/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/json" {
		t.Fatalf("/sim/stats: %s, Content-Type %q", resp.Status, ct)
	}
	var st ollamasim.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Requests != 1 || st.Completed != 1 || st.StreamedTokens != 7 || st.EvalTokens != 7 || st.Running != 0 {
		t.Fatalf("/sim/stats = %+v, want 1 request, 1 completed, 7 tokens streamed and evaluated, none running", st)
	}
}
