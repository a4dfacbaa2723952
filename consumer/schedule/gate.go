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
	// now is the gate's clock: the broker's, with a claims log.
	now func() time.Time
	// hold is the operator's hold of the app (nil: none); onHold sees it
	// change.
	hold   *holdState
	onHold func(h *holdState)
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
		now:     time.Now,
	}
}

// heldLocked reports whether an operator's hold closes the gate at now,
// and how long it lasts (0: until released).
func (g *gate) heldLocked(now time.Time) (bool, time.Duration) {
	if g.hold == nil {
		return false, 0
	}
	if g.hold.Until == 0 {
		return true, 0
	}
	left := time.Unix(0, g.hold.Until).Sub(now)
	return left > 0, left
}

// setHold applies the app's hold as the claims log has it (nil: none).
func (g *gate) setHold(h *holdState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if h != nil {
		c := *h
		h = &c
	}
	g.hold = h
	if g.onHold != nil {
		g.onHold(h)
	}
	g.broadcastLocked()
}

// heldNow reports whether an operator's hold closes the gate now.
func (g *gate) heldNow() bool {
	_, held := g.held()
	return held
}

// held returns the operator's hold in force, if any.
func (g *gate) held() (holdState, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ok, _ := g.heldLocked(g.now()); ok {
		return *g.hold, true
	}
	return holdState{}, false
}

// waitHold waits while an operator's hold closes the gate.
func (g *gate) waitHold(ctx context.Context) error {
	for {
		g.mu.Lock()
		held, left := g.heldLocked(g.now())
		ch := g.changed
		g.mu.Unlock()
		if !held {
			return nil
		}
		if err := waitChange(ctx, ch, left); err != nil {
			return err
		}
	}
}

// waitChange waits for ch to close, d to pass (0: no limit) or ctx to
// end (its error).
func waitChange(ctx context.Context, ch <-chan struct{}, d time.Duration) error {
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-ch:
	case <-timer:
	}
	return nil
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
		now := g.now()
		held, left := g.heldLocked(now)
		wait := g.next.Sub(now)
		switch {
		case held:
			wait = left // an operator's hold: nobody, not even a probe
		case !g.paused:
			g.mu.Unlock()
			return false, nil
		case wait <= 0 && !g.probing:
			g.probing = true
			g.mu.Unlock()
			return true, nil
		case wait <= 0:
			wait = 0 // the probe is out: wait for its end
		}
		ch := g.changed
		g.mu.Unlock()
		if err := waitChange(ctx, ch, wait); err != nil {
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
	g.next = g.now().Add(wait)
	g.broadcastLocked()
	if g.publish != nil {
		r := claimRecord{By: g.member, TS: g.now().UnixNano(), Pause: &pauseRecord{Next: g.next.UnixNano(), Info: cause.Error()}}
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
	g.since = g.now()
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
	return g.now().Sub(g.since)
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
		if limit := g.now().Add(longest); time.Unix(0, r.Pause.Next).After(limit) {
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
			g.publish(claimRecord{By: g.member, TS: g.now().UnixNano(), Resume: true})
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

// closed reports whether the gate is paused or held.
func (g *gate) closed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	held, _ := g.heldLocked(g.now())
	return g.paused || held
}

// state reports whether the gate is paused, since when and why.
func (g *gate) state() (paused bool, since time.Time, cause error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.paused, g.since, g.cause
}
