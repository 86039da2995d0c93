package exporters

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/chimeraforge/chimeraforge/internal/testtool"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// exposition renders the full registry as /metrics serves it to a client
// that asks for the text format.
func exposition(t *testing.T) []byte {
	t.Helper()
	rr := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", "text/plain")
	promhttp.HandlerFor(fullRegistry(t), promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).ServeHTTP(rr, req)
	if rr.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rr.Code, rr.Body)
	}
	if ct := rr.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: Content-Type %q, want text/plain", ct)
	}
	return rr.Body.Bytes()
}

func TestExpositionPassesPromtool(t *testing.T) {
	promtool := testtool.LookPath(t, "promtool", "prometheus")
	body := exposition(t)
	cmd := exec.CommandContext(t.Context(), promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestExpositionLint runs client_golang's copy of the linter promtool uses,
// so lint problems show up even where promtool is not installed.
func TestExpositionLint(t *testing.T) {
	problems, err := testutil.GatherAndLint(fullRegistry(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "chimeraforge_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}
