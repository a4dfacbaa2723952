package schedule

import (
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// The schedule's clock is the broker's. The claims topic is created with
// message.timestamp.type=LogAppendTime, so the broker stamps every record
// with its own time, and a produce answer carries that stamp: each of this
// member's appends tells it where the broker's clock was between the
// moment it sent the request and the moment the answer came, as an NTP
// exchange does. brokerClock keeps those bounds and reads the broker's
// time off this member's clock: grants are computed on the broker's
// clock, and this member calls at a grant by its own clock corrected by
// the difference. A member whose clock is an hour off, or steps, calls at
// the same true times as every other member.

// brokerClock estimates the broker's clock from this member's.
type brokerClock struct {
	local clockwork.Clock

	mu sync.Mutex
	// samples are the latest bounds of the difference (broker - local),
	// from appends, newest last.
	samples []clockSample
	// lower is the latest lower bound from a record read (the broker
	// stamped it before this member read it), at lowerAt.
	lower   time.Duration
	lowerAt time.Time
	// stamped says the broker stamps the log (an append answered with a
	// stamp, or a stamped record read).
	stamped bool
}

// clockSample bounds the difference between the broker's clock and ours,
// as measured at at (our clock).
type clockSample struct {
	lo, hi time.Duration
	at     time.Time
}

const (
	// clockSamples is how many appends' bounds are kept; clockSampleTTL
	// how long one counts (clocks drift: NTP slews at most 0.5 ms a
	// second).
	clockSamples   = 8
	clockSampleTTL = time.Minute
)

func newBrokerClock(local clockwork.Clock) *brokerClock {
	if local == nil {
		local = clockwork.NewRealClock()
	}
	return &brokerClock{local: local}
}

// appended records an append sent at sent and answered at answered (our
// clock), which the broker stamped at stamp (its clock), to resolution
// (Kafka stamps in milliseconds: the broker's time was in [stamp,
// stamp+resolution)).
func (b *brokerClock) appended(sent, answered, stamp time.Time, resolution time.Duration) {
	if stamp.IsZero() || answered.Before(sent) {
		return
	}
	s := clockSample{lo: stamp.Sub(answered), hi: stamp.Add(resolution).Sub(sent), at: answered}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stamped = true
	b.samples = append(b.samples, s)
	if len(b.samples) > clockSamples {
		b.samples = b.samples[1:]
	}
}

// read records a record the broker stamped at stamp, read at received
// (our clock): the broker's clock was past stamp then.
func (b *brokerClock) read(received, stamp time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stamped = true
	lo := stamp.Sub(received)
	if b.lowerAt.IsZero() || received.Sub(b.lowerAt) > clockSampleTTL || lo > b.lower {
		b.lower, b.lowerAt = lo, received
	}
}

// offset is the estimated difference broker - local: of the bounds of the
// recent appends that agree with the newest (an older one that does not
// agree was taken before this clock stepped), the one nearest zero (none
// when zero is within them); else the latest lower bound from a read, else
// zero.
func (b *brokerClock) offset() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.local.Now()
	n := len(b.samples)
	if n == 0 || now.Sub(b.samples[n-1].at) > clockSampleTTL {
		if !b.lowerAt.IsZero() && now.Sub(b.lowerAt) <= clockSampleTTL {
			return b.lower
		}
		if n > 0 {
			return min(max(0, b.samples[n-1].lo), b.samples[n-1].hi)
		}
		return 0
	}
	lo, hi := b.samples[n-1].lo, b.samples[n-1].hi
	for i := n - 2; i >= 0; i-- {
		s := b.samples[i]
		if now.Sub(s.at) > clockSampleTTL {
			break
		}
		l, h := max(lo, s.lo), min(hi, s.hi)
		if l > h {
			break // this clock stepped (or the broker's) since that sample
		}
		lo, hi = l, h
	}
	// This member's clock as it is, when the broker's answers allow it (a
	// host kept in time by NTP: members call exactly as their clocks say,
	// with no error from a round trip); else corrected by the least the
	// answers demand.
	return min(max(0, lo), hi)
}

// synced reports whether an append's answer told this member where the
// broker's clock is within clockSampleTTL: its claims' times are then on
// the broker's clock (else they say so: claimRecord.Unsynced).
func (b *brokerClock) synced() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.samples)
	return n > 0 && b.local.Now().Sub(b.samples[n-1].at) <= clockSampleTTL
}

// Now is the broker's time as this member estimates it.
func (b *brokerClock) Now() time.Time { return b.local.Now().Add(b.offset()) }

// toLocal is broker time t on this member's clock.
func (b *brokerClock) toLocal(t time.Time) time.Time { return t.Add(-b.offset()) }

// fromLocal is this member's time t on the broker's clock.
func (b *brokerClock) fromLocal(t time.Time) time.Time { return t.Add(b.offset()) }
