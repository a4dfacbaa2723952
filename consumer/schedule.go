package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// The call schedule. Tencent does not document its limiter (token bucket,
// fixed or sliding window, minimum spacing), so calls from all members of
// the group are spaced by one schedule they all compute alike, from what
// they already share: the wall clock and Kafka.
//
// Slot k is the interval [k·T, (k+1)·T) of Unix time, T = 1/AppRate. Its
// owner is a partition: the k-th, modulo their number, of the partitions
// with a backlog (committed offset below the end offset: every member reads
// both from Kafka), sorted; with no backlog anywhere, partition k mod P.
// The member that owns that partition owns the slot and makes one call at
// the slot's middle, for whichever of its partitions is waiting (so a
// member's idle partition lends its slots to its busy ones). Members'
// clocks may differ by well under T/2 (NTP keeps them within
// milliseconds): two calls are never closer than about T, whatever the
// server's algorithm. A member's view of the backlog is refreshed every
// few hundred milliseconds; a short disagreement between members costs one
// 10023, retried. A member that owns every partition (one process, or
// the last replica standing) is alone: no other member can call, so it
// paces by its own last call and an idle call leaves at once.

// view is Kafka's view of the topics, the same for every member.
type view struct {
	urgent    []topicPartition // urgent partitions with a backlog
	bulk      []topicPartition // bulk partitions with a backlog
	all       []topicPartition // every bulk partition
	allUrgent []topicPartition // every urgent partition
}

// owners is the list slots are dealt from: urgent partitions with a
// backlog first (an urgent event takes the next slot of the app), else
// bulk ones, else every bulk partition in turn.
func (v view) owners() []topicPartition {
	switch {
	case len(v.urgent) > 0:
		return v.urgent
	case len(v.bulk) > 0:
		return v.bulk
	}
	return v.all
}

// pacer is what partitions need of the call schedule: a slot to call in,
// and how each call was answered. The worker starts it (run) and tells it
// which partitions are its own (setMine).
type pacer interface {
	// wait blocks until the caller may make one call for partition and
	// returns when the call should leave; urgent callers go first.
	wait(ctx context.Context, partition topicPartition, urgent bool) (time.Time, error)
	// answered records whether a call was answered 10023.
	answered(rateLimited bool)
	// setMine records the partitions this member owns.
	setMine(parts []topicPartition)
	// run keeps the schedule until ctx ends.
	run(ctx context.Context)
}

// schedule is the call schedule every member computes alike (a pacer).
type schedule struct {
	period  time.Duration
	refresh time.Duration
	clock   clockwork.Clock
	log     *zap.Logger
	metrics *Metrics
	// readView reads Kafka's view of the topics (Worker.backlog): with
	// backlog false, the partitions alone (no broker request: the
	// transport's cached metadata).
	readView func(ctx context.Context, backlog bool) (view, error)

	mu      sync.Mutex
	view    view
	mine    map[topicPartition]bool
	waiting []*slotWaiter
	skip    int // slots to leave unused after a 10023 (another sender)
	strikes int // 10023 answers in a row
	changed chan struct{}
	// mineChanged wakes the backlog watch when the member's partitions
	// change (a member no longer alone needs the backlog at once).
	mineChanged chan struct{}
	// last is when the last granted call left (or was to leave).
	last time.Time
}

type slotWaiter struct {
	partition topicPartition
	urgent    bool
	granted   chan struct{}
	at        time.Time // the slot's middle: when the call should go
}

// slotMargin stretches slots by 1%: calls exactly 1/rate apart sit on the
// edge of a sliding one-second window (the sixth call at 5/s lands exactly
// one second after the first), where timer and network jitter decide; 1%
// (10 ms a second) keeps them off it on a loaded host and costs 1% of the
// rate.
const slotMargin = 1.01

// newSchedule returns the schedule of an app whose rate is rate calls a
// second, reading the backlog with readView every refresh or so.
func newSchedule(rate float64, refresh time.Duration, clock clockwork.Clock, readView func(context.Context, bool) (view, error),
	log *zap.Logger, m *Metrics) *schedule {
	return &schedule{
		period:   time.Duration(float64(time.Second) * slotMargin / rate),
		refresh:  refresh,
		clock:    clock,
		readView: readView,
		log:      log,
		metrics:  m,
		mine:     map[topicPartition]bool{},
		changed:  make(chan struct{}, 1),
	}
}

func (s *schedule) poke() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// setMine records the partitions this member owns (a new generation).
func (s *schedule) setMine(parts []topicPartition) {
	s.mu.Lock()
	s.mine = map[topicPartition]bool{}
	for _, p := range parts {
		s.mine[p] = true
	}
	s.mu.Unlock()
	s.poke()
	select {
	case s.mineChanged <- struct{}{}:
	default:
	}
}

// setView records Kafka's view of the topics.
func (s *schedule) setView(v view) {
	for _, l := range [][]topicPartition{v.urgent, v.bulk, v.all, v.allUrgent} {
		sortPartitions(l)
	}
	s.mu.Lock()
	s.view = v
	s.mu.Unlock()
	s.poke()
}

// ownsLocked reports whether slot k is this member's.
func (s *schedule) ownsLocked(k int64) bool {
	owners := s.view.owners()
	if len(owners) == 0 {
		return false
	}
	return s.mine[owners[k%int64(len(owners))]]
}

// aloneLocked reports whether this member owns every partition of the
// source topics: no other member can call, so it paces by its own last
// call and an idle call leaves at once, not at a slot's middle.
func (s *schedule) aloneLocked() bool {
	if len(s.view.all) == 0 {
		return false
	}
	for _, l := range [][]topicPartition{s.view.all, s.view.allUrgent} {
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
func (s *schedule) pickLocked() int {
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
func (s *schedule) grantLocked(i int, at time.Time) {
	w := s.waiting[i]
	s.waiting = append(s.waiting[:i], s.waiting[i+1:]...)
	w.at = at
	close(w.granted)
}

// shareLocked is this member's share of the slots, over one round.
func (s *schedule) shareLocked() float64 {
	n := len(s.view.owners())
	if n == 0 {
		return 0
	}
	owned := 0
	for k := range int64(n) {
		if s.ownsLocked(k) {
			owned++
		}
	}
	return float64(owned) / float64(n)
}

// wait blocks until the caller may make one call for partition: the
// middle of the next slot this member owns that no earlier waiter took.
// Urgent waiters go before all others.
//
// It returns a little before that middle (the lead), with the middle, so a
// caller can pack its call first; it must not send before the middle.
func (s *schedule) wait(ctx context.Context, partition topicPartition, urgent bool) (time.Time, error) {
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
		for i, x := range s.waiting {
			if x == w {
				s.waiting = append(s.waiting[:i], s.waiting[i+1:]...)
				break
			}
		}
		s.mu.Unlock()
		select {
		case <-w.granted: // granted meanwhile: the slot goes unused
		default:
		}
		return time.Time{}, ctx.Err()
	}
}

// middle is when slot k's call leaves.
func (s *schedule) middle(k int64) time.Time {
	return time.Unix(0, k*int64(s.period)+int64(s.period)/2)
}

// lead is how long before a slot's middle it is granted: time for the
// caller to pack and record its call, so the call itself leaves at the
// middle whatever that took.
func (s *schedule) lead() time.Duration { return min(s.period/3, 150*time.Millisecond) }

// answered records how a call ended: a frequency-limit answer means
// another sender uses the app too (or members disagree for a moment), so
// this member leaves some of its slots unused (1, 2, then 4 after 10023
// answers in a row; urgent events never wait for that); any other answer
// ends it.
func (s *schedule) answered(rateLimited bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !rateLimited {
		s.strikes = 0
		return
	}
	s.strikes++
	s.skip = min(1<<min(s.strikes-1, 2), 4)
}

// run grants slots and keeps the view of the backlog fresh until ctx
// ends.
func (s *schedule) run(ctx context.Context) {
	var loops sync.WaitGroup
	loops.Go(func() { s.grant(ctx) })
	loops.Go(func() { s.watch(ctx) })
	loops.Wait()
}

// grant grants slots until ctx ends.
func (s *schedule) grant(ctx context.Context) {
	next := int64(0) // the first slot not yet handled
	for {
		s.mu.Lock()
		if s.aloneLocked() {
			wait := s.grantAloneLocked()
			s.mu.Unlock()
			s.metrics.setShare(1)
			s.metrics.setRate(float64(time.Second) / float64(s.period))
			if !s.sleep(ctx, wait) {
				return
			}
			continue
		}
		share := s.shareLocked()
		now := s.clock.Now()
		k := now.UnixNano() / int64(s.period)
		if now.UnixNano()-k*int64(s.period) > int64(s.period)/2 {
			k++ // this slot's middle has passed
		}
		k = max(k, next)
		if !s.last.IsZero() {
			// A period after the last call, whichever way it was paced.
			k = max(k, (s.last.UnixNano()+int64(s.period)/2+int64(s.period)-1)/int64(s.period))
		}
		// The next slot of ours within two rounds.
		horizon := int64(2*len(s.view.owners()) + 2)
		found := int64(-1)
		for i := range horizon {
			if s.ownsLocked(k + i) {
				found = k + i
				break
			}
		}
		s.mu.Unlock()
		s.metrics.setShare(share)
		s.metrics.setRate(share * float64(time.Second) / float64(s.period))

		wait := s.refresh
		if found >= 0 {
			at := s.middle(found)
			wait = at.Sub(now) - s.lead()
		}
		t := s.clock.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.changed:
			t.Stop()
			continue
		case <-t.Chan():
		}
		if found < 0 {
			continue
		}
		s.mu.Lock()
		if s.ownsLocked(found) && len(s.waiting) > 0 {
			if i := s.pickLocked(); i >= 0 {
				p := s.waiting[i].partition
				s.grantLocked(i, s.middle(found))
				s.log.Debug("slot granted", zap.Int64("slot", found), zap.Stringer("partition", p),
					zap.Stringers("owners", s.view.owners()))
			}
			s.last = s.middle(found)
		}
		s.mu.Unlock()
		next = found + 1
	}
}

// grantAloneLocked paces a member that owns every partition by its own
// calls: the first waiter (urgent first) goes now if the last call left a
// period ago or more. It returns how long to wait before looking again.
func (s *schedule) grantAloneLocked() time.Duration {
	if len(s.waiting) == 0 {
		return s.refresh // a new waiter pokes the loop
	}
	now := s.clock.Now()
	if next := s.last.Add(s.period); now.Before(next) {
		return next.Sub(now)
	}
	if i := s.pickLocked(); i >= 0 {
		s.grantLocked(i, now)
	}
	s.last = now // a call left, or the period is left unused after a 10023
	return 0
}

// sleep waits d, or until the schedule changes; false when ctx ended.
func (s *schedule) sleep(ctx context.Context, d time.Duration) bool {
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

// watch refreshes Kafka's view of the backlog until ctx ends. A member
// that is alone needs no backlog (it paces by its own calls): it reads the
// partitions alone, which costs the broker nothing, until another member
// takes some (setMine pokes the read at once). The
// reads are aligned to slot starts, every m slots (m·T at least the
// refresh interval), so every member reads at the same moments, up to
// their clocks' difference, and a view read at the start of a slot governs
// that slot's call at its middle: members disagree only about a change that
// lands within milliseconds of a read.
func (s *schedule) watch(ctx context.Context) {
	m := max(int64(1), int64((s.refresh+s.period-1)/s.period))
	failing := false
	for {
		s.mu.Lock()
		alone := s.aloneLocked()
		s.mu.Unlock()
		v, err := s.readView(ctx, !alone)
		switch {
		case err == nil && alone:
			s.mu.Lock()
			s.view.all, s.view.allUrgent = v.all, v.allUrgent
			s.mu.Unlock()
			failing = false
		case err == nil:
			s.setView(v)
			failing = false
		case ctx.Err() != nil:
			return
		case !failing:
			failing = true
			s.log.Warn("cannot read the group's backlog; keeping the last view of the call schedule", zap.Error(err))
		}
		now := s.clock.Now().UnixNano()
		k := now/int64(s.period) + 1
		k += (m - k%m) % m // the next slot start that is a read point
		t := s.clock.NewTimer(time.Duration(k*int64(s.period)-now) + time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.Chan():
		case <-s.mineChanged:
			t.Stop()
		}
	}
}

// backlog reads the view every member reads alike: every partition of the
// source topics and, withBacklog, per topic the partitions whose committed
// offset is below their end offset.
func (w *Worker) backlog(ctx context.Context, withBacklog bool) (view, error) {
	var v view
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	topics := w.topics()
	md, err := w.client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return v, err
	}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	parts := map[string][]int{}
	for _, t := range md.Topics {
		if t.Error != nil {
			return v, fmt.Errorf("topic %s: %w", t.Name, t.Error)
		}
		for _, p := range t.Partitions {
			parts[t.Name] = append(parts[t.Name], p.ID)
			req.Topics[t.Name] = append(req.Topics[t.Name], kafka.FirstOffsetOf(p.ID), kafka.LastOffsetOf(p.ID))
			if t.Name == w.cfg.Topic {
				v.all = append(v.all, topicPartition{t.Name, p.ID})
			} else {
				v.allUrgent = append(v.allUrgent, topicPartition{t.Name, p.ID})
			}
		}
	}
	if !withBacklog {
		return v, nil
	}
	lo, err := w.client.ListOffsets(ctx, req)
	if err != nil {
		return v, err
	}
	of, err := w.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: w.cfg.GroupID, Topics: parts})
	if err == nil && of.Error != nil && !errors.Is(of.Error, kafka.GroupIdNotFound) {
		err = of.Error
	}
	if err != nil {
		return v, err
	}
	for _, topic := range topics {
		committed := map[int]int64{}
		for _, po := range of.Topics[topic] {
			if po.Error == nil {
				committed[po.Partition] = po.CommittedOffset
			}
		}
		for _, po := range lo.Topics[topic] {
			if po.Error != nil {
				continue
			}
			c, ok := committed[po.Partition]
			if !ok || c < 0 {
				c = po.FirstOffset
			}
			if c >= po.LastOffset {
				continue
			}
			tp := topicPartition{topic, po.Partition}
			if topic == w.cfg.UrgentTopic {
				v.urgent = append(v.urgent, tp)
			} else {
				v.bulk = append(v.bulk, tp)
			}
		}
	}
	return v, nil
}
