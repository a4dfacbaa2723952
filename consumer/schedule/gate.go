package schedule

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/timbroadcast/timbroadcast/sender"
)

// gate stops all sending while the API answers with pause-class errors
// (errors every event would hit). While paused, one caller at a time is let
// through as a probe, after a capped exponential backoff; the first probe
// that gets any other answer opens the gate for everyone.
//
// With a claims log (publish set), the pause is the group's: the member
// whose call was paused writes a pause record naming itself and its next
// probe, every other member closes its gate on reading it and leaves the
// probing to that member, and the probe that clears writes a resume record
// that opens every member's gate. So the group sends one probe at a time,
// and resumes as one. A member takes the probing over when the prober has
// written nothing for a takeover interval past its announced probe (it
// died, or lost its partitions).
type gate struct {
	mu      sync.Mutex
	paused  bool
	probing bool
	next    time.Time // earliest time of the next probe
	cause   error
	since   time.Time
	bo      *backoff.ExponentialBackOff
	changed chan struct{} // closed and replaced on every state change
	onPause func(paused bool)
	// publish, if set, writes pause and resume records to the claims log;
	// member is this member's name there.
	publish func(claimRecord)
	member  string
	// takeover is how long past a remote prober's announced probe this
	// member waits before probing itself.
	takeover time.Duration
}

func newGate(initial, maxWait time.Duration, onPause func(bool)) *gate {
	return &gate{
		bo: backoff.NewExponentialBackOff(
			backoff.WithInitialInterval(initial),
			backoff.WithMaxInterval(maxWait),
			backoff.WithMaxElapsedTime(0),
		),
		changed: make(chan struct{}),
		onPause: onPause,
	}
}

func (g *gate) broadcastLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// acquire waits until the caller may send. probe is true when the gate is
// paused and the caller is the one probe: it must call probeDone.
func (g *gate) acquire(ctx context.Context) (probe bool, err error) {
	for {
		g.mu.Lock()
		if !g.paused {
			g.mu.Unlock()
			return false, nil
		}
		wait := time.Until(g.next)
		if wait <= 0 && !g.probing {
			g.probing = true
			g.mu.Unlock()
			return true, nil
		}
		ch := g.changed
		g.mu.Unlock()

		var timer <-chan time.Time
		var t *time.Timer
		if wait > 0 {
			t = time.NewTimer(wait)
			timer = t.C
		}
		select {
		case <-ctx.Done():
		case <-ch:
		case <-timer:
		}
		if t != nil {
			t.Stop()
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
	}
}

// pause records a pause-class error; the next probe comes after the
// backoff, and not before minWait. It returns the wait before the next
// probe and whether this call started the pause.
func (g *gate) pause(cause error, minWait time.Duration) (time.Duration, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	started := g.closeLocked()
	g.cause = cause
	g.probing = false
	wait := max(g.bo.NextBackOff(), minWait)
	g.next = time.Now().Add(wait)
	g.broadcastLocked()
	if g.publish != nil {
		r := claimRecord{By: g.member, TS: time.Now().UnixNano(), Pause: &pauseRecord{Next: g.next.UnixNano(), Info: cause.Error()}}
		var se *sender.Error
		if errors.As(cause, &se) {
			r.Pause.Code, r.Pause.Info = se.Code, se.Info
		}
		g.publish(r)
	}
	return wait, started
}

// closeLocked closes an open gate (its backoff starts over); it reports
// whether the gate was open.
func (g *gate) closeLocked() bool {
	if g.paused {
		return false
	}
	g.paused = true
	g.since = time.Now()
	g.bo.Reset()
	if g.onPause != nil {
		g.onPause(true)
	}
	return true
}

// openLocked opens a closed gate and returns how long it was closed.
func (g *gate) openLocked() time.Duration {
	g.paused = false
	g.cause = nil
	if g.onPause != nil {
		g.onPause(false)
	}
	return time.Since(g.since)
}

// remote applies another member's pause or resume record: a pause closes
// the gate and leaves the probing to its writer until a takeover interval
// past its next probe; a resume opens the gate.
//
// A pause whose next probe is further from now than our members wait
// (PAUSE_MAX with its jitter, or a minute past it for a code that asks for
// a minute, such as 70050) is not obeyed, and the error says why: this
// member probes itself when its own pause says so.
func (g *gate) remote(r claimRecord) error {
	if r.Pause != nil {
		longest := max(g.bo.MaxInterval*3/2, g.bo.MaxInterval+time.Minute)
		if limit := time.Now().Add(longest); time.Unix(0, r.Pause.Next).After(limit) {
			return fmt.Errorf("a pause record by %q announces its next probe at %s, later than PAUSE_MAX (%v) from now: not obeyed",
				cutOutside(r.By, 64), time.Unix(0, r.Pause.Next).UTC().Format(time.RFC3339), g.bo.MaxInterval)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if r.Resume {
		if g.paused {
			g.openLocked()
			g.broadcastLocked()
		}
		return nil
	}
	g.closeLocked()
	g.cause = &remotePause{by: r.By, code: r.Pause.Code, info: r.Pause.Info}
	// A probe announced later than PAUSE_MAX from now is not waited for
	// (the record is not ours to trust that far): this member probes then.
	g.next = time.Unix(0, r.Pause.Next).Add(g.takeover)
	g.broadcastLocked()
	return nil
}

// remotePause is the cause of a pause another member reported.
type remotePause struct {
	by   string
	code int
	info string
}

func (e *remotePause) Error() string {
	return fmt.Sprintf("member %s was answered %d (%s); it probes for the group", e.by, e.code, e.info)
}

// probeDone ends a probe. If the probe got an answer other than a pause,
// the gate opens; otherwise (ctx ended) another caller may probe.
func (g *gate) probeDone(cleared bool) (pausedFor time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.probing = false
	if cleared && g.paused {
		pausedFor = g.openLocked()
		if g.publish != nil {
			g.publish(claimRecord{By: g.member, TS: time.Now().UnixNano(), Resume: true})
		}
	}
	g.broadcastLocked()
	return pausedFor
}

// release ends a probe that sent nothing (probe false: nothing to do):
// another caller may probe.
func (g *gate) release(probe bool) {
	if probe {
		g.probeDone(false)
	}
}

// closed reports whether the gate is paused.
func (g *gate) closed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.paused
}

// state reports whether the gate is paused, since when and why.
func (g *gate) state() (paused bool, since time.Time, cause error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.paused, g.since, g.cause
}
