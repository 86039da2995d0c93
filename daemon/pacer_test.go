package daemon

import (
	"math"
	"testing"
	"time"
)

func TestConstantPacer(t *testing.T) {
	for _, tc := range []struct {
		rate float64
		want time.Duration
	}{
		{1, time.Second},
		{4, 250 * time.Millisecond},
		{0.5, 2 * time.Second},
	} {
		p := NewConstantPacer(tc.rate)
		for range 3 {
			if got := p.Interval(); got != tc.want {
				t.Errorf("rate %v: Interval() = %v, want %v", tc.rate, got, tc.want)
			}
		}
	}
}

func TestPoissonPacer(t *testing.T) {
	const rate, n = 20.0, 20000
	p := NewPoissonPacer(rate, 42)
	var sum, sumSq float64
	for range n {
		g := p.Interval().Seconds()
		if g < 0 {
			t.Fatalf("negative gap %v", g)
		}
		sum += g
		sumSq += g * g
	}
	mean := sum / n
	sd := math.Sqrt(sumSq/n - mean*mean)
	// Exponential gaps: mean and standard deviation both 1/rate. With 20k
	// samples the standard error of the mean is 0.7 %; allow 5 %.
	if math.Abs(mean-1/rate) > 0.05/rate {
		t.Errorf("mean gap %v, want %v ± 5%%", mean, 1/rate)
	}
	if math.Abs(sd-1/rate) > 0.05/rate {
		t.Errorf("gap standard deviation %v, want %v ± 5%% (exponential)", sd, 1/rate)
	}

	a, b := NewPoissonPacer(rate, 7), NewPoissonPacer(rate, 7)
	for i := range 100 {
		if x, y := a.Interval(), b.Interval(); x != y {
			t.Fatalf("same seed, gap %d differs: %v vs %v", i, x, y)
		}
	}
}
