package exporters

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// failingGatherer fails every gather.
type failingGatherer struct{}

func (failingGatherer) Gather() ([]*dto.MetricFamily, error) {
	return nil, errors.New("collector exploded")
}

// TestHandler: Handler answers as promhttp does, compressed with gzip when
// the client accepts it, and an error as plain text.
func TestHandler(t *testing.T) {
	reg := fullRegistry(t)
	// What promhttp itself answers uncompressed: Handler must serve the
	// same bytes, compressed or not. A pedantic registry's Gather is
	// deterministic but for the timing gauges, left out by name below.
	plain := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", acceptText)
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{DisableCompression: true}).ServeHTTP(plain, req)
	stable := func(body []byte) string {
		var lines []string
		for line := range strings.Lines(string(body)) {
			if !strings.Contains(line, "scrape_duration") && !strings.HasPrefix(line, "go_") && !strings.HasPrefix(line, "process_") {
				lines = append(lines, line)
			}
		}
		return strings.Join(lines, "")
	}

	tests := []struct {
		name           string
		gatherer       prometheus.Gatherer
		accept, encode string
		wantGzip       bool
		wantCode       int
		wantType       string
	}{
		{name: "text, gzip", gatherer: reg, accept: acceptText, encode: "gzip", wantGzip: true, wantCode: 200, wantType: "text/plain"},
		{name: "text, no compression asked", gatherer: reg, accept: acceptText, wantCode: 200, wantType: "text/plain"},
		{name: "text, gzip refused", gatherer: reg, accept: acceptText, encode: "gzip;q=0, identity", wantCode: 200, wantType: "text/plain"},
		{name: "protobuf, gzip", gatherer: reg, accept: acceptProtobuf, encode: "gzip", wantGzip: true, wantCode: 200, wantType: "application/vnd.google.protobuf"},
		{name: "gather error, gzip asked", gatherer: failingGatherer{}, accept: acceptText, encode: "gzip", wantCode: 500, wantType: "text/plain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rr := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			req.Header.Set("Accept", tt.accept)
			if tt.encode != "" {
				req.Header.Set("Accept-Encoding", tt.encode)
			}
			Handler(tt.gatherer, promhttp.HandlerOpts{EnableOpenMetrics: true}).ServeHTTP(rr, req)
			if rr.Code != tt.wantCode || !strings.HasPrefix(rr.Header().Get("Content-Type"), tt.wantType) {
				t.Fatalf("%d %q, want %d %s", rr.Code, rr.Header().Get("Content-Type"), tt.wantCode, tt.wantType)
			}
			if !slices.Contains(rr.Header().Values("Vary"), "Accept-Encoding") {
				t.Errorf("Vary %q: no Accept-Encoding", rr.Header().Values("Vary"))
			}
			body := rr.Body.Bytes()
			if got := rr.Header().Get("Content-Encoding"); (got == "gzip") != tt.wantGzip {
				t.Fatalf("Content-Encoding %q, want gzip %t", got, tt.wantGzip)
			}
			if tt.wantGzip {
				zr, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				if body, err = io.ReadAll(zr); err != nil {
					t.Fatal(err)
				}
			}
			switch {
			case tt.wantCode != 200:
				if !strings.Contains(string(body), "collector exploded") {
					t.Errorf("error body %q does not say what failed", body)
				}
			case tt.wantType == "text/plain":
				if got, want := stable(body), stable(plain.Body.Bytes()); got != want {
					t.Errorf("body differs from promhttp's:\n%s\nwant:\n%s", got, want)
				}
			case len(body) == 0:
				t.Error("empty protobuf body")
			}
		})
	}
}
