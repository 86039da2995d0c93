package soak

import (
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const exposition = `# HELP reqs_total Requests.
# TYPE reqs_total counter
reqs_total{agent="a",outcome="success"} 10
reqs_total{agent="b",outcome="success"} 5
reqs_total{agent="a",outcome="error"} 2
# HELP inflight Requests in flight.
# TYPE inflight gauge
inflight{agent="a"} 3
# HELP lat_seconds Latency.
# TYPE lat_seconds histogram
lat_seconds_bucket{agent="a",le="0.1"} 4
lat_seconds_bucket{agent="a",le="1"} 9
lat_seconds_bucket{agent="a",le="+Inf"} 10
lat_seconds_sum{agent="a"} 3.5
lat_seconds_count{agent="a"} 10
# HELP go_goroutines Goroutines.
# TYPE go_goroutines gauge
go_goroutines 42
`

func parse(t *testing.T, text string) *Scrape {
	t.Helper()
	s, err := ParseScrape(text)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestScrapeQueries(t *testing.T) {
	s := parse(t, exposition)
	if v, ok := s.Get("go_goroutines"); !ok || v != 42 {
		t.Errorf("Get(go_goroutines) = %v, %v; want 42, true", v, ok)
	}
	if _, ok := s.Get("nope"); ok {
		t.Error("Get(nope) found a value")
	}
	if v := s.Sum("reqs_total", map[string]string{"agent": "a"}); v != 12 {
		t.Errorf("Sum(reqs_total{agent=a}) = %v, want 12", v)
	}
	if v := s.Sum("lat_seconds", nil); v != 10 {
		t.Errorf("Sum(lat_seconds) = %v, want its count 10", v)
	}
	if got := s.SumBy("reqs_total", "outcome", nil); got["success"] != 15 || got["error"] != 2 {
		t.Errorf("SumBy(reqs_total, outcome) = %v", got)
	}
	if n := s.Count("reqs_total", map[string]string{"outcome": "success"}); n != 2 {
		t.Errorf("Count = %d, want 2", n)
	}
	if v := s.BucketCount("lat_seconds", 0.1, nil); v != 4 {
		t.Errorf("BucketCount(0.1) = %v, want 4", v)
	}
	keys := s.Series()
	for _, k := range []string{`reqs_total{agent="a",outcome="error"}`, `lat_seconds{agent="a"}`, `go_goroutines{}`} {
		if !keys[k] {
			t.Errorf("Series lacks %s (has %v)", k, keys)
		}
	}
	if len(keys) != 6 {
		t.Errorf("Series has %d keys, want 6 (a histogram is one): %v", len(keys), keys)
	}
	mono := s.Monotonic()
	for _, k := range []string{`reqs_total{agent="a",outcome="success"}`, `lat_seconds_count{agent="a"}`,
		`lat_seconds_sum{agent="a"}`, `lat_seconds_bucket{agent="a",le="+Inf"}`} {
		if _, ok := mono[k]; !ok {
			t.Errorf("Monotonic lacks %s", k)
		}
	}
	if _, ok := mono[`inflight{agent="a"}`]; ok {
		t.Error("Monotonic has a gauge")
	}
}

func TestRegressions(t *testing.T) {
	prev := parse(t, exposition)
	same := parse(t, exposition)
	if r := Regressions(prev, same); len(r) != 0 {
		t.Errorf("no change: %v", r)
	}
	// A counter down, a histogram reset, a gauge down (allowed) and a
	// series gone (not compared).
	next := strings.NewReplacer(
		`reqs_total{agent="a",outcome="success"} 10`, `reqs_total{agent="a",outcome="success"} 9`,
		`lat_seconds_count{agent="a"} 10`, `lat_seconds_count{agent="a"} 1`,
		`inflight{agent="a"} 3`, `inflight{agent="a"} 0`,
		`reqs_total{agent="b",outcome="success"} 5`+"\n", "",
	).Replace(exposition)
	got := Regressions(prev, parse(t, next))
	var names []string
	for _, r := range got {
		names = append(names, r.Series)
		if hist := strings.HasPrefix(r.Series, "lat_seconds"); r.Histogram != hist {
			t.Errorf("%s: Histogram = %v", r.Series, r.Histogram)
		}
	}
	want := []string{`lat_seconds_count{agent="a"}`, `reqs_total{agent="a",outcome="success"}`}
	if !slices.Equal(names, want) {
		t.Errorf("Regressions = %v, want %v", got, want)
	}
}

func TestDiff(t *testing.T) {
	a := map[string]bool{"x": true, "y": true}
	b := map[string]bool{"y": true, "z": true}
	added, removed := Diff(a, b)
	if !slices.Equal(added, []string{"z"}) || !slices.Equal(removed, []string{"x"}) {
		t.Errorf("Diff = %v, %v", added, removed)
	}
}

// TestFlatCatchesALeak: the bounds TestSoak uses let noise pass and catch
// a leak of one goroutine per request at the soak's rate.
func TestFlatCatchesALeak(t *testing.T) {
	// What a healthy run looks like: in-flight noise of ±20 around 70.
	noise := []float64{60, 82, 65, 79, 70, 61, 83, 68, 77, 62, 64, 80, 71, 66, 84, 60, 75, 63, 81, 69}
	const abs, rel = 60, 0.2
	f := Flat(noise)
	if f.LastMax > f.PeakLimit(abs, rel) || f.LastMin > f.FloorLimit(30, rel) {
		t.Errorf("noise flagged as a leak: %v", f)
	}
	// One goroutine per request at 30 requests a second, a sample every
	// 2 seconds: +60 per sample.
	leak := make([]float64, len(noise))
	for i, v := range noise {
		leak[i] = v + float64(60*i)
	}
	f = Flat(leak)
	if f.LastMax <= f.PeakLimit(abs, rel) || f.LastMin <= f.FloorLimit(30, rel) {
		t.Errorf("a leak of one goroutine per request passes: %v", f)
	}
	if f.Min != 60 || f.FirstMin != 60 || f.Scaled(2).Max != f.Max/2 {
		t.Errorf("figures: %v", f)
	}
}

func TestReadProc(t *testing.T) {
	if runtime.GOOS != "linux" {
		if _, err := ReadProc(os.Getpid()); err == nil {
			t.Error("ReadProc without /proc did not fail")
		}
		return
	}
	p, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p.FDs < 3 || p.RSSBytes < 1<<20 || p.Threads < 1 || p.PeakRSSBytes < p.RSSBytes {
		t.Errorf("ReadProc(self) = %+v, want at least stdio, 1 MiB, a thread and a peak no lower than now", p)
	}
	// Burn CPU until the kernel has counted at least one tick of it.
	deadline, x := time.Now().Add(5*time.Second), 0
	for p.CPU <= 0 && time.Now().Before(deadline) {
		for i := range 1 << 22 {
			x ^= i * i
		}
		if p, err = ReadProc(os.Getpid()); err != nil {
			t.Fatal(err)
		}
	}
	if p.CPU <= 0 {
		t.Errorf("ReadProc(self).CPU = %v after burning CPU (%d)", p.CPU, x)
	}
	if _, err := ReadProc(-1); err == nil {
		t.Error("ReadProc(-1) did not fail")
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name, line string
		want       time.Duration
		wantErr    bool
	}{
		{"plain", "42 (chimeraforge) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 100 0", 3250 * time.Millisecond, false},
		{"name with spaces and parens", "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0", 70 * time.Millisecond, false},
		{"short", "7 (x) R 1 2", 0, true},
		{"no name", "7 x R", 0, true},
		{"not a number", "7 (x) R 1 7 7 0 -1 0 0 0 0 0 a 4 0 0", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tc.line))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseStatCPU = %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestBufferAndTail(t *testing.T) {
	var b Buffer
	_, _ = b.Write([]byte("ab ab"))
	if b.Count("ab") != 2 || b.String() != "ab ab" {
		t.Errorf("Buffer = %q", b.String())
	}
	if Tail("abcdef", 3) != "…def" || Tail("abc", 3) != "abc" {
		t.Error("Tail")
	}
}
