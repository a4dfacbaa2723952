package sendertest

import (
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter models of the app's rate limit. Tencent does not document its
// algorithm, so the emulator offers the plausible ones and tests run
// against each.
const (
	// LimiterBucket is a token bucket of RateBurst calls refilled at Rate
	// (2% headroom absorbs the scheduling jitter of a client that paces at
	// exactly Rate). The default.
	LimiterBucket = "bucket"
	// LimiterWindow allows Rate calls (rounded up) per wall-clock second.
	LimiterWindow = "window"
	// LimiterSliding allows Rate calls (rounded up) in any one-second
	// window.
	LimiterSliding = "sliding"
	// LimiterSpacing refuses a call closer than 0.9/Rate seconds after the
	// previous accepted one: the strictest model.
	LimiterSpacing = "spacing"
)

// Limiters lists the limiter models.
var Limiters = []string{LimiterBucket, LimiterWindow, LimiterSliding, LimiterSpacing}

// limiter decides whether a call at now is within the limit; accepted
// calls count against it.
type limiter interface {
	allow(now time.Time) bool
}

func newLimiter(model string, perSecond float64, burst int) (limiter, error) {
	if perSecond <= 0 {
		return nil, nil
	}
	n := int(math.Max(1, math.Ceil(perSecond-1e-9)))
	switch model {
	case "", LimiterBucket:
		if burst <= 0 {
			burst = int(math.Max(1, math.Round(perSecond)))
		}
		return bucket{rate.NewLimiter(rate.Limit(perSecond*1.02), burst)}, nil
	case LimiterWindow:
		return &window{n: n}, nil
	case LimiterSliding:
		return &sliding{n: n}, nil
	case LimiterSpacing:
		return &spacing{gap: time.Duration(0.9 / perSecond * float64(time.Second))}, nil
	}
	return nil, fmt.Errorf("unknown limiter %q (known: %v)", model, Limiters)
}

type bucket struct{ l *rate.Limiter }

func (b bucket) allow(now time.Time) bool { return b.l.AllowN(now, 1) }

type window struct {
	mu     sync.Mutex
	n      int
	second int64
	count  int
}

func (w *window) allow(now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := now.Unix(); s != w.second {
		w.second, w.count = s, 0
	}
	if w.count >= w.n {
		return false
	}
	w.count++
	return true
}

type sliding struct {
	mu       sync.Mutex
	n        int
	accepted []time.Time
}

func (s *sliding) allow(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := s.accepted[:0]
	for _, t := range s.accepted {
		if now.Sub(t) < time.Second {
			keep = append(keep, t)
		}
	}
	s.accepted = keep
	if len(s.accepted) >= s.n {
		return false
	}
	s.accepted = append(s.accepted, now)
	return true
}

type spacing struct {
	mu   sync.Mutex
	gap  time.Duration
	last time.Time
}

func (s *spacing) allow(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.last.IsZero() && now.Sub(s.last) < s.gap {
		return false
	}
	s.last = now
	return true
}
