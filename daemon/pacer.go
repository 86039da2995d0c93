package daemon

import (
	"math/rand/v2"
	"time"
)

// Pacer spaces the arrivals of an open-loop workload. Interval returns the
// gap between the previous scheduled arrival and the next one; the
// dispatcher adds it to the previous *scheduled* time, not to the time the
// previous arrival actually started, so a late start shows up as schedule
// delay instead of silently lowering the rate (coordinated omission).
type Pacer interface {
	Interval() time.Duration
}

// constantPacer starts one arrival every 1/rate seconds.
type constantPacer struct{ gap time.Duration }

// NewConstantPacer returns a pacer for rate arrivals per second, evenly spaced.
func NewConstantPacer(rate float64) Pacer {
	return constantPacer{gap: rateToGap(rate)}
}

func (p constantPacer) Interval() time.Duration { return p.gap }

// poissonPacer draws exponentially distributed gaps with mean 1/rate, which
// makes the number of arrivals in any window Poisson distributed: the
// arrival process of many independent users.
type poissonPacer struct {
	rate float64
	rng  *rand.Rand
}

// NewPoissonPacer returns a pacer of Poisson arrivals at rate per second,
// reproducible for a given seed. It is not safe for concurrent use.
func NewPoissonPacer(rate float64, seed int64) Pacer {
	return &poissonPacer{rate: rate, rng: rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))}
}

func (p *poissonPacer) Interval() time.Duration {
	return time.Duration(p.rng.ExpFloat64() / p.rate * float64(time.Second))
}

func rateToGap(rate float64) time.Duration {
	return time.Duration(float64(time.Second) / rate)
}
