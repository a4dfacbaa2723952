package consumer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

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
// 10023, retried. A single process is the same schedule with every slot
// its own.
type schedule struct {
	period  time.Duration
	refresh time.Duration
	now     func() time.Time
	log     *zap.Logger
	metrics *Metrics

	mu      sync.Mutex
	backlog []int // partitions with a backlog, sorted
	total   int   // partitions of the topic
	mine    map[int]bool
	waiting []*slotWaiter
	skip    int // slots to leave unused after a 10023 (another sender)
	strikes int // 10023 answers in a row
	changed chan struct{}
}

type slotWaiter struct {
	partition int
	granted   chan struct{}
}

// slotMargin stretches slots by 0.5%: calls exactly 1/rate apart sit on
// the edge of a sliding one-second window (the sixth call at 5/s lands
// exactly one second after the first), where timer jitter decides; 0.5%
// keeps them off it and costs 0.5% of the rate.
const slotMargin = 1.005

func newSchedule(rate float64, refresh time.Duration, now func() time.Time, log *zap.Logger, m *Metrics) *schedule {
	return &schedule{
		period:  time.Duration(float64(time.Second) * slotMargin / rate),
		refresh: refresh,
		now:     now,
		log:     log,
		metrics: m,
		mine:    map[int]bool{},
		changed: make(chan struct{}, 1),
	}
}

func (s *schedule) poke() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// setMine records the partitions this member owns (a new generation).
func (s *schedule) setMine(parts []int) {
	s.mu.Lock()
	s.mine = map[int]bool{}
	for _, p := range parts {
		s.mine[p] = true
	}
	s.mu.Unlock()
	s.poke()
}

// setView records Kafka's view: partitions with a backlog, and how many
// partitions the topic has.
func (s *schedule) setView(backlog []int, total int) {
	sort.Ints(backlog)
	s.mu.Lock()
	s.backlog, s.total = backlog, total
	s.mu.Unlock()
	s.poke()
}

// ownsLocked reports whether slot k is this member's.
func (s *schedule) ownsLocked(k int64) bool {
	if n := int64(len(s.backlog)); n > 0 {
		return s.mine[s.backlog[k%n]]
	}
	if s.total == 0 {
		return false
	}
	return s.mine[int(k%int64(s.total))]
}

// shareLocked is this member's share of the slots, over one round.
func (s *schedule) shareLocked() float64 {
	n := len(s.backlog)
	if n == 0 {
		n = s.total
	}
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
func (s *schedule) wait(ctx context.Context, partition int) error {
	w := &slotWaiter{partition: partition, granted: make(chan struct{})}
	s.mu.Lock()
	s.waiting = append(s.waiting, w)
	s.mu.Unlock()
	s.poke()
	select {
	case <-w.granted:
		return nil
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
		return ctx.Err()
	}
}

// answered records how a call ended: a frequency-limit answer means
// another sender uses the app too (or members disagree for a moment), so
// this member leaves some of its slots unused, more after each one in a
// row; any other answer ends that.
func (s *schedule) answered(rateLimited bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !rateLimited {
		s.strikes = 0
		return
	}
	s.strikes++
	s.skip = min(1<<min(s.strikes-1, 3), 8)
}

// run grants slots until ctx ends.
func (s *schedule) run(ctx context.Context) {
	next := int64(0) // the first slot not yet handled
	for {
		s.mu.Lock()
		share := s.shareLocked()
		now := s.now()
		k := now.UnixNano() / int64(s.period)
		if now.UnixNano()-k*int64(s.period) > int64(s.period)/2 {
			k++ // this slot's middle has passed
		}
		k = max(k, next)
		// The next slot of ours within two rounds.
		horizon := int64(2*max(len(s.backlog), s.total) + 2)
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
			at := time.Unix(0, found*int64(s.period)+int64(s.period)/2)
			wait = at.Sub(now)
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.changed:
			t.Stop()
			continue
		case <-t.C:
		}
		if found < 0 {
			continue
		}
		s.mu.Lock()
		if s.ownsLocked(found) && len(s.waiting) > 0 {
			if s.skip > 0 {
				s.skip--
			} else {
				w := s.waiting[0]
				s.waiting = s.waiting[1:]
				close(w.granted)
			}
		}
		s.mu.Unlock()
		next = found + 1
	}
}

// watch refreshes Kafka's view of the backlog until ctx ends.
func (w *Worker) watchBacklog(ctx context.Context, s *schedule) {
	t := time.NewTicker(s.refresh)
	defer t.Stop()
	failing := false
	for {
		backlog, total, err := w.backlog(ctx)
		switch {
		case err == nil:
			s.setView(backlog, total)
			failing = false
		case ctx.Err() != nil:
			return
		case !failing:
			failing = true
			w.log.Warn("cannot read the group's backlog; keeping the last view of the call schedule", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// backlog returns the partitions whose committed offset is below their
// end offset, and the topic's partition count: the data every member reads
// alike.
func (w *Worker) backlog(ctx context.Context) ([]int, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	md, err := w.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{w.cfg.Topic}})
	if err != nil || len(md.Topics) != 1 || md.Topics[0].Error != nil {
		if err == nil {
			err = fmt.Errorf("topic %s: no metadata", w.cfg.Topic)
		}
		return nil, 0, err
	}
	var parts []int
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, p := range md.Topics[0].Partitions {
		parts = append(parts, p.ID)
		req.Topics[w.cfg.Topic] = append(req.Topics[w.cfg.Topic], kafka.FirstOffsetOf(p.ID), kafka.LastOffsetOf(p.ID))
	}
	lo, err := w.client.ListOffsets(ctx, req)
	if err != nil {
		return nil, 0, err
	}
	of, err := w.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: w.cfg.GroupID, Topics: map[string][]int{w.cfg.Topic: parts}})
	if err == nil && of.Error != nil && !errors.Is(of.Error, kafka.GroupIdNotFound) {
		err = of.Error
	}
	if err != nil {
		return nil, 0, err
	}
	committed := map[int]int64{}
	for _, po := range of.Topics[w.cfg.Topic] {
		if po.Error == nil {
			committed[po.Partition] = po.CommittedOffset
		}
	}
	var backlog []int
	for _, po := range lo.Topics[w.cfg.Topic] {
		if po.Error != nil {
			continue
		}
		c, ok := committed[po.Partition]
		if !ok || c < 0 {
			c = po.FirstOffset
		}
		if c < po.LastOffset {
			backlog = append(backlog, po.Partition)
		}
	}
	return backlog, len(parts), nil
}
