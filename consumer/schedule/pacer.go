package schedule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jonboulle/clockwork"
	"go.uber.org/zap"
)

// The call schedule. Tencent does not document its limiter (token bucket,
// fixed or sliding window, minimum spacing), so the calls of all members
// of the group are spaced at least 1/AppRate apart by one schedule they
// all compute alike from Kafka alone.
//
// A member that owns every partition of the source topics (one process,
// or the last replica standing) is alone: no other member can call, so it
// paces by its own last call and an idle call leaves at once, with no
// broker request on the way; each call it makes is recorded in the claims
// log (a took record, written after the call left) so a member that joins
// later places its first call after it.
//
// Several members share the app through the claims log (claims.go): a
// member with a call ready appends a claim, reads the log, and sends at
// the grant every member computes alike for that claim. An idle call
// leaves as soon as its claim is read back (one produce, one fetch: a few
// milliseconds); under a backlog the grants follow each other a period
// apart, so the group keeps the whole rate, and no member polls offsets.
//
// Failure modes:
//   - A member dies holding a claim or a grant: its slot goes unused; the
//     chain goes on.
//   - Clock skew: grants are computed from the claimers' timestamps alike
//     everywhere, and each member sends at a grant by its own clock, so two
//     members' clocks apart by d bring their calls d nearer than a period
//     (NTP keeps d to milliseconds; slotMargin absorbs 1%).
//   - A grant read back late (a slow produce or fetch): the call leaves at
//     once if it is at most half a period late, else the grant is
//     forfeited and the member claims again.
//   - The log unreachable: no member can claim, so nothing is sent (and
//     nothing lost) until it is back; /readyz and the log say so. A lone
//     member does not need the log to send.

// view is the partitions of the source topics, the same for every member.
type view struct {
	all       []Partition // every bulk partition
	allUrgent []Partition // every urgent partition
}

// ClaimsLog is the claims log as the schedule uses it: NewKafkaLog's, or
// a test's in memory.
type ClaimsLog interface {
	// bootstrap returns the offset to read from and the chain's state just
	// before it (the last record's snapshot; empty for an empty log).
	bootstrap(ctx context.Context) (int64, chainState, error)
	// read returns the records from offset from on, waiting for some.
	read(ctx context.Context, from int64) ([]slotRecord, int64, error)
	// append appends r and waits for all in-sync replicas.
	append(ctx context.Context, r claimRecord) error
}

// slotRecord is one record read from the claims log.
type slotRecord struct {
	offset int64
	rec    claimRecord
	err    error // not a claims-log record
}

// schedule is the call schedule: partitions wait for a call (wait) and
// report how it was answered (answered); the worker starts it (run) and
// tells it which partitions are this member's (setMine).
type pacer struct {
	period  time.Duration
	refresh time.Duration
	clock   clockwork.Clock
	log     *zap.Logger
	obs     Observer
	id      string // this member in the claims log
	slots   ClaimsLog
	// groupPause receives other members' pause and resume records.
	groupPause func(r claimRecord)

	mu sync.Mutex
	// newerSeen says a record of a newer claims version was met (warned
	// once).
	newerSeen bool
	view      view
	mine      map[Partition]bool
	waiting   []*slotWaiter
	skip      int // calls to leave unused after a 10023 (another sender)
	strikes   int // 10023 answers in a row
	changed   chan struct{}
	// last is when the last call of this member left.
	last time.Time
	// chain is the claims log's grants; nil until the log is read.
	chain *chain
	// share is this member's part of the group's recent calls (a moving
	// average over the claims log's grants).
	share float64
	seq   uint64
	// claims are this member's claims not yet used, in order.
	claims []*claim
	// took is a lone member's latest call not yet recorded (zero: none):
	// only the latest matters, so a slow log never holds a queue of them.
	took time.Time
	// outbox holds records to append that are not claims (pause,
	// resume), in order.
	outbox []claimRecord
	// logErr is why the claims log cannot be used now (nil: it can).
	logErr error
	wrote  chan struct{} // wakes the writer
}

// claim is one of this member's claims.
type claim struct {
	seq     uint64
	urgent  bool
	written bool      // acknowledged by the log
	read    bool      // read back from the log
	at      time.Time // when it was made (or acknowledged)
}

type slotWaiter struct {
	partition Partition
	urgent    bool
	granted   chan struct{}
	at        time.Time // when the call should leave
}

// slotMargin stretches periods by 1%: calls exactly 1/rate apart sit on
// the edge of a sliding one-second window (the sixth call at 5/s lands
// exactly one second after the first), where timer and network jitter
// decide; 1% (10 ms a second) keeps them off it on a loaded host and costs
// 1% of the rate.
const slotMargin = 1.01

// shareWindow is the number of recent grants the share averages over.
const shareWindow = 20

// claimLost is how long a written claim may stay unread before the member
// forgets it and claims again (the log lost it: a truncation).
const claimLost = 10 * time.Second

// newSchedule returns the schedule of an app whose rate is rate calls a
// second. slots is the claims log; refresh bounds how long the grant loop
// sleeps when nothing wakes it.
func newPacer(rate float64, refresh time.Duration, clock clockwork.Clock, slots ClaimsLog, log *zap.Logger, obs Observer) *pacer {
	if obs == nil {
		obs = noObserver{}
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return &pacer{
		period:  time.Duration(float64(time.Second) * slotMargin / rate),
		refresh: refresh,
		clock:   clock,
		slots:   slots,
		log:     log,
		obs:     obs,
		id:      hex.EncodeToString(b),
		mine:    map[Partition]bool{},
		changed: make(chan struct{}, 1),
		wrote:   make(chan struct{}, 1),
	}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (s *pacer) poke() {
	wake(s.changed)
	wake(s.wrote)
}

// lead is how long before its time a call is granted: time for the
// caller to pack and record it, so the call itself leaves on time.
func (s *pacer) lead() time.Duration { return min(s.period/3, 150*time.Millisecond) }

// horizon is how far ahead of an urgent claim grants are fixed: more
// than the lead plus the time a claim takes to reach every member.
func (s *pacer) horizon() time.Duration { return s.lead() + 100*time.Millisecond }

// setMine records the partitions this member owns (a new generation).
func (s *pacer) setMine(parts []Partition) {
	s.mu.Lock()
	s.mine = map[Partition]bool{}
	for _, p := range parts {
		s.mine[p] = true
	}
	s.mu.Unlock()
	s.poke()
}

// setView records the partitions of the source topics (read once a
// generation: a change of their number makes a new generation).
func (s *pacer) setView(v view) {
	sortPartitions(v.all)
	sortPartitions(v.allUrgent)
	s.mu.Lock()
	s.view = v
	s.mu.Unlock()
	s.poke()
}

// aloneLocked reports whether this member owns every partition of the
// source topics.
func (s *pacer) aloneLocked() bool {
	if len(s.view.all) == 0 {
		return false
	}
	for _, l := range [][]Partition{s.view.all, s.view.allUrgent} {
		for _, p := range l {
			if !s.mine[p] {
				return false
			}
		}
	}
	return true
}

// pickLocked returns the index of the waiter to grant the next call to
// (urgent first), or -1 when the member leaves this call unused after a
// 10023 (urgent callers never give way).
func (s *pacer) pickLocked() int {
	for j, w := range s.waiting {
		if w.urgent {
			return j
		}
	}
	if s.skip > 0 {
		s.skip--
		return -1
	}
	return 0
}

// grantLocked grants waiter i a call leaving at at.
func (s *pacer) grantLocked(i int, at time.Time) {
	w := s.waiting[i]
	s.waiting = slices.Delete(s.waiting, i, i+1)
	w.at = at
	close(w.granted)
}

// wait blocks until the caller may make one call for partition. It
// returns a little before the call should leave (the lead), with that
// time, so a caller can pack its call first; it must not send before.
// Urgent waiters go before all others.
func (s *pacer) wait(ctx context.Context, partition Partition, urgent bool) (time.Time, error) {
	w := &slotWaiter{partition: partition, urgent: urgent, granted: make(chan struct{})}
	s.mu.Lock()
	s.waiting = append(s.waiting, w)
	s.mu.Unlock()
	s.poke()
	select {
	case <-w.granted:
		return w.at, nil
	case <-ctx.Done():
		s.mu.Lock()
		s.waiting = slices.DeleteFunc(s.waiting, func(x *slotWaiter) bool { return x == w })
		s.mu.Unlock()
		select {
		case <-w.granted: // granted meanwhile: the call goes unused
		default:
		}
		return time.Time{}, ctx.Err()
	}
}

// answered records how a call ended: a frequency-limit answer means
// another sender uses the app too (or a member's clock is off), so this
// member leaves some of its calls unused (1, 2, then 4 after 10023 answers
// in a row; urgent events never wait for that); any other answer ends it.
func (s *pacer) answered(rateLimited bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !rateLimited {
		s.strikes = 0
		return
	}
	s.strikes++
	s.skip = min(1<<min(s.strikes-1, 2), 4)
}

// publish appends a record that is not a claim (pause, resume) to the
// claims log, after the records already queued.
func (s *pacer) publish(r claimRecord) {
	s.mu.Lock()
	s.outbox = append(s.outbox, r)
	s.mu.Unlock()
	wake(s.wrote)
}

// run grants calls and keeps the claims log until ctx ends.
func (s *pacer) run(ctx context.Context) {
	var loops sync.WaitGroup
	loops.Go(func() { s.grant(ctx) })
	loops.Go(func() { s.read(ctx) })
	loops.Go(func() { s.write(ctx) })
	loops.Wait()
}

// grant grants calls until ctx ends.
func (s *pacer) grant(ctx context.Context) {
	for {
		s.mu.Lock()
		var wait time.Duration
		if s.aloneLocked() {
			wait = s.grantAloneLocked()
			s.obs.Share(1, float64(time.Second)/float64(s.period))
		} else {
			wait = s.grantClaimedLocked()
			s.obs.Share(s.share, s.share*float64(time.Second)/float64(s.period))
		}
		s.mu.Unlock()
		if !s.sleep(ctx, wait) {
			return
		}
	}
}

// grantAloneLocked paces a member that owns every partition by its own
// calls: the first waiter (urgent first) goes now if the last call left a
// period ago or more, and after every grant of the claims log (calls of
// members that had partitions a moment ago). It returns how long to wait
// before looking again.
func (s *pacer) grantAloneLocked() time.Duration {
	s.claims = nil // a lone member claims nothing: unused grants
	if len(s.waiting) == 0 {
		return s.refresh // a new waiter pokes the loop
	}
	now := s.clock.Now()
	next := s.last.Add(s.period)
	if s.chain != nil {
		next = maxTime(next, time.Unix(0, s.chain.end()))
	}
	if now.Before(next) {
		return next.Sub(now)
	}
	// Granted when it may leave, not a lead before: an urgent caller that
	// comes meanwhile still takes the slot (Left moves the next one when
	// packing and recording the call delay the request).
	if i := s.pickLocked(); i >= 0 {
		s.grantLocked(i, now)
		s.took = now
		wake(s.wrote)
	}
	s.last = now // a call leaves, or the period is left unused after a 10023
	return 0
}

// left records that a granted call's attempt left at at (Turn.Left). A
// lone member paces by its own calls, so the next one is a period after
// the latest departure, not after the grant: time the caller spent after
// its grant (a slow in-flight record, a loaded host) never brings two
// calls nearer than a period at the server. A member sharing the app
// sends at the grants of the claims log, which a late departure cannot
// move.
func (s *pacer) left(at time.Time) {
	s.mu.Lock()
	later := at.After(s.last)
	if later {
		s.last = at
		if !s.took.IsZero() && at.After(s.took) {
			s.took = at // not written yet: record when it really left
		}
	}
	s.mu.Unlock()
	if later {
		s.poke()
	}
}

// grantClaimedLocked hands this member's grants to its waiters and asks
// the writer for the claims they need. It returns how long to wait
// before looking again.
func (s *pacer) grantClaimedLocked() time.Duration {
	now := s.clock.Now()
	wait := s.refresh
	if s.chain != nil {
		for i := 0; i < len(s.claims); i++ {
			c := s.claims[i]
			g, ok := s.chain.find(s.id, c.seq)
			if !ok {
				if c.read {
					// Read back but pruned already: its grant was long past
					// (a very late read).
					s.claims = slices.Delete(s.claims, i, i+1)
					i--
					s.obs.Slot("forfeited")
					continue
				}
				if c.written && now.Sub(c.at) > claimLost+s.period {
					s.log.Warn("a claim was acknowledged but never read back from the claims log; claiming again",
						zap.Uint64("claim", c.seq))
					s.claims = slices.Delete(s.claims, i, i+1)
					i--
				}
				continue
			}
			at := time.Unix(0, g.At)
			if d := at.Sub(now) - s.lead(); d > 0 {
				wait = min(wait, d)
				continue
			}
			s.claims = slices.Delete(s.claims, i, i+1)
			i--
			if late := now.Sub(at); late > s.period/2 {
				s.obs.Slot("forfeited")
				s.log.Debug("grant read back too late; claiming again", zap.Duration("late", late))
				continue
			}
			if len(s.waiting) == 0 {
				s.obs.Slot("unused")
				continue
			}
			if j := s.pickLocked(); j >= 0 {
				s.grantLocked(j, maxTime(at, now))
				s.obs.Slot("used")
			} else {
				s.obs.Slot("skipped")
			}
			s.last = maxTime(at, now)
		}
	}
	if need, _ := s.claimNeededLocked(); need {
		wake(s.wrote)
	}
	return max(wait, 0)
}

// claimNeededLocked reports whether the waiters need a claim more, and
// whether it is urgent: one claim for the bulk waiters, one more (urgent)
// while an urgent caller waits.
func (s *pacer) claimNeededLocked() (need, urgent bool) {
	if s.aloneLocked() || len(s.waiting) == 0 {
		return false, false
	}
	urgentWaiting := slices.ContainsFunc(s.waiting, func(w *slotWaiter) bool { return w.urgent })
	urgentClaimed := slices.ContainsFunc(s.claims, func(c *claim) bool { return c.urgent })
	if urgentWaiting && !urgentClaimed {
		return true, true
	}
	return len(s.claims) == 0, false
}

// write appends claims and queued records to the claims log until ctx
// ends, retrying with a backoff while the log refuses them.
func (s *pacer) write(ctx context.Context) {
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(100*time.Millisecond), backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0))
	for {
		s.mu.Lock()
		var r claimRecord
		var c *claim
		ok := s.chain != nil
		need, urgent := s.claimNeededLocked()
		switch {
		case !ok:
		case len(s.outbox) > 0:
			r = s.outbox[0]
		case !s.took.IsZero():
			r = claimRecord{By: s.id, TS: s.took.UnixNano(), Took: true}
		case need:
			s.seq++
			c = &claim{seq: s.seq, urgent: urgent, at: s.clock.Now()}
			s.claims = append(s.claims, c)
			r = claimRecord{By: s.id, Seq: c.seq, TS: c.at.UnixNano(), Urgent: urgent}
		default:
			ok = false
		}
		if ok {
			r.State = s.chain.state()
		}
		s.mu.Unlock()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-s.wrote:
			}
			continue
		}
		err := s.slots.append(ctx, r)
		s.mu.Lock()
		switch {
		case err == nil && c != nil:
			c.written, c.at = true, s.clock.Now()
		case err == nil && r.Took:
			if s.took.UnixNano() == r.TS {
				s.took = time.Time{} // no later call meanwhile
			}
		case err == nil:
			s.outbox = s.outbox[1:]
		case c != nil:
			// Claim again with a fresh timestamp (a claim that did reach the
			// log costs an unused grant).
			s.claims = slices.DeleteFunc(s.claims, func(x *claim) bool { return x == c })
		}
		s.setLogErrLocked(err)
		s.mu.Unlock()
		if err == nil {
			bo.Reset()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		d := bo.NextBackOff()
		s.log.Warn("cannot write to the claims log; calls wait", zap.Error(err), zap.Duration("in", d))
		if sleepCtx(ctx, d) != nil {
			return
		}
	}
}

// setLogErrLocked records whether the claims log works, logging changes.
func (s *pacer) setLogErrLocked(err error) {
	if err == nil && s.logErr != nil {
		s.log.Info("the claims log works again")
	}
	s.logErr = err
}

// logError is why the claims log cannot be used now; nil when it can
// (or when a lone member does not need it).
func (s *pacer) logError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aloneLocked() {
		return nil // a lone member sends without it
	}
	return s.logErr
}

// read follows the claims log until ctx ends: the grants of every claim
// and the group's pause records.
func (s *pacer) read(ctx context.Context) {
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(100*time.Millisecond), backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0))
	fail := func(err error, what string) bool {
		s.mu.Lock()
		s.setLogErrLocked(err)
		s.mu.Unlock()
		d := bo.NextBackOff()
		s.log.Warn(what, zap.Error(err), zap.Duration("in", d))
		return sleepCtx(ctx, d) == nil
	}
	var next int64
	for {
		from, st, err := s.slots.bootstrap(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			next = from
			s.mu.Lock()
			s.chain = newChain(s.period, s.horizon(), st)
			s.mu.Unlock()
			break
		}
		if !fail(err, "cannot read the claims log; retrying") {
			return
		}
	}
	s.poke()
	for {
		recs, n, err := s.slots.read(ctx, next)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if !fail(err, "cannot read the claims log; calls wait") {
				return
			}
			continue
		}
		bo.Reset()
		next = n
		var group []claimRecord
		s.mu.Lock()
		for _, r := range recs {
			if r.err != nil {
				s.chain.Seen = max(s.chain.Seen, r.offset)
				s.log.Warn("skipping a record of the claims log that is not a claim", zap.Int64("offset", r.offset), zap.Error(r.err))
				continue
			}
			if r.rec.V > claimsVersion && !s.newerSeen {
				s.newerSeen = true
				s.log.Warn("the claims log holds records of a newer release: applied by the fields this release knows "+
					"(rolling upgrade in progress? upgrade this member too)", zap.Int("version", r.rec.V), zap.Int("known", claimsVersion),
					zap.String("by", cutOutside(r.rec.By, 64)))
			}
			if !s.chain.apply(r.offset, r.rec) {
				continue
			}
			switch {
			case r.rec.Pause != nil || r.rec.Resume:
				if r.rec.By != s.id {
					group = append(group, r.rec)
				}
			default: // a claim or a lone member's call
				mine := 0.0
				if r.rec.By == s.id {
					mine = 1
					for _, c := range s.claims {
						if c.seq == r.rec.Seq && !r.rec.Took {
							c.read = true
						}
					}
				}
				s.share += (mine - s.share) / shareWindow
			}
		}
		if len(recs) > 0 {
			s.setLogErrLocked(nil)
		}
		s.mu.Unlock()
		for _, r := range group {
			if s.groupPause != nil {
				s.groupPause(r)
			}
		}
		if len(recs) > 0 {
			s.poke()
		}
	}
}

// sleep waits d, or until the schedule changes; false when ctx ended.
func (s *pacer) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := s.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-s.changed:
	case <-t.Chan():
	}
	return true
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
