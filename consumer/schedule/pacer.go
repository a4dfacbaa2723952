package schedule

import (
	"context"
	"hash/fnv"
	"slices"
	"sync"
	"time"

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
//   - Clock skew: grants are computed on the broker's clock (clock.go):
//     the broker stamps every claim, and each member reads the broker's
//     time off its own clock corrected by what its appends' answers said.
//     A member's clock off by an hour, or stepped, calls at the same true
//     times as the others; what is left is the error of that correction (a
//     fraction of a round trip), which slotMargin absorbs. A record whose
//     own time is far from its stamp moves the chain by claimAhead at most.
//   - A grant read back late (a slow produce or fetch): the call leaves at
//     once if it is at most half a period late, and is recorded again at
//     its departure (a Took record) so the next grant, whoever's, is a
//     period after it; else the grant is forfeited and the member claims
//     again.
//   - The log unreachable: no member can claim, so nothing is sent (and
//     nothing lost) until it is back; /readyz and the log say so. A lone
//     member does not need the log to send.

// view is the partitions of the source topics, the same for every member.
type view struct {
	all       []Partition // every bulk partition
	allUrgent []Partition // every urgent partition
}

// pacer is one app's call schedule: partitions wait for a call (wait) and
// report how it was answered (answered); the Log feeds it the app's
// records (apply) and writes what it asks for (outgoing); run grants.
type pacer struct {
	app     uint64
	l       *Log
	period  time.Duration
	refresh time.Duration
	clock   *brokerClock    // the broker's time (grants, claims)
	local   clockwork.Clock // this member's (timers)
	log     *zap.Logger
	obs     Observer
	id      string // this member in the claims log
	// groupPause receives other members' pause and resume records;
	// holdChanged the app's hold whenever it changes.
	groupPause  func(r claimRecord)
	holdChanged func(h *holdState)

	mu   sync.Mutex
	view view
	mine map[Partition]bool
	// alone says this member owns every partition of the source topics
	// (ownsAllLocked), kept as view and mine change: it is asked at every
	// turn of the grant loop.
	alone   bool
	waiting []*slotWaiter
	skip    int // calls to leave unused after a 10023 (another sender)
	strikes int // 10023 answers in a row
	// lazyCtx, once set (Schedule.Run), has the log's granter step the
	// app while it has something to do (a poke makes it look); an idle
	// app costs no goroutine and no timer.
	lazyCtx context.Context
	// last is when the last call of this member left (this member's
	// clock: a correction of the broker's clock learnt later moves no
	// spacing).
	last time.Time
	// chain is the claims log's grants; nil until the log is read.
	chain *chain
	// share is this member's part of the group's recent calls (a moving
	// average over the claims log's grants).
	share float64
	// shown is the share and rate last shown to the observer.
	shown [2]float64
	seq   uint64
	// claims are this member's claims not yet used, in order.
	claims []*claim
	// took is a lone member's latest call not yet recorded (zero: none;
	// this member's clock): only the latest matters, so a slow log never
	// holds a queue of them. recorded is the latest one queued.
	took, recorded time.Time
	// outbox holds records to append that are not claims (pause,
	// resume, a hold's renewal), in order.
	outbox []claimRecord
	// renewing says a renewal of the hold is on its way.
	renewing bool

	// Kept by the log's granter, under its lock: queued says the app is
	// in its ready list, dueAt when it asked to be stepped and dueIdx its
	// place in the granter's heap (-1: none).
	queued bool
	dueAt  time.Time
	dueIdx int
}

// claim is one of this member's claims.
type claim struct {
	seq     uint64
	urgent  bool
	written bool      // acknowledged by the log
	read    bool      // read back from the log
	at      time.Time // when it was made (or acknowledged), this member's clock
}

type slotWaiter struct {
	partition Partition
	urgent    bool
	packed    bool // granted when it may leave: no lead
	granted   chan struct{}
	at        time.Time // when the call should leave (this member's clock)
	seq       uint64    // the claim granted (0: a lone member's grant)
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

// holdRenew is how long a hold goes without a record before a member
// writes it again, so the claims log (ten minutes of retention) keeps it
// for a member that starts later; each member waits a little longer than
// the last (by its id), so one of them renews it.
const holdRenew = 2 * time.Minute

// newPacer returns the slots of app, whose rate is rate calls a second,
// on claims log l. refresh bounds how long the grant loop sleeps when
// nothing wakes it.
func newPacer(app uint64, rate float64, refresh time.Duration, l *Log, log *zap.Logger, obs Observer) *pacer {
	if obs == nil {
		obs = noObserver{}
	}
	return &pacer{
		app:     app,
		l:       l,
		period:  time.Duration(float64(time.Second) * slotMargin / rate),
		refresh: refresh,
		clock:   l.clock,
		local:   l.local,
		log:     log,
		obs:     obs,
		id:      l.id,
		mine:    map[Partition]bool{},
		dueIdx:  -1,
	}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// poke has the log's granter step the app at its next round.
func (s *pacer) poke() { s.l.granter.poke(s) }

// lazy has the log's granter step the app while it has something to do,
// until ctx ends (Schedule.Run).
func (s *pacer) lazy(ctx context.Context) {
	s.mu.Lock()
	s.lazyCtx = ctx
	s.mu.Unlock()
	s.poke()
}

// idleLocked reports whether the app has nothing for its grant loop: no
// caller waits, no claim is out, nothing waits to be written, no hold to
// renew.
func (s *pacer) idleLocked() bool {
	return len(s.waiting) == 0 && len(s.claims) == 0 && s.took.IsZero() && len(s.outbox) == 0 && !s.renewing &&
		(s.chain == nil || s.chain.Hold == nil)
}

// wantWrite asks the log's writer for this app's records.
func (s *pacer) wantWrite() { s.l.wakeWriter(s.app) }

// lead is how long before its time a call is granted: time for the
// caller to pack and record it, so the call itself leaves on time.
func (s *pacer) lead() time.Duration { return min(s.period/3, 150*time.Millisecond) }

// leadLocked is the lead of the waiter the next grant goes to
// (nextLocked's): none for a packed call.
func (s *pacer) leadLocked() time.Duration {
	if i := s.nextLocked(); i >= 0 && s.waiting[i].packed {
		return 0
	}
	return s.lead()
}

// horizon is how far ahead of an urgent claim grants are fixed: more
// than the lead plus the time a claim takes to reach every member.
func (s *pacer) horizon() time.Duration { return s.lead() + 100*time.Millisecond }

// setRate changes the rate: the grants from now on are a new period
// apart.
func (s *pacer) setRate(rate float64) {
	s.mu.Lock()
	s.period = time.Duration(float64(time.Second) * slotMargin / rate)
	if s.chain != nil {
		s.chain.period, s.chain.horizon = int64(s.period), int64(s.horizon())
	}
	s.mu.Unlock()
	s.poke()
}

// setMine records the partitions this member owns (a new generation).
func (s *pacer) setMine(parts []Partition) {
	s.mu.Lock()
	s.mine = map[Partition]bool{}
	for _, p := range parts {
		s.mine[p] = true
	}
	s.alone = s.ownsAllLocked()
	s.mu.Unlock()
	s.poke()
	s.wantWrite()
}

// setView records the partitions of the source topics (read once a
// generation: a change of their number makes a new generation).
func (s *pacer) setView(v view) {
	sortPartitions(v.all)
	sortPartitions(v.allUrgent)
	s.mu.Lock()
	s.view = v
	s.alone = s.ownsAllLocked()
	s.mu.Unlock()
	s.poke()
	s.wantWrite()
}

// ownsAllLocked reports whether this member owns every partition of the
// source topics, from view and mine.
func (s *pacer) ownsAllLocked() bool {
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
	i := s.nextLocked()
	if i >= 0 && !s.waiting[i].urgent && s.skip > 0 {
		s.skip--
		return -1
	}
	return i
}

// nextLocked returns the index of the waiter next in line (the first
// urgent one, else the first), -1 for none.
func (s *pacer) nextLocked() int {
	if i := slices.IndexFunc(s.waiting, func(w *slotWaiter) bool { return w.urgent }); i >= 0 {
		return i
	}
	if len(s.waiting) == 0 {
		return -1
	}
	return 0
}

// grantLocked grants waiter i a call leaving at at (broker's clock).
func (s *pacer) grantLocked(i int, at time.Time) {
	w := s.waiting[i]
	s.waiting = slices.Delete(s.waiting, i, i+1)
	w.at = s.clock.toLocal(at)
	close(w.granted)
}

// wait blocks until the caller may make one call for partition. It
// returns a little before the call should leave (the lead; when the
// time comes for a packed call), with that time on this member's clock,
// so a caller can pack its call first; it must not send before, and the
// claim granted (0: a lone member's grant), for moved. Urgent waiters go
// before all others.
func (s *pacer) wait(ctx context.Context, partition Partition, urgent, packed bool) (time.Time, uint64, error) {
	w := &slotWaiter{partition: partition, urgent: urgent, packed: packed, granted: make(chan struct{})}
	s.mu.Lock()
	s.waiting = append(s.waiting, w)
	s.mu.Unlock()
	s.poke()
	s.wantWrite()
	select {
	case <-w.granted:
		return w.at, w.seq, nil
	case <-ctx.Done():
		s.mu.Lock()
		s.waiting = slices.DeleteFunc(s.waiting, func(x *slotWaiter) bool { return x == w })
		s.mu.Unlock()
		select {
		case <-w.granted: // granted meanwhile: the call goes unused
		default:
		}
		return time.Time{}, 0, ctx.Err()
	}
}

// moved returns when the call granted for this member's claim seq,
// waiting to leave at at (this member's clock), should leave now: later
// than at when a record read since moved its grant (another member's
// call that left late, recorded at its departure), by at most half a
// period; else at. A grant is handed to its caller a little before its
// time (the lead); a late call's record that comes meanwhile still moves
// it.
func (s *pacer) moved(seq uint64, at time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.chain == nil || seq == 0 {
		return at
	}
	g, ok := s.chain.find(s.id, seq)
	if !ok {
		return at
	}
	if t := s.clock.toLocal(time.Unix(0, g.At)); t.After(at) && t.Sub(at) <= s.period/2 {
		return t
	}
	return at
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
	s.wantWrite()
}

// step grants what is due now. It returns how long until the app should
// be stepped again, and false when the app is idle (stepped again only
// when poked) or not run (Schedule.Run).
func (s *pacer) step() (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lazyCtx == nil || s.lazyCtx.Err() != nil {
		return 0, false
	}
	var wait time.Duration
	share := s.share
	if s.alone {
		wait, share = s.grantAloneLocked(), 1
	} else {
		wait = s.grantClaimedLocked()
	}
	if shown := [2]float64{share, share * float64(time.Second) / float64(s.period)}; shown != s.shown {
		s.shown = shown
		s.obs.Share(shown[0], shown[1])
	}
	wait = min(wait, s.renewHoldLocked())
	if s.idleLocked() {
		return 0, false
	}
	return wait, true
}

// renewHoldLocked writes the app's hold again when no record has carried
// it for holdRenew (and a little more, different for each member), so
// that the claims log keeps it. It returns how long until it looks again.
func (s *pacer) renewHoldLocked() time.Duration {
	if s.chain == nil || s.chain.Hold == nil || s.renewing {
		return s.refresh
	}
	h := s.chain.Hold
	now := s.clock.Now().UnixNano()
	if h.Until != 0 && now >= h.Until {
		return s.refresh
	}
	f := fnv.New32a()
	_, _ = f.Write([]byte(s.id))
	due := h.Last + int64(holdRenew) + int64(f.Sum32()%1000)*int64(holdRenew/4)/1000
	if now < due {
		return time.Duration(due - now)
	}
	s.renewing = true
	s.outbox = append(s.outbox, renewal(s.id, *h, now))
	s.wantWrite()
	return s.refresh
}

// renewal is the record that writes hold h again at now.
func renewal(by string, h holdState, now int64) claimRecord {
	return holdClaim(by, holdRecord{By: h.By, Reason: h.Reason, Since: h.Since, Until: h.Until}, now, h.Until)
}

// holdClaim is the record of hold h written by by at now (Unix ns), ending
// at until (0: when released). It carries pause too: for a 0.10.0 member,
// a pause of the group whose prober is its writer, which that release
// obeys up to its PAUSE_MAX.
func holdClaim(by string, h holdRecord, now, until int64) claimRecord {
	next := until
	if next == 0 {
		next = now + int64(time.Hour)
	}
	return claimRecord{By: by, TS: now, Hold: &h, Pause: &pauseRecord{Info: "paused by an operator: " + h.Reason, Next: next}}
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
	now := s.local.Now()
	next := s.last.Add(s.period)
	if s.chain != nil && s.chain.end() > 0 {
		next = maxTime(next, s.clock.toLocal(time.Unix(0, s.chain.end())))
	}
	if now.Before(next) {
		return next.Sub(now)
	}
	// Granted when it may leave, not a lead before: an urgent caller that
	// comes meanwhile still takes the slot (Left moves the next one when
	// packing and recording the call delay the request).
	if i := s.pickLocked(); i >= 0 {
		s.grantLocked(i, s.clock.fromLocal(now))
		s.took, s.recorded = now, now
		s.wantWrite()
	}
	s.last = now // a call leaves, or the period is left unused after a 10023
	return 0
}

// left records that a granted call's attempt left at at (Turn.Departed, this
// member's clock). A lone member paces by its own calls, so the next one
// is a period after the latest departure, not after the grant: time the
// caller spent after its grant (a slow in-flight record, a loaded host)
// never brings two calls nearer than a period at the server. A member
// sharing the app sends at the grants of the claims log.
//
// A call is in the claims log from its grant (a lone member's is recorded
// when granted); one that leaves later than that by more than half the
// periods' margin (a merged call's in-flight record first, a loaded host)
// is recorded again at its departure (a Took record), which moves the
// grants after it, every member's, to a period after the real departure:
// a late call never brings the next one, whoever sends it, nearer than a
// period at the server.
func (s *pacer) left(at time.Time) {
	s.mu.Lock()
	later := at.After(s.last)
	// Only a lone member's grants follow its departures; a member sharing
	// the app grants by the claims log, so its grant loop has nothing to
	// look at (a Took record is the writer's).
	poke := later && s.alone
	if later {
		s.last = at
		switch {
		case !s.took.IsZero() && at.After(s.took):
			s.took, s.recorded = at, at // not written yet: record when it really left
		case s.took.IsZero() && !s.recorded.IsZero() && at.Sub(s.recorded) > s.tookSlack():
			s.took, s.recorded = at, at
			s.wantWrite()
		}
	}
	s.mu.Unlock()
	if poke {
		s.poke()
	}
}

// tookSlack is how much later than recorded a lone member's call may
// leave without being recorded again: half the margin the periods keep.
func (s *pacer) tookSlack() time.Duration {
	return time.Duration(float64(s.period) * (slotMargin - 1) / slotMargin / 2)
}

// grantClaimedLocked hands this member's grants to its waiters and asks
// the writer for the claims they need. It returns how long to wait
// before looking again.
func (s *pacer) grantClaimedLocked() time.Duration {
	now := s.clock.Now()
	local := s.local.Now()
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
				if c.written && local.Sub(c.at) > claimLost+s.period {
					s.log.Warn("a claim was acknowledged but never read back from the claims log; claiming again",
						zap.Uint64("claim", c.seq))
					s.claims = slices.Delete(s.claims, i, i+1)
					i--
				}
				continue
			}
			at := time.Unix(0, g.At)
			if d := at.Sub(now) - s.leadLocked(); d > 0 {
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
				s.waiting[j].seq = c.seq
				s.grantLocked(j, maxTime(at, now))
				// Where the claims log has the call: its grant, even when it
				// was read back late and leaves now. A departure later than
				// that (Turn.Departed) is recorded again (a Took record), which
				// moves the next grant, whoever's, to a period after it.
				s.recorded = s.clock.toLocal(at)
				s.last = s.recorded
				s.obs.Slot("used")
			} else {
				s.last = s.clock.toLocal(maxTime(at, now))
				s.obs.Slot("skipped")
			}
		}
	}
	if need, _ := s.claimNeededLocked(); need {
		s.wantWrite()
	}
	return max(wait, 0)
}

// claimNeededLocked reports whether the waiters need a claim more, and
// whether it is urgent: one claim for the bulk waiters, one more (urgent)
// while an urgent caller waits.
func (s *pacer) claimNeededLocked() (need, urgent bool) {
	if s.alone || len(s.waiting) == 0 {
		return false, false
	}
	urgentWaiting := slices.ContainsFunc(s.waiting, func(w *slotWaiter) bool { return w.urgent })
	urgentClaimed := slices.ContainsFunc(s.claims, func(c *claim) bool { return c.urgent })
	if urgentWaiting && !urgentClaimed {
		return true, true
	}
	return len(s.claims) == 0, false
}

// appendOutgoing appends to out the records this app asks the writer for
// now (now is the broker's time): the queued ones, a lone member's latest
// call, and a claim when the waiters need one; each carries the chain's
// snapshot, including every record up to readSeen.
func (s *pacer) appendOutgoing(out []outgoing, now time.Time, readSeen int64) []outgoing {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.chain == nil {
		return out // written once the log is read
	}
	from := len(out)
	for _, r := range s.outbox {
		out = append(out, outgoing{p: s, rec: r})
	}
	s.outbox = nil
	if !s.took.IsZero() {
		out = append(out, outgoing{p: s, rec: claimRecord{By: s.id, TS: s.clock.fromLocal(s.took).UnixNano(), Took: true}, took: s.took})
	}
	if need, urgent := s.claimNeededLocked(); need {
		s.seq++
		c := &claim{seq: s.seq, urgent: urgent, at: s.local.Now()}
		s.claims = append(s.claims, c)
		out = append(out, outgoing{p: s, rec: claimRecord{By: s.id, Seq: c.seq, TS: now.UnixNano(), Urgent: urgent}, claim: c})
	}
	if len(out) == from {
		return out
	}
	st := s.chain.state()
	st.Seen = max(st.Seen, readSeen)
	unsynced := !s.clock.synced()
	for i := from; i < len(out); i++ {
		out[i].rec.App = s.app
		out[i].rec.State = st
		out[i].rec.Unsynced = unsynced
	}
	return out
}

// written records how the log took a record of outgoing.
func (s *pacer) written(o outgoing, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := o.rec
	switch {
	case err == nil && o.claim != nil:
		o.claim.written, o.claim.at = true, s.local.Now()
	case err == nil && r.Took:
		if s.took.Equal(o.took) {
			s.took = time.Time{} // no later call meanwhile
		}
	case err == nil:
		if r.Hold != nil {
			s.renewing = false
		}
	case o.claim != nil:
		// Claim again with a fresh time (a claim that did reach the log
		// costs an unused grant).
		s.claims = slices.DeleteFunc(s.claims, func(x *claim) bool { return x == o.claim })
	case r.Took:
	default:
		s.outbox = append([]claimRecord{r}, s.outbox...)
	}
}

// started gives the slots the app's chain as the log held it at start.
func (s *pacer) started(c *chain) {
	s.mu.Lock()
	s.chain = c
	h := c.Hold
	s.mu.Unlock()
	if s.holdChanged != nil {
		s.holdChanged(h)
	}
	s.poke()
	s.wantWrite()
}

// caughtUp is called once the records the log held at start are applied.
func (s *pacer) caughtUp() {
	s.mu.Lock()
	var h *holdState
	if s.chain != nil && s.chain.Hold != nil {
		c := *s.chain.Hold
		h = &c
	}
	s.mu.Unlock()
	if h != nil && (h.Until == 0 || s.clock.Now().UnixNano() < h.Until) {
		until := "until resumed (timbroadcast resume)"
		if h.Until != 0 {
			until = "until " + time.Unix(0, h.Until).UTC().Format(time.RFC3339)
		}
		s.log.Warn("this app is paused by an operator: no call leaves until the pause ends", zap.Uint64("sdkappid", s.app),
			zap.String("paused_by", h.By), zap.String("reason", h.Reason),
			zap.String("since", time.Unix(0, h.Since).UTC().Format(time.RFC3339)), zap.String("ends", until))
	}
}

// apply applies the app's record at offset off, stamped by the broker at
// stamp (Unix ns; 0: not stamped). It reports whether the app's grant
// loop must look at the chain again: a member with nothing to grant (the
// other members of an app, the apps that have nothing to send) only keeps
// the chain, and costs its granter nothing.
func (s *pacer) apply(off int64, r claimRecord, stamp int64) (look bool) {
	s.mu.Lock()
	if s.chain == nil || !s.chain.apply(off, r, stamp) {
		s.mu.Unlock()
		return false
	}
	var group bool
	var hold *holdState
	holdRec := r.Hold != nil || r.Release
	switch {
	case holdRec:
		if s.chain.Hold != nil {
			h := *s.chain.Hold
			hold = &h
		}
		if r.By == s.id && r.Hold != nil {
			s.renewing = false
		}
	case r.Pause != nil || r.Resume:
		group = r.By != s.id
	default: // a claim or a lone member's call
		mine := 0.0
		if r.By == s.id {
			mine = 1
			for _, c := range s.claims {
				if c.seq == r.Seq && !r.Took {
					c.read = true
				}
			}
		}
		s.share += (mine - s.share) / shareWindow
	}
	look = holdRec || !s.idleLocked()
	s.mu.Unlock()
	switch {
	case holdRec && s.holdChanged != nil:
		s.holdChanged(hold)
	case group && s.groupPause != nil:
		s.groupPause(r)
	}
	return look
}

// logError is why the claims log cannot be used now; nil when it can
// (or when a lone member does not need it).
func (s *pacer) logError() error {
	s.mu.Lock()
	alone := s.alone
	s.mu.Unlock()
	if alone {
		return nil // a lone member sends without it
	}
	return s.l.Err()
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
