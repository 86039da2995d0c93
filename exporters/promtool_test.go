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

// exposition renders the full registry, made with opts, as /metrics serves
// it to a client that asks for the text format.
func exposition(t *testing.T, opts ...Option) []byte {
	t.Helper()
	rr := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", "text/plain")
	promhttp.HandlerFor(fullRegistry(t, opts...), promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).ServeHTTP(rr, req)
	if rr.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rr.Code, rr.Body)
	}
	if ct := rr.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: Content-Type %q, want text/plain", ct)
	}
	return rr.Body.Bytes()
}

// histogramSettings are the exposition's two shapes: classic buckets beside
// native histograms, and native histograms alone.
var histogramSettings = []struct {
	name string
	opts []Option
}{
	{"classic and native", []Option{ClassicHistograms(true)}},
	{"native only", []Option{ClassicHistograms(false)}},
}

func TestExpositionPassesPromtool(t *testing.T) {
	promtool := testtool.LookPath(t, "promtool", "prometheus")
	for _, hs := range histogramSettings {
		t.Run(hs.name, func(t *testing.T) {
			body := exposition(t, hs.opts...)
			cmd := exec.CommandContext(t.Context(), promtool, "check", "metrics")
			cmd.Stdin = bytes.NewReader(body)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("promtool check metrics: %v\n%s", err, out)
			}
		})
	}
}

// TestExpositionLint runs client_golang's copy of the linter promtool uses,
// so lint problems show up even where promtool is not installed.
func TestExpositionLint(t *testing.T) {
	for _, hs := range histogramSettings {
		t.Run(hs.name, func(t *testing.T) {
			problems, err := testutil.GatherAndLint(fullRegistry(t, hs.opts...))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range problems {
				if strings.HasPrefix(p.Metric, "chimeraforge_") {
					t.Errorf("%s: %s", p.Metric, p.Text)
				}
			}
		})
	}
}
