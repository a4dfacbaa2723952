package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/zap"
)

// The call schedule's own tests: the chain of grants is a pure function of
// the claims log; the members run on a fake clock over an in-memory claims
// log (the Kafka one is exercised by the worker and binary tests).

// schedRate makes periods of 101 ms (10/s, stretched by the 1% margin).
const schedRate = 10

func tp(topic string, p int) Partition { return Partition{topic, p} }

const ms = int64(time.Millisecond)

func bulkClaim(by string, seq uint64, ts int64) claimRecord {
	return claimRecord{By: by, Seq: seq, TS: ts}
}

// An idle claim is granted its own timestamp; claims that come closer
// than a period follow the previous grant a period later.
func TestChainGrants(t *testing.T) {
	c := newChain(100*time.Millisecond, 50*time.Millisecond, chainState{Seen: -1})
	c.apply(0, bulkClaim("a", 1, 1000*ms), 0)
	c.apply(1, bulkClaim("b", 1, 1001*ms), 0)
	c.apply(2, bulkClaim("c", 1, 1002*ms), 0)
	check := func(want map[string]int64) {
		t.Helper()
		for k, at := range want {
			g, ok := c.find(k[:1], uint64(k[1]-'0'))
			if !ok || g.At != at*ms {
				t.Errorf("grant of %s = %d ms (found %v), want %d ms", k, g.At/ms, ok, at)
			}
		}
	}
	check(map[string]int64{"a1": 1000, "b1": 1100, "c1": 1200})
	c.apply(3, bulkClaim("a", 2, 5000*ms), 0) // idle again
	check(map[string]int64{"a2": 5000})
	if len(c.Grants) != 1 {
		t.Errorf("%d grants kept after an idle claim, want 1: grants long past are pruned", len(c.Grants))
	}
	if c.apply(2, bulkClaim("x", 1, 0), 0) {
		t.Error("a record at or before Seen applied twice")
	}
}

// An urgent claim goes before the bulk grants at least the horizon after
// it; nearer ones are fixed; the grants it passes move a period later. A
// lone member's call is a fixed grant the next claims follow.
func TestChainUrgentAndTook(t *testing.T) {
	c := newChain(100*time.Millisecond, 50*time.Millisecond, chainState{Seen: -1})
	c.apply(0, bulkClaim("a", 1, 1000*ms), 0) // 1000
	c.apply(1, bulkClaim("b", 1, 1001*ms), 0) // 1100
	c.apply(2, bulkClaim("c", 1, 1002*ms), 0) // 1200
	c.apply(3, claimRecord{By: "u", Seq: 1, TS: 1060 * ms, Urgent: true}, 0)
	got := map[string]int64{}
	for _, g := range c.Grants {
		got[g.By] = g.At / ms
	}
	// b's grant at 1100 is within the horizon (50 ms) of 1060: fixed.
	if want := map[string]int64{"a": 1000, "b": 1100, "u": 1200, "c": 1300}; !reflect.DeepEqual(got, want) {
		t.Errorf("grants %v, want %v", got, want)
	}
	c.apply(4, claimRecord{By: "l", TS: 1350 * ms, Took: true}, 0)
	c.apply(5, bulkClaim("d", 1, 1351*ms), 0)
	if g, _ := c.find("d", 1); g.At != 1450*ms {
		t.Errorf("a claim after a lone member's call at 1350 ms granted %d ms, want 1450", g.At/ms)
	}
}

// A member that joins starts from the snapshot in the log's last record
// and computes exactly the grants of a member that read the log from its
// start, however far behind the snapshot's writer was.
func TestChainJoinFromSnapshot(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	period, horizon := 100*time.Millisecond, 50*time.Millisecond
	full := newChain(period, horizon, chainState{Seen: -1})
	var states []chainState // full's state after each offset
	var recs []claimRecord
	ts := int64(1_000_000) * ms
	for off := range 400 {
		ts += rng.Int64N(150 * ms)
		r := claimRecord{By: string(rune('a' + rng.IntN(3))), Seq: uint64(off), TS: ts, Urgent: rng.IntN(6) == 0,
			Took: rng.IntN(20) == 0}
		if off > 0 {
			r.State = states[max(0, off-1-rng.IntN(4))] // a writer behind by up to 3 records
		} else {
			r.State = chainState{Seen: -1}
		}
		recs = append(recs, r)
		full.apply(int64(off), r, 0)
		states = append(states, full.state())
	}
	for k := 1; k < len(recs); k += 7 {
		st := recs[k].State
		j := newChain(period, horizon, st)
		for off := st.Seen + 1; off < int64(len(recs)); off++ {
			j.apply(off, recs[off], 0)
		}
		if !reflect.DeepEqual(j.Grants, full.Grants) {
			t.Fatalf("joined at offset %d (snapshot of %d): grants differ\n joined %+v\n full   %+v", k, st.Seen, j.Grants, full.Grants)
		}
	}
}

// memSlots is an in-memory claims log whose "broker" stamps every record
// with clock's time, exactly (LogAppendTime; clock nil: not stamped).
type memSlots struct {
	mu     sync.Mutex
	clock  clockwork.Clock
	recs   [][]byte
	stamps []time.Time
	more   chan struct{}
}

func newMemSlots(clock clockwork.Clock) *memSlots {
	return &memSlots{clock: clock, more: make(chan struct{})}
}

func (m *memSlots) bounds(context.Context) (int64, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return 0, int64(len(m.recs)), nil
}

func (m *memSlots) scanLocked(from, to int64) []rawRecord {
	var out []rawRecord
	for off := max(from, 0); off < min(to, int64(len(m.recs))); off++ {
		out = append(out, rawRecord{offset: off, value: m.recs[off], stamp: m.stamps[off]})
	}
	return out
}

func (m *memSlots) scan(_ context.Context, from, to int64) ([]rawRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.scanLocked(from, to), nil
}

func (m *memSlots) read(ctx context.Context, from int64) ([]rawRecord, int64, error) {
	for {
		m.mu.Lock()
		n, more := int64(len(m.recs)), m.more
		out := m.scanLocked(from, n)
		m.mu.Unlock()
		if len(out) > 0 {
			return out, n, nil
		}
		select {
		case <-ctx.Done():
			return nil, from, ctx.Err()
		case <-more:
		}
	}
}

func (m *memSlots) append(_ context.Context, values [][]byte, _ time.Time) (time.Time, time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var stamp time.Time
	if m.clock != nil {
		stamp = m.clock.Now()
	}
	for _, v := range values {
		m.recs = append(m.recs, v)
		m.stamps = append(m.stamps, stamp)
	}
	close(m.more)
	m.more = make(chan struct{})
	return stamp, 0, nil
}

// records decodes every record of the log.
func (m *memSlots) records(t *testing.T) []claimRecord {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]claimRecord, len(m.recs))
	for i, v := range m.recs {
		if err := json.Unmarshal(v, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// schedHarness drives members' schedules on one fake clock and one
// in-memory claims log.
type schedHarness struct {
	t       *testing.T
	clock   *clockwork.FakeClock
	slots   *memSlots
	ctx     context.Context
	cancel  context.CancelFunc
	loops   sync.WaitGroup
	members []*pacer
	// logs are the members' claims logs (memberApps).
	logs []*Log
	// setup, when set, sees each member's slots before they run.
	setup func(*pacer)
}

func newSchedHarness(t *testing.T) *schedHarness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	clock := clockwork.NewFakeClockAt(time.Unix(1_000_000, 0))
	h := &schedHarness{t: t, clock: clock, slots: newMemSlots(clock), ctx: ctx, cancel: cancel}
	t.Cleanup(func() {
		h.cancel()
		h.loops.Wait()
	})
	return h
}

// harnessApp is the app of the harness's members.
const harnessApp = 1400000001

// twoMembers starts two members of one app, each owning one of its two
// partitions: a (t/0) and b (t/1).
func (h *schedHarness) twoMembers() (a, b Partition, sa, sb *pacer) {
	a, b = tp("t", 0), tp("t", 1)
	v := view{all: []Partition{a, b}}
	return a, b, h.member(v, a), h.member(v, b)
}

// member starts a member's schedule owning mine of the partitions in v
// (its claims log and grant loop; the view is set by the test).
func (h *schedHarness) member(v view, mine ...Partition) *pacer {
	return h.memberOn(h.clock, harnessApp, schedRate, v, mine...)[0]
}

// memberOn starts a member on clock with the slots of an app per rate
// (apps app, app+1, ...), each owning mine of v.
func (h *schedHarness) memberOn(clock clockwork.Clock, app uint64, rate float64, v view, mine ...Partition) []*pacer {
	return h.memberApps(clock, map[uint64]float64{app: rate}, v, mine...)
}

// memberApps starts a member on clock serving apps (by SDKAppID, at their
// rates), each owning mine of v; its slots in app order.
func (h *schedHarness) memberApps(clock clockwork.Clock, apps map[uint64]float64, v view, mine ...Partition) []*pacer {
	l := NewLog(LogConfig{Store: h.slots, DefaultApp: harnessApp, Clock: clock, Logger: zap.NewNop()})
	// The granter always sleeps on the fake clock (settle counts it).
	l.granter.idle = 200 * time.Millisecond
	var ids []uint64
	for app := range apps {
		ids = append(ids, app)
	}
	slices.Sort(ids)
	var out []*pacer
	for _, app := range ids {
		s := newPacer(app, apps[app], 200*time.Millisecond, l, zap.NewNop(), nil)
		if err := l.add(app, s); err != nil {
			h.t.Fatal(err)
		}
		s.setView(v)
		s.setMine(mine)
		if h.setup != nil {
			h.setup(s)
		}
		s.lazy(h.ctx)
		h.members = append(h.members, s)
		out = append(out, s)
	}
	h.loops.Go(func() { l.Run(h.ctx) })
	h.logs = append(h.logs, l)
	return out
}

// join adds app at rate to the running claims log l of a member, as an
// app added to the apps file while running is.
func (h *schedHarness) join(l *Log, app uint64, rate float64, v view, mine ...Partition) *pacer {
	s := newPacer(app, rate, 200*time.Millisecond, l, zap.NewNop(), nil)
	if err := l.add(app, s); err != nil {
		h.t.Fatal(err)
	}
	s.setView(v)
	s.setMine(mine)
	s.lazy(h.ctx)
	h.members = append(h.members, s)
	return s
}

// grant is one call granted to a waiter.
type grant struct {
	member  int
	part    Partition
	at      time.Time // when the call leaves
	granted time.Time // the fake time it was granted
}

// waitFor registers a waiter on s and returns a channel with its grant.
func (h *schedHarness) waitFor(s *pacer, member int, p Partition, urgent bool) <-chan grant {
	return h.waitForCall(s, member, p, urgent, false)
}

// waitForCall is waitFor for a call packed already or not.
func (h *schedHarness) waitForCall(s *pacer, member int, p Partition, urgent, packed bool) <-chan grant {
	out := make(chan grant, 1)
	before := s.waiters()
	go func() {
		at, _, err := s.wait(h.ctx, p, urgent, packed)
		if err != nil {
			close(out)
			return
		}
		out <- grant{member: member, part: p, at: at, granted: h.clock.Now()}
	}()
	for s.waiters() == before && len(out) == 0 {
		time.Sleep(time.Millisecond) // queued, or granted at once
	}
	return out
}

// waiters is how many callers wait for a call.
func (s *pacer) waiters() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiting)
}

// quiet reports whether s has nothing on its way through the claims log:
// every claim read back, nothing queued to write, no claim needed.
func (s *pacer) quiet() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if need, _ := s.claimNeededLocked(); s.chain == nil || len(s.outbox) > 0 || !s.took.IsZero() || need {
		return false
	}
	for _, c := range s.claims {
		if !c.written {
			return false
		}
	}
	for _, c := range s.claims {
		if _, ok := s.chain.find(s.id, c.seq); !ok {
			return false
		}
	}
	return true
}

// settle waits until every member is quiet (at most 5 s) and every
// member's granter waits on the fake clock.
func (h *schedHarness) settle() {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, s := range h.members {
		for !s.quiet() && time.Now().Before(deadline) {
			time.Sleep(200 * time.Microsecond)
		}
	}
	if err := h.clock.BlockUntilContext(h.ctx, len(h.logs)); err != nil {
		h.t.Fatal(err)
	}
}

// until steps the fake clock in tenths of a period, each step once every
// member is quiet, until every channel has its grant (at most rounds
// periods), and returns the grants in order.
func (h *schedHarness) until(rounds int, chans ...<-chan grant) []grant {
	h.t.Helper()
	var got []grant
	pending := append([]<-chan grant(nil), chans...)
	period := time.Duration(float64(time.Second) * slotMargin / schedRate)
	for step := 0; step == 0 || len(pending) > 0; step++ {
		if step > rounds*10 {
			h.t.Fatalf("%d waiter(s) not granted within %d periods (granted: %+v)", len(pending), rounds, got)
		}
		h.settle()
		for try := 0; try < 2 && len(pending) > 0; try++ {
			if try == 1 {
				// A grant the members' reads made may still be on its way
				// from the grant loop, woken just now: give it a moment of
				// real time before the clock moves on.
				time.Sleep(2 * time.Millisecond)
			}
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
		if len(pending) > 0 {
			h.clock.Advance(period / 10)
			time.Sleep(200 * time.Microsecond) // let the woken goroutines run
		}
	}
	return got
}

// Two members, two partitions: an idle call leaves at once; a second
// member's call right after it waits a period; calls under a backlog are
// a period apart and both members get them.
func TestScheduleClaims(t *testing.T) {
	h := newSchedHarness(t)
	a, b, sa, sb := h.twoMembers()
	start := h.clock.Now()
	first := h.until(2, h.waitFor(sa, 0, a, false))[0]
	if !first.at.Equal(start) || !first.granted.Equal(start) {
		t.Fatalf("an idle call granted at %v to leave at %v, want both at once (%v)", first.granted, first.at, start)
	}
	second := h.until(4, h.waitFor(sb, 1, b, false))[0]
	if d := second.at.Sub(first.at); d != sa.period {
		t.Errorf("the other member's call leaves %v after the first, want one period (%v)", d, sa.period)
	}
	var all []grant
	for range 5 {
		all = append(all, h.until(8, h.waitFor(sa, 0, a, false), h.waitFor(sb, 1, b, false))...)
	}
	byMember := map[int]int{}
	leaves := map[time.Time]bool{}
	for _, g := range all {
		byMember[g.member]++
		if leaves[g.at] {
			t.Fatalf("two calls leave at %v", g.at)
		}
		leaves[g.at] = true
		if g.granted.After(g.at) || g.at.Sub(g.granted) > sa.lead()+sa.period/10 {
			t.Errorf("granted at %v for %v: want just before, within the lead", g.granted, g.at)
		}
	}
	checkSpacing(t, all, sa.period)
	if byMember[0] != 5 || byMember[1] != 5 {
		t.Errorf("calls by member %v, want 5 each", byMember)
	}
}

// A packed call (TakePacked) of a member sharing the app is granted when
// it may leave, not a lead before, and the calls keep their spacing.
func TestScheduleClaimsPacked(t *testing.T) {
	h := newSchedHarness(t)
	a, b, sa, sb := h.twoMembers()
	var all []grant
	for range 4 {
		all = append(all, h.until(8, h.waitForCall(sa, 0, a, false, true), h.waitForCall(sb, 1, b, false, true))...)
	}
	for _, g := range all {
		if g.granted.Before(g.at) || g.granted.Sub(g.at) > sa.period/10 {
			t.Errorf("packed call granted at %v for %v: want when it may leave, not a lead (%v) before", g.granted, g.at, sa.lead())
		}
	}
	checkSpacing(t, all, sa.period)
}

// checkSpacing asserts calls leave at least period apart.
func checkSpacing(t *testing.T, gs []grant, period time.Duration) {
	t.Helper()
	var at []time.Time
	for _, g := range gs {
		at = append(at, g.at)
	}
	for i := range at {
		for j := range at {
			if d := at[j].Sub(at[i]); i != j && d >= 0 && d < period {
				t.Errorf("calls %v apart (%v and %v), want at least %v", d, at[i], at[j], period)
			}
		}
	}
}

// An urgent call goes before the bulk calls claimed before it, unless they
// are within the horizon.
func TestScheduleUrgentFirst(t *testing.T) {
	h := newSchedHarness(t)
	a, b, u := tp("t", 0), tp("t", 1), tp("u", 0)
	v := view{all: []Partition{a, b}, allUrgent: []Partition{u}}
	sa := h.member(v, a)
	sb := h.member(v, b, u)
	h.until(2, h.waitFor(sa, 0, a, false)) // a call now: the next claims queue
	ca := h.waitFor(sa, 0, a, false)
	cb := h.waitFor(sb, 1, b, false)
	h.until(0) // both claims in the log: a period and two periods ahead
	cu := h.waitFor(sb, 1, u, true)
	got := h.until(6, ca, cb, cu)
	order := []Partition{got[0].part, got[1].part, got[2].part}
	if want := []Partition{a, u, b}; !reflect.DeepEqual(order, want) {
		t.Errorf("calls in order %v, want %v: the urgent call passes the bulk call beyond the horizon", order, want)
	}
	checkSpacing(t, got, sa.period)
}

// A 10023 answer means someone else uses the app: the member leaves 1,
// then 2, then 4 of its grants unused; any other answer ends the back-off.
func TestScheduleBacksOffAfter10023(t *testing.T) {
	h := newSchedHarness(t)
	a, b := tp("t", 0), tp("t", 1)
	s := h.member(view{all: []Partition{a, b}}, a) // another member owns b
	prev := h.until(4, h.waitFor(s, 0, a, false))[0].at
	for _, tc := range []struct {
		limited bool
		gap     int64
	}{{true, 2}, {true, 3}, {true, 5}, {true, 5}, {false, 1}, {false, 1}} {
		s.answered(tc.limited)
		g := h.until(8, h.waitFor(s, 0, a, false))[0]
		if gap := int64(g.at.Sub(prev).Round(s.period/10) / s.period); gap != tc.gap {
			t.Errorf("after answered(limited=%v): %v after the last call, want %d periods", tc.limited, g.at.Sub(prev), tc.gap)
		}
		prev = g.at
	}
}

// A waiter whose context ends leaves the queue; the next waiter is served.
func TestScheduleWaitCancelled(t *testing.T) {
	h := newSchedHarness(t)
	a, b := tp("t", 0), tp("t", 1)
	s := h.member(view{all: []Partition{a, b}}, a)
	h.until(2, h.waitFor(s, 0, a, false)) // the next call waits a period
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan error, 1)
	go func() { _, _, err := s.wait(ctx, a, false, false); done <- err }()
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

// A member that owns every partition is alone: an idle call leaves at
// once with no claim, calls are a period apart by its own clock (urgent
// first, a period unused after a 10023), and each call is recorded in the
// claims log, so when another member takes a partition its first call
// comes a period after the lone member's last.
func TestScheduleAlone(t *testing.T) {
	h := newSchedHarness(t)
	a, b, u := tp("t", 0), tp("t", 1), tp("u", 0)
	v := view{all: []Partition{a, b}, allUrgent: []Partition{u}}
	s := h.member(v, a, b, u)
	start := h.clock.Now()
	first := <-h.waitFor(s, 0, a, false)
	if !first.at.Equal(start) {
		t.Fatalf("an idle call leaves at %v, want at once (%v)", first.at, start)
	}
	bc := h.waitFor(s, 0, b, false)
	uc := h.waitFor(s, 0, u, true)
	got := h.until(4, bc, uc)
	if got[0].part != u || got[1].part != b {
		t.Fatalf("grants %+v, want the urgent one first", got)
	}
	if d := got[0].at.Sub(start); d < s.period || d > s.period+s.period/10 {
		t.Errorf("second call %v after the first, want one period (%v)", d, s.period)
	}
	s.answered(true)
	last := got[1].at
	g := h.until(6, h.waitFor(s, 0, a, false))[0]
	if d := g.at.Sub(last); d < 2*s.period {
		t.Errorf("after a 10023 the next call came %v after the last, want at least two periods", d)
	}
	s.answered(false)
	h.until(0)
	recs := h.slots.records(t)
	took := 0
	for _, r := range recs {
		if r.Took {
			took++
		}
		if !r.Took || r.App != harnessApp {
			t.Errorf("a lone member wrote %+v, want only took records of its app", r)
		}
	}
	if took != 4 {
		t.Errorf("%d took records, want 4 (one per call)", took)
	}
	if n := len(recs[len(recs)-1].State.Grants); n > 1 {
		t.Errorf("a took record's snapshot holds %d grants, want at most 1: a lone member's earlier calls are pruned", n)
	}
	// Another member takes b: its first call comes a period after g.
	s.setMine([]Partition{a, u})
	other := h.member(v, b)
	o := h.until(6, h.waitFor(other, 1, b, false))[0]
	if d := o.at.Sub(g.at); d < s.period {
		t.Errorf("the new member's first call leaves %v after the lone member's last, want at least a period", d)
	}
}

// skewedClock is a fake clock whose Now is off by skew.
type skewedClock struct {
	*clockwork.FakeClock
	skew time.Duration
}

func (c skewedClock) Now() time.Time { return c.FakeClock.Now().Add(c.skew) }

// Clock skew: grants are on the broker's clock, and each member reads it
// off its own corrected by its appends' answers, so members whose clocks
// are an hour ahead and an hour behind call a full period apart in true
// time, from their first call on; neither claims nor calls are lost.
func TestScheduleClockSkew(t *testing.T) {
	for _, skews := range [][2]time.Duration{{time.Hour, -time.Hour}, {30 * time.Millisecond, 0}, {-2 * time.Minute, time.Hour}} {
		t.Run(fmt.Sprint(skews[0], skews[1]), func(t *testing.T) {
			h := newSchedHarness(t)
			a, b := tp("t", 0), tp("t", 1)
			v := view{all: []Partition{a, b}}
			sa := h.memberOn(skewedClock{h.clock, skews[0]}, harnessApp, schedRate, v, a)[0]
			sb := h.memberOn(skewedClock{h.clock, skews[1]}, harnessApp, schedRate, v, b)[0]
			var got []grant
			for range 5 {
				got = append(got, h.until(8, h.waitFor(sa, 0, a, false), h.waitFor(sb, 1, b, false))...)
			}
			// True time of each call: a member's grant times are by its clock.
			for i := range got {
				got[i].at = got[i].at.Add(-skews[got[i].member])
			}
			checkSpacing(t, got, sa.period)
			if len(got) != 10 {
				t.Errorf("%d calls, want 10", len(got))
			}
			if off := sa.clock.offset(); off != -skews[0] {
				t.Errorf("member 0 reads the broker's clock %v off its own, want %v", off, -skews[0])
			}
		})
	}
}

// A claim read back so late that its grant was already pruned is
// forfeited at once and claimed again, not waited for.
func TestScheduleClaimPrunedBeforeUse(t *testing.T) {
	h := newSchedHarness(t)
	a, b := tp("t", 0), tp("t", 1)
	s := h.member(view{all: []Partition{a, b}}, a)
	h.until(2, h.waitFor(s, 0, a, false)) // the log is read
	s.mu.Lock()
	s.claims = append(s.claims, &claim{seq: 99, written: true, read: true, at: h.clock.Now()})
	s.grantClaimedLocked()
	left := len(s.claims)
	s.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d claims kept, want the pruned one dropped", left)
	}
	h.until(4, h.waitFor(s, 0, a, false)) // and the next call is granted
}

// A lone member spaces the next call a period after the latest
// departure it was told of (Turn.Departed), not after the grant: a call that left late (a slow in-flight record on a loaded host)
// does not bring the next one nearer than a period at the server.
func TestScheduleAloneSpacesFromDeparture(t *testing.T) {
	h := newSchedHarness(t)
	a := tp("t", 0)
	s := h.member(view{all: []Partition{a}}, a)
	first := <-h.waitFor(s, 0, a, false)
	late := first.at.Add(300 * time.Millisecond)
	s.left(late) // the request was made 300 ms after its grant
	h.until(0)
	// Recorded again at its departure, for a member that takes partitions
	// over.
	var tooks []int64
	for _, r := range h.slots.records(t) {
		if r.Took {
			tooks = append(tooks, r.TS)
		}
	}
	if n := len(tooks); n != 2 || tooks[1] != late.UnixNano() {
		t.Errorf("took records at %v, want the grant's and the departure's (%v)", tooks, late.UnixNano())
	}
	g := h.until(20, h.waitFor(s, 0, a, false))[0]
	if d := g.at.Sub(late); d < s.period {
		t.Errorf("the next call leaves %v after the late departure, want at least a period (%v)", d, s.period)
	}
	s.left(g.at.Add(-time.Millisecond)) // an earlier report moves nothing
	n := h.until(20, h.waitFor(s, 0, a, false))[0]
	if d := n.at.Sub(g.at); d < s.period || d > s.period+s.period/10 {
		t.Errorf("a call on time is followed %v later, want one period (%v)", d, s.period)
	}
}

// Two apps' chains in one claims log: two members serve both apps (10 and
// 5 calls/s), each owning one partition of each; under a backlog of both,
// each app gets its whole rate: its calls a period of its own apart, not
// slowed by the other app's claims in the same log.
func TestScheduleTwoApps(t *testing.T) {
	h := newSchedHarness(t)
	a, b := tp("t", 0), tp("t", 1)
	v := view{all: []Partition{a, b}}
	rates := map[uint64]float64{harnessApp: schedRate, harnessApp + 1: schedRate / 2}
	m0 := h.memberApps(h.clock, rates, v, a)
	m1 := h.memberApps(h.clock, rates, v, b)
	step := m0[0].period / 10 // the harness's clock steps
	for round := range 5 {
		// Four calls of the 10/s app and two of the 5/s one: 400 ms of
		// each app's rate.
		var chans []<-chan grant
		for range 2 {
			chans = append(chans, h.waitFor(m0[0], 0, a, false), h.waitFor(m1[0], 0, b, false))
		}
		chans = append(chans, h.waitFor(m0[1], 1, a, false), h.waitFor(m1[1], 1, b, false))
		byApp := map[int][]time.Time{}
		for _, g := range h.until(40, chans...) {
			byApp[g.member] = append(byApp[g.member], g.at)
		}
		for i, p := range []*pacer{m0[0], m0[1]} {
			at := byApp[i]
			slices.SortFunc(at, func(x, y time.Time) int { return x.Compare(y) })
			for j := 1; j < len(at); j++ {
				if d := at[j].Sub(at[j-1]); d < p.period || d > p.period+2*step {
					t.Errorf("round %d, app %d: calls %v apart, want one period of its own (%v)", round, p.app, d, p.period)
				}
			}
		}
	}
	for _, r := range h.slots.records(t) {
		if r.App != harnessApp && r.App != harnessApp+1 {
			t.Errorf("a record of app %d", r.App)
		}
	}
}

// An app added to running claims logs (the apps file changed) joins
// them: its calls, from two members, are one period of its own apart,
// and a rate changed later spaces the next ones by the new period.
func TestScheduleAppJoinsRunningLog(t *testing.T) {
	h := newSchedHarness(t)
	a, b := tp("t", 0), tp("t", 1)
	v := view{all: []Partition{a, b}}
	m0 := h.memberApps(h.clock, map[uint64]float64{harnessApp: schedRate}, v, a)
	m1 := h.memberApps(h.clock, map[uint64]float64{harnessApp: schedRate}, v, b)
	h.until(20, h.waitFor(m0[0], 0, a, false), h.waitFor(m1[0], 1, b, false))
	const added = harnessApp + 7
	j0 := h.join(h.logs[0], added, schedRate/2, v, a)
	j1 := h.join(h.logs[1], added, schedRate/2, v, b)
	step := j0.period / 10
	spaced := func(round int, period time.Duration) {
		t.Helper()
		var chans []<-chan grant
		for range 2 {
			chans = append(chans, h.waitFor(j0, 0, a, false), h.waitFor(j1, 1, b, false))
		}
		var at []time.Time
		for _, g := range h.until(80, chans...) {
			at = append(at, g.at)
		}
		slices.SortFunc(at, func(x, y time.Time) int { return x.Compare(y) })
		for k := 1; k < len(at); k++ {
			if d := at[k].Sub(at[k-1]); d < period || d > period+2*step {
				t.Errorf("round %d: the added app's calls %v apart, want one period of its own (%v)", round, d, period)
			}
		}
	}
	for round := range 3 {
		spaced(round, j0.period)
	}
	j0.setRate(schedRate)
	j1.setRate(schedRate)
	for round := range 3 {
		spaced(3+round, j0.period)
	}
	seen := false
	for _, r := range h.slots.records(t) {
		seen = seen || r.App == added
	}
	if !seen {
		t.Error("no record of the added app in the claims log")
	}
}

// An operator's hold in the claims log stops every member's calls (a lone
// member's too), a member that starts while it holds does not call
// either, and a release lets them all call again.
func TestScheduleHold(t *testing.T) {
	h := newSchedHarness(t)
	a, b := tp("t", 0), tp("t", 1)
	v := view{all: []Partition{a, b}}
	// Each member's slots with the gate New gives them.
	scheds := map[*pacer]*Schedule{}
	h.setup = func(p *pacer) {
		sc := &Schedule{gate: newGate(time.Millisecond, time.Second, nil), slots: p}
		sc.gate.now = p.clock.Now
		p.holdChanged = sc.gate.setHold
		scheds[p] = sc
	}
	s := h.member(v, a, b) // alone
	sched := scheds[s]
	h.until(2, h.waitFor(s, 0, a, false))
	op := Operator{Store: h.slots, App: harnessApp, By: "alice"}
	if err := op.Pause(h.ctx, "wrong text", 0, h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	// The hold carries the app's chain, as every record does: a member
	// that starts next begins from it.
	if recs := h.slots.records(t); recs[len(recs)-1].State.Seen != int64(len(recs)-2) || len(recs[len(recs)-1].State.Grants) == 0 {
		t.Errorf("the hold record's snapshot is %+v, want the chain as of the record before it", recs[len(recs)-1].State)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !sched.gate.heldNow() {
		if time.Now().After(deadline) {
			t.Fatal("the hold was not applied")
		}
		time.Sleep(time.Millisecond)
	}
	hold, ok := sched.Held()
	if !ok || hold.By != "alice" || hold.Reason != "wrong text" || !hold.Until.IsZero() {
		t.Fatalf("Held = %+v, %v; want alice's hold until resumed", hold, ok)
	}
	ctx, cancel := context.WithTimeout(h.ctx, 100*time.Millisecond)
	if _, err := sched.Take(ctx, a, true); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Take during a hold = %v, want to wait (urgent callers too)", err)
	}
	cancel()
	// A member starting now finds the hold in the log.
	late := h.member(v, b)
	lateSched := scheds[late]
	for !lateSched.gate.heldNow() {
		if time.Now().After(deadline) {
			t.Fatal("a member that started during the hold did not find it")
		}
		time.Sleep(time.Millisecond)
	}
	if got, ok, err := op.Current(h.ctx); err != nil || !ok || got.By != "alice" {
		t.Errorf("Current = %+v, %v, %v; want alice's hold", got, ok, err)
	}
	if err := op.Resume(h.ctx, h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	for sched.gate.heldNow() || lateSched.gate.heldNow() {
		if time.Now().After(deadline) {
			t.Fatal("the release did not open the gates")
		}
		time.Sleep(time.Millisecond)
	}
	h.until(4, h.waitFor(s, 0, a, false))
	if _, ok, _ := op.Current(h.ctx); ok {
		t.Error("Current still finds a hold after the release")
	}
}

// A grant read back late (a slow fetch of the claims log on a loaded
// host) is used at once, later than the chain has it; the call is then
// recorded at its departure (a Took record), so the next grant, whoever's,
// is a period after the real departure and not after the chain's time,
// which would bring two calls nearer than a period at the server (10023).
func TestScheduleLateGrantSpacesFromDeparture(t *testing.T) {
	h := newSchedHarness(t)
	a, b, sa, sb := h.twoMembers()
	first := h.until(2, h.waitFor(sa, 0, a, false))[0]
	sa.left(first.at)

	// sb's claim is read back with its grant a period after the first
	// call; its grant loop then runs late: the clock jumps past the grant.
	ch := h.waitFor(sb, 1, b, false)
	h.settle()
	late := 3 * sb.period / 10
	h.clock.Advance(first.at.Add(sb.period + late).Sub(h.clock.Now()))
	g, ok := <-ch
	if !ok {
		t.Fatal("the waiter's context ended")
	}
	if d := g.at.Sub(first.at); d < sb.period+late {
		t.Fatalf("the late grant leaves %v after the first call, want at least %v (read late, used at once)", d, sb.period+late)
	}
	sb.left(g.at)
	h.settle() // its Took record is written
	next := h.until(20, h.waitFor(sa, 0, a, false))[0]
	if d := next.at.Sub(g.at); d < sa.period {
		t.Errorf("the next call leaves %v after the late one, want at least a period (%v)", d, sa.period)
	}
}

// Flush returns once the records asked for before it are in the claims
// log: a lone member's last departure (a Took record) is there before the
// member rejoins its group, so the members that take its partitions over
// place their first calls after it.
func TestLogFlush(t *testing.T) {
	h := newSchedHarness(t)
	a := tp("t", 0)
	s := h.member(view{all: []Partition{a}}, a)
	first := <-h.waitFor(s, 0, a, false)
	h.settle()
	late := first.at.Add(300 * time.Millisecond)
	s.left(late)
	h.logs[0].Flush(h.ctx)
	var tooks []int64
	for _, r := range h.slots.records(t) {
		if r.Took {
			tooks = append(tooks, r.TS)
		}
	}
	if !slices.Contains(tooks, late.UnixNano()) {
		t.Errorf("took records at %v after Flush, want the departure's (%v) among them", tooks, late.UnixNano())
	}
}

// A slot already handed to its caller (a lead before its time) still
// moves when another member's call that left late is recorded meanwhile:
// the caller's recheck at its time (Turn.Wait) says to leave a period
// after that call, not at the slot's first time.
func TestScheduleHandedSlotMovesAfterLateCall(t *testing.T) {
	h := newSchedHarness(t)
	a, b, sa, sb := h.twoMembers()
	first := h.until(2, h.waitFor(sa, 0, a, false))[0]

	// sb's slot, a period after sa's call, is handed over (a lead before
	// its time) while sa's call has not left yet.
	var at time.Time
	var seq uint64
	done := make(chan error, 1)
	go func() {
		var err error
		at, seq, err = sb.wait(h.ctx, b, false, false)
		done <- err
	}()
	for sb.waiters() == 0 {
		time.Sleep(200 * time.Microsecond)
	}
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		default:
			h.until(0)
			h.clock.Advance(sa.period / 10)
			time.Sleep(200 * time.Microsecond)
			continue
		}
		break
	}
	if seq == 0 || !at.After(first.at) {
		t.Fatalf("sb's slot at %v after the first call (claim %d), want after it, for a claim", at.Sub(first.at), seq)
	}
	if got := sb.moved(seq, at); !got.Equal(at) {
		t.Fatalf("the slot moved to %v before any late call, want it at %v", got, at)
	}

	// sa's call leaves late, 40% of a period after the grant before sb's,
	// and is recorded at its departure.
	late := at.Add(-6 * sa.period / 10)
	sa.left(late)
	deadline := time.Now().Add(5 * time.Second)
	for sb.moved(seq, at).Equal(at) {
		if time.Now().After(deadline) {
			t.Fatalf("sb's handed slot never moved after sa's late call (%v)", late)
		}
		time.Sleep(200 * time.Microsecond)
	}
	if got := sb.moved(seq, at); got.Before(late.Add(sb.period)) || got.Sub(at) > sb.period/2 {
		t.Errorf("the handed slot moved %v later, want at least a period after the late call (%v later) and at most half a period",
			got.Sub(at), late.Add(sb.period).Sub(at))
	}
}
