package schedule

import (
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// The broker's clock read off this member's: left as it is while the
// appends' answers allow it, corrected by the least they demand, and
// following a step of this clock at the first answer after it.
func TestBrokerClock(t *testing.T) {
	local := clockwork.NewFakeClockAt(time.Unix(1_000_000, 0))
	b := newBrokerClock(local)
	if b.offset() != 0 || b.synced() {
		t.Fatalf("no answer yet: offset %v, synced %v; want 0, false", b.offset(), b.synced())
	}
	// A read gives a lower bound only: the broker's clock was past the
	// record's stamp when it was read.
	b.read(local.Now(), local.Now().Add(time.Hour))
	if got := b.offset(); got != time.Hour {
		t.Errorf("after reading a record stamped an hour ahead: %v, want an hour", got)
	}
	// An append sent and answered 4 ms apart, stamped 1 ms after it was
	// sent by a broker whose clock agrees: zero is within the bounds.
	sent := local.Now()
	local.Advance(4 * time.Millisecond)
	b.appended(sent, local.Now(), sent.Add(time.Millisecond), time.Millisecond)
	if got := b.offset(); got != 0 || !b.synced() {
		t.Errorf("a broker in step: offset %v, synced %v; want 0, true", got, b.synced())
	}
	// This clock steps an hour ahead: the next answer disagrees with the
	// earlier ones, and wins.
	local.Advance(time.Second)
	stamp := local.Now()
	local.Advance(time.Hour)
	sent = local.Now()
	local.Advance(2 * time.Millisecond)
	b.appended(sent, local.Now(), stamp.Add(time.Millisecond), time.Millisecond)
	if got := b.offset(); got < -time.Hour || got > -time.Hour+3*time.Millisecond {
		t.Errorf("after this clock stepped an hour ahead: offset %v, want about -1h", got)
	}
	// Answers age out: after a minute without one, the last one still
	// counts, and the member writes its claims as unsynced.
	local.Advance(2 * clockSampleTTL)
	if b.synced() {
		t.Error("synced after two minutes without an answer")
	}
	if got := b.offset(); got > -time.Hour+3*time.Millisecond {
		t.Errorf("an old answer forgotten: offset %v", got)
	}
}
