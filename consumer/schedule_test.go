package consumer

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/zap"
)

// The call schedule's own tests run on a fake clock: slots are computed,
// granted and stepped through without waiting for real time.

// schedRate makes slots of 101 ms (10/s, stretched by the 1% margin).
const schedRate = 10

func tp(topic string, p int) topicPartition { return topicPartition{topic, p} }

// schedHarness drives one or more members' schedules on one fake clock.
type schedHarness struct {
	t      *testing.T
	clock  *clockwork.FakeClock
	ctx    context.Context
	cancel context.CancelFunc
	loops  sync.WaitGroup
	n      int // members
}

func newSchedHarness(t *testing.T) *schedHarness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	h := &schedHarness{t: t, clock: clockwork.NewFakeClockAt(time.Unix(1_000_000, 0)), ctx: ctx, cancel: cancel}
	t.Cleanup(func() {
		h.cancel()
		h.loops.Wait()
	})
	return h
}

// member starts a member's schedule (its grant loop only: views are set by
// the test) owning mine.
func (h *schedHarness) member(v view, mine ...topicPartition) *schedule {
	s := newSchedule(schedRate, 200*time.Millisecond, h.clock, nil, zap.NewNop(), nil)
	s.setView(v)
	s.setMine(mine)
	h.loops.Go(func() { s.grant(h.ctx) })
	h.n++
	return s
}

// grant is one slot granted to a waiter.
type grant struct {
	member  int
	slot    int64
	part    topicPartition
	granted time.Time // the fake time it was granted
}

// waitFor registers a waiter on s and returns a channel with its grant.
func (h *schedHarness) waitFor(s *schedule, member int, p topicPartition, urgent bool) <-chan grant {
	out := make(chan grant, 1)
	before := s.waiters()
	go func() {
		at, err := s.wait(h.ctx, p, urgent)
		if err != nil {
			close(out)
			return
		}
		out <- grant{member: member, slot: (at.UnixNano() - int64(s.period)/2) / int64(s.period), part: p, granted: h.clock.Now()}
	}()
	for s.waiters() == before && len(out) == 0 {
		time.Sleep(time.Millisecond) // queued, or granted at once
	}
	return out
}

// waiters is how many callers wait for a slot.
func (s *schedule) waiters() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiting)
}

// until steps the fake clock in tenths of a slot until every channel has
// its grant (at most rounds slots), and returns the grants in order.
func (h *schedHarness) until(rounds int, chans ...<-chan grant) []grant {
	h.t.Helper()
	var got []grant
	pending := append([]<-chan grant(nil), chans...)
	period := time.Duration(float64(time.Second) * slotMargin / schedRate)
	for step := 0; len(pending) > 0; step++ {
		if step > rounds*10 {
			h.t.Fatalf("%d waiter(s) not granted within %d slots (granted: %+v)", len(pending), rounds, got)
		}
		// Every member's grant loop is waiting on its timer.
		if err := h.clock.BlockUntilContext(h.ctx, h.n); err != nil {
			h.t.Fatal(err)
		}
		h.clock.Advance(period / 10)
		time.Sleep(200 * time.Microsecond)
		for i := 0; i < len(pending); i++ {
			select {
			case g, ok := <-pending[i]:
				if !ok {
					h.t.Fatal("a waiter's context ended")
				}
				got = append(got, g)
				pending = append(pending[:i], pending[i+1:]...)
				i--
			default:
			}
		}
	}
	return got
}

// Slots are dealt among the partitions with a backlog; a member calls only
// in slots whose partition it owns, so two members never share a slot.
func TestScheduleSlotOwnership(t *testing.T) {
	h := newSchedHarness(t)
	a, b := tp("t", 0), tp("t", 1)
	v := view{bulk: []topicPartition{a, b}, all: []topicPartition{a, b}}
	sa := h.member(v, a)
	sb := h.member(v, b)
	var grants []grant
	for range 4 {
		grants = append(grants, h.until(6, h.waitFor(sa, 0, a, false), h.waitFor(sb, 1, b, false))...)
	}
	slots := map[int64]int{}
	for _, g := range grants {
		if owner, ok := slots[g.slot]; ok {
			t.Fatalf("slot %d granted to members %d and %d", g.slot, owner, g.member)
		}
		slots[g.slot] = g.member
		// The owners list is [a b]: a owns even slots, b odd ones.
		if want := int(g.slot % 2); g.member != want {
			t.Errorf("slot %d granted to member %d, want %d (partition %s)", g.slot, g.member, want, g.part)
		}
	}
	if len(grants) != 8 {
		t.Errorf("%d grants, want 8", len(grants))
	}
}

// When the backlog changes, so do the owners: a member whose partition
// alone has a backlog gets every slot.
func TestScheduleFollowsTheBacklog(t *testing.T) {
	h := newSchedHarness(t)
	a, b := tp("t", 0), tp("t", 1)
	sa := h.member(view{bulk: []topicPartition{a, b}, all: []topicPartition{a, b}}, a)
	first := h.until(4, h.waitFor(sa, 0, a, false))[0]
	sa.setView(view{bulk: []topicPartition{a}, all: []topicPartition{a, b}})
	prev := first.slot
	for range 4 {
		g := h.until(4, h.waitFor(sa, 0, a, false))[0]
		if g.slot != prev+1 {
			t.Errorf("slot %d after %d, want the next one: a lone backlog owns every slot", g.slot, prev)
		}
		prev = g.slot
	}
	// Nothing anywhere: slots go round every bulk partition.
	sa.setView(view{all: []topicPartition{a, b}})
	g := h.until(4, h.waitFor(sa, 0, a, false))[0]
	if g.slot%2 != 0 {
		t.Errorf("idle: slot %d granted to partition 0's member, want an even one", g.slot)
	}
}

// A 10023 answer means someone else uses the app: the member leaves 1,
// then 2, then 4 of its slots unused; any other answer ends the back-off.
func TestScheduleBacksOffAfter10023(t *testing.T) {
	h := newSchedHarness(t)
	a, b := tp("t", 0), tp("t", 1)
	s := h.member(view{bulk: []topicPartition{a}, all: []topicPartition{a, b}}, a) // another member owns b
	prev := h.until(4, h.waitFor(s, 0, a, false))[0].slot
	for _, tc := range []struct {
		limited bool
		gap     int64
	}{{true, 2}, {true, 3}, {true, 5}, {true, 5}, {false, 1}, {false, 1}} {
		s.answered(tc.limited)
		g := h.until(8, h.waitFor(s, 0, a, false))[0]
		if g.slot-prev != tc.gap {
			t.Errorf("after answered(limited=%v): slot %d follows %d, want a gap of %d", tc.limited, g.slot, prev, tc.gap)
		}
		prev = g.slot
	}
}

// Urgent waiters take the next slot before bulk ones that waited longer,
// even while the member backs off after 10023.
func TestScheduleUrgentFirst(t *testing.T) {
	h := newSchedHarness(t)
	bulk, urgent, other := tp("t", 0), tp("u", 0), tp("t", 1)
	s := h.member(view{urgent: []topicPartition{urgent}, bulk: []topicPartition{bulk}, all: []topicPartition{bulk, other},
		allUrgent: []topicPartition{urgent}}, bulk, urgent)
	s.answered(true) // backing off: bulk waits a slot, urgent does not
	bc := h.waitFor(s, 0, bulk, false)
	uc := h.waitFor(s, 0, urgent, true)
	got := h.until(6, bc, uc)
	if got[0].part != urgent || got[1].part != bulk || got[0].slot >= got[1].slot {
		t.Errorf("grants %+v, want the urgent one first, in an earlier slot", got)
	}
}

// A grant comes a little before the slot's middle (the lead), never after.
func TestScheduleGrantsBeforeTheMiddle(t *testing.T) {
	h := newSchedHarness(t)
	a, b := tp("t", 0), tp("t", 1)
	s := h.member(view{bulk: []topicPartition{a}, all: []topicPartition{a, b}}, a)
	for range 3 {
		g := h.until(4, h.waitFor(s, 0, a, false))[0]
		middle := s.middle(g.slot)
		if lead := middle.Sub(g.granted); lead < 0 || lead > s.lead()+s.period/10 {
			t.Errorf("granted %v before the slot's middle, want between 0 and the lead %v", lead, s.lead())
		}
	}
}

// A waiter whose context ends leaves the queue; the next waiter is served.
func TestScheduleWaitCancelled(t *testing.T) {
	h := newSchedHarness(t)
	a, b := tp("t", 0), tp("t", 1)
	s := h.member(view{bulk: []topicPartition{a}, all: []topicPartition{a, b}}, a)
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan error, 1)
	go func() { _, err := s.wait(ctx, a, false); done <- err }()
	for s.waiters() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait = %v, want context.Canceled", err)
	}
	if n := s.waiters(); n != 0 {
		t.Fatalf("%d waiters after the cancel, want 0", n)
	}
	h.until(4, h.waitFor(s, 0, a, false))
}

// A member that owns every partition is alone: nobody else can call, so
// an idle call leaves at once (not at a slot's middle), and calls are a
// period apart by its own clock; urgent first, and a period left unused
// after a 10023.
func TestScheduleAlone(t *testing.T) {
	h := newSchedHarness(t)
	a, b, u := tp("t", 0), tp("t", 1), tp("u", 0)
	s := h.member(view{all: []topicPartition{a, b}, allUrgent: []topicPartition{u}}, a, b, u)
	start := h.clock.Now()
	first := <-h.waitFor(s, 0, a, false)
	if !first.granted.Equal(start) {
		t.Fatalf("an idle call waited until %v, want it to leave at once (%v)", first.granted, start)
	}
	// Two more wait: the urgent one goes first, a period after the first
	// call, then the bulk one a period later.
	bc := h.waitFor(s, 0, b, false)
	uc := h.waitFor(s, 0, u, true)
	got := h.until(4, bc, uc)
	if got[0].part != u || got[1].part != b {
		t.Fatalf("grants %+v, want the urgent one first", got)
	}
	if d := got[0].granted.Sub(start); d < s.period || d > s.period+s.period/10 {
		t.Errorf("second call %v after the first, want one period (%v)", d, s.period)
	}
	if d := got[1].granted.Sub(got[0].granted); d < s.period || d > s.period+s.period/10 {
		t.Errorf("third call %v after the second, want one period", d)
	}
	// After a 10023 a period is left unused.
	s.answered(true)
	last := got[1].granted
	g := h.until(6, h.waitFor(s, 0, a, false))[0]
	if d := g.granted.Sub(last); d < 2*s.period {
		t.Errorf("after a 10023 the next call came %v after the last, want at least two periods", d)
	}
	// Another member takes a partition: slots again, at their middles.
	s.setMine([]topicPartition{a, u})
	s.setView(view{bulk: []topicPartition{a}, all: []topicPartition{a, b}, allUrgent: []topicPartition{u}})
	g2 := h.until(6, h.waitFor(s, 0, a, false))[0]
	if mid := s.middle(g2.slot); g2.granted.After(mid) || mid.Sub(g2.granted) > s.lead()+s.period/10 {
		t.Errorf("not alone: granted at %v, want just before the slot's middle %v", g2.granted, mid)
	}
	if mid := s.middle(g2.slot); mid.Sub(g.granted) < s.period {
		t.Errorf("the first slot call leaves %v after the last call, want at least a period", mid.Sub(g.granted))
	}
}
