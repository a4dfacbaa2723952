package schedule

import (
	"context"
	"errors"
	"math"
	"sort"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/sleep"
)

// Partition names one partition of a source topic.
type Partition struct {
	Topic     string
	Partition int
}

func (p Partition) String() string { return p.Topic + "/" + strconv.Itoa(p.Partition) }

// sortPartitions sorts by topic, then partition.
func sortPartitions(ps []Partition) {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Topic != ps[j].Topic {
			return ps[i].Topic < ps[j].Topic
		}
		return ps[i].Partition < ps[j].Partition
	})
}

// Observer sees what the schedule does (metrics). Its methods must not
// block.
type Observer interface {
	// Paused says whether sending is paused now.
	Paused(paused bool)
	// Slot counts a grant of this member: "used", "unused" (nobody
	// waited), "skipped" (left unused after a 10023) or "forfeited" (read
	// back too late).
	Slot(use string)
	// Share is this member's part of the group's recent calls and the
	// rate it makes (calls a second).
	Share(share, rate float64)
	// Held says whether an operator holds the app (timbroadcast pause),
	// who, why and until when (zero: until resumed).
	Held(held bool, h Hold)
}

type noObserver struct{}

func (noObserver) Paused(bool)            {}
func (noObserver) Slot(string)            {}
func (noObserver) Share(float64, float64) {}
func (noObserver) Held(bool, Hold)        {}

// Hold is an operator's pause of an app (timbroadcast pause): no member
// calls for the app until it is resumed or Until passes. Its times are the
// broker's.
type Hold struct {
	// By and Reason say who paused the app and why.
	By, Reason string
	// Since is when the pause began; Until when it ends (zero: when
	// resumed).
	Since, Until time.Time
}

func (h *holdState) public() Hold {
	out := Hold{By: h.By, Reason: h.Reason, Since: time.Unix(0, h.Since)}
	if h.Until != 0 {
		out.Until = time.Unix(0, h.Until)
	}
	return out
}

// Config configures a Schedule.
type Config struct {
	// App is the app's SDKAppID: its chain in the claims log.
	App uint64
	// Rate is the app's limit (calls a second) that the group shares
	// through the claims log. Zero (or +Inf) keeps no schedule: the pause
	// gate alone, and each turn's time comes from Pace.
	Rate float64
	// Log is the worker's claims log (NewLog), shared by its apps;
	// required with a Rate.
	Log *Log
	// Pace, without a Rate, waits for the caller's own pacing (a sender
	// that paces itself) and may be nil (calls leave at once).
	Pace func(ctx context.Context) error
	// Refresh bounds how long the grant loop sleeps when nothing wakes it.
	Refresh time.Duration
	// PauseInitial and PauseMax bound the backoff between probes while
	// paused.
	PauseInitial, PauseMax time.Duration
	// Logger logs the claims log's troubles; nil logs nothing.
	Logger *zap.Logger
	// Observer sees pauses and grants; nil sees nothing.
	Observer Observer
}

// Schedule decides when each call of this member leaves for one app: the pause gate
// first (while the API refuses every call, one probe at a time), then a
// slot of the app's rate shared by the group. A caller takes a turn
// (Take), makes its call, and ends the turn exactly once: Sent, Paused or
// Released.
type Schedule struct {
	gate  *gate
	slots *pacer // nil without a Rate
	pace  func(ctx context.Context) error
	log   *zap.Logger
}

// New returns the schedule cfg describes; Run runs it. With a Rate, it
// joins cfg.Log, which must not run yet.
func New(cfg Config) (*Schedule, error) {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	obs := cfg.Observer
	if obs == nil {
		obs = noObserver{}
	}
	s := &Schedule{gate: newGate(cfg.PauseInitial, cfg.PauseMax, obs.Paused), pace: cfg.Pace, log: log}
	s.gate.onHold = func(h *holdState) {
		if h == nil {
			obs.Held(false, Hold{})
			return
		}
		obs.Held(true, h.public())
	}
	if cfg.Rate > 0 && !math.IsInf(cfg.Rate, 1) {
		if cfg.Log == nil {
			return nil, errors.New("schedule: a Rate needs a claims log (Config.Log)")
		}
		p := newPacer(cfg.App, cfg.Rate, cfg.Refresh, cfg.Log, log, obs)
		p.groupPause = func(r claimRecord) {
			if err := s.gate.remote(r); err != nil {
				log.Warn("claims log: ignoring a record out of bounds", zap.Error(err))
			}
		}
		p.holdChanged = s.gate.setHold
		if err := cfg.Log.add(cfg.App, p); err != nil {
			return nil, err
		}
		s.gate.publish, s.gate.member, s.gate.now = p.publish, p.id, p.clock.Now
		s.gate.takeover = 2*time.Second + 2*p.period
		s.slots = p
	}
	return s, nil
}

// Paced reports whether the schedule keeps slots of a rate (through the
// claims log), rather than the pause gate alone.
func (s *Schedule) Paced() bool { return s.slots != nil }

// Run makes the schedule grant this app's calls until ctx ends, and
// returns: with a Rate, the claims log's granter (Log.Run) steps the
// app's grant loop while the app has something to do (a caller waiting,
// a claim out, a hold to renew), so an idle app costs no goroutine and no
// timer.
func (s *Schedule) Run(ctx context.Context) {
	if s.slots != nil {
		s.slots.lazy(ctx)
	}
}

// Held returns the operator's hold of the app in force, if any
// (timbroadcast pause).
func (s *Schedule) Held() (Hold, bool) {
	h, ok := s.gate.held()
	if !ok {
		return Hold{}, false
	}
	return h.public(), true
}

// SetView records every partition of the source topics (bulk and urgent),
// the same for every member: read once a generation.
func (s *Schedule) SetView(all, urgent []Partition) {
	if s.slots != nil {
		s.slots.setView(view{all: append([]Partition(nil), all...), allUrgent: append([]Partition(nil), urgent...)})
	}
}

// SetRate changes the rate of a schedule that keeps slots (an app's rate
// changed in the apps file): the grants from now on follow it. Members
// read the change at slightly different times; until they agree, a call
// may meet 10023 and is retried later.
func (s *Schedule) SetRate(rate float64) {
	if s.slots != nil && rate > 0 && !math.IsInf(rate, 1) {
		s.slots.setRate(rate)
	}
}

// SetMine records the partitions this member owns (a new generation).
func (s *Schedule) SetMine(parts []Partition) {
	if s.slots != nil {
		s.slots.setMine(parts)
	}
}

// Answered records how an attempt was answered: a frequency-limit answer
// (rateLimited) means another sender uses the app too, so this member
// leaves some of its slots unused; any other answer ends that.
func (s *Schedule) Answered(rateLimited bool) {
	if s.slots != nil {
		s.slots.answered(rateLimited)
	}
}

// LogError is why the claims log cannot be used now; nil when it can, or
// when this member needs none (alone, or no Rate).
func (s *Schedule) LogError() error {
	if s.slots == nil {
		return nil
	}
	return s.slots.logError()
}

// Paused reports whether sending is paused, since when and why.
func (s *Schedule) Paused() (paused bool, since time.Time, cause error) { return s.gate.state() }

// Turn is one call's turn: when it leaves, and whether it is the paused
// gate's one probe. It ends exactly once, by Sent, Paused or Released;
// later ends do nothing.
type Turn struct {
	s         *Schedule
	partition Partition
	urgent    bool
	packed    bool // TakePacked: no lead
	probe     bool
	ended     bool
	// Leave is when the call should leave (not before).
	Leave time.Time
	// seq is the claim the slot was granted for (0: none).
	seq uint64
}

// Take waits for partition's next turn (urgent turns go before all
// others): the gate open, or this caller the paused gate's one probe; then
// a slot. A pause that begins while the caller waits for its slot costs
// the slot: the caller goes back to the gate, so no call leaves off the
// schedule once a pause ends. The error is ctx's when it ended first.
func (s *Schedule) Take(ctx context.Context, partition Partition, urgent bool) (*Turn, error) {
	return s.take(ctx, partition, urgent, false)
}

// TakePacked is Take for a call that is packed and recorded already, so
// that nothing stands between its slot and its request: a member sharing
// the app is granted the slot when the call may leave, not a lead before
// (no timer of the caller's own, one wake-up less a call).
func (s *Schedule) TakePacked(ctx context.Context, partition Partition, urgent bool) (*Turn, error) {
	return s.take(ctx, partition, urgent, true)
}

func (s *Schedule) take(ctx context.Context, partition Partition, urgent, packed bool) (*Turn, error) {
	for {
		probe, err := s.gate.acquire(ctx)
		if err != nil {
			return nil, err
		}
		t := &Turn{s: s, partition: partition, urgent: urgent, packed: packed, probe: probe}
		if t.Leave, t.seq, err = t.slot(ctx); err != nil {
			s.gate.release(probe)
			return nil, err
		}
		if s.gate.heldNow() {
			s.gate.release(probe) // an operator's hold came meanwhile: the slot goes unused
			continue
		}
		if probe || !s.gate.closed() {
			return t, nil
		}
	}
}

// slot waits for the turn's slot: the schedule's, else the caller's own
// pacing (or now).
func (t *Turn) slot(ctx context.Context) (time.Time, uint64, error) {
	if t.s.slots != nil {
		return t.s.slots.wait(ctx, t.partition, t.urgent, t.packed)
	}
	if t.s.pace != nil {
		if err := t.s.pace(ctx); err != nil {
			return time.Time{}, 0, err
		}
	}
	return time.Now(), 0, nil
}

// recheck returns when the turn's call should leave now: Leave, moved
// later when a record the claims log gave since moved its slot (another
// member's call that left late, recorded at its departure, reached this
// member after the slot was handed over). A caller checks it once Leave
// has come, and waits again when it moved.
func (t *Turn) recheck() time.Time {
	if t.s.slots != nil && t.seq != 0 {
		t.Leave = t.s.slots.moved(t.seq, t.Leave)
	}
	return t.Leave
}

// retry waits for one more slot inside the turn, for an attempt that
// retries the call (the gate was passed), and returns when it leaves. An
// operator's hold that came meanwhile is waited out first.
func (t *Turn) retry(ctx context.Context) (time.Time, error) {
	for {
		if err := t.s.gate.waitHold(ctx); err != nil {
			return time.Time{}, err
		}
		at, _, err := t.slot(ctx)
		if err != nil || !t.s.gate.heldNow() {
			return at, err
		}
	}
}

// Departed records that an attempt of the turn's call left at at, a time
// of the real clock (sender.Trace: its request was made, or written to
// its connection). A member alone spaces its next call a period after
// it, so the time between a grant and the request never brings two calls
// nearer than a period. at is read on the real clock and placed on the
// schedule's Clock.
func (t *Turn) Departed(at time.Time) {
	if t != nil && t.s.slots != nil {
		t.s.slots.left(at.Add(-time.Since(t.s.slots.local.Now())))
	}
}

// Wait waits until the turn's call should leave: Leave, and once it has
// come, later while recheck moves it (another member's call that left
// late: a period after that call). The error is ctx's when it ended
// first.
func (t *Turn) Wait(ctx context.Context) error {
	var left time.Time
	for t.Leave.After(left) {
		left = t.Leave
		if err := t.s.sleepUntil(ctx, t.Leave); err != nil {
			return err
		}
		t.recheck()
	}
	return nil
}

// RetryWait waits for one more slot inside the turn (retry), then until
// it leaves.
func (t *Turn) RetryWait(ctx context.Context) error {
	at, err := t.retry(ctx)
	if err != nil {
		return err
	}
	return t.s.sleepUntil(ctx, at)
}

// sleepUntil waits until at, a time of the schedule's Clock, or until
// ctx ends.
func (s *Schedule) sleepUntil(ctx context.Context, at time.Time) error {
	d := time.Until(at)
	if s.slots != nil {
		d = s.slots.local.Until(at)
	}
	return sleep.For(ctx, d)
}

// Probe reports whether the turn is the paused gate's one probe.
func (t *Turn) Probe() bool { return t.probe }

// end reports whether the turn was still open, and ends it.
func (t *Turn) end() bool {
	if t == nil || t.ended {
		return false
	}
	t.ended = true
	return true
}

// Sent ends the turn with an answer of the API other than a pause (OK, a
// rejection, or a retryable answer that came back): a probe's answer opens
// the gate for every member. It returns how long sending was paused when
// this opened the gate, else zero.
func (t *Turn) Sent() (pausedFor time.Duration) {
	if !t.end() || !t.probe {
		return 0
	}
	return t.s.gate.probeDone(true)
}

// Paused ends the turn with a pause-class answer (cause): the gate closes
// for every member, and its next probe comes after the backoff, not
// before minWait. It returns the wait before the next probe and whether
// this answer started the pause.
func (t *Turn) Paused(cause error, minWait time.Duration) (wait time.Duration, started bool) {
	if !t.end() {
		return 0, false
	}
	return t.s.gate.pause(cause, minWait)
}

// Released ends the turn without an answer (nothing sent, the call cut
// short, a network failure): another caller may probe.
func (t *Turn) Released() {
	if t.end() {
		t.s.gate.release(t.probe)
	}
}
