package consumer_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// TestCoordinatorMoves: two members heartbeat and commit on a three-broker
// cluster whose group coordinators move five times: nothing is lost or
// delivered twice, and the members look the coordinator up again instead
// of rejoining (no rejoin storm).
func TestCoordinatorMoves(t *testing.T) {
	kc := consumertest.StartFake(t, kfake.NumBrokers(3))
	rc := consumertest.CountRequests(kc)
	e := newEnv(t, kc, 6, sendertest.Options{})
	want := e.produceKeyed(keys, 40)
	slow := func(_ *consumer.Config, s *sender.Config) { s.Rate = 60 }
	e.start(slow)
	e.start(slow)
	waitFor(t, 30*time.Second, "first deliveries", func() bool { return e.emu.Stats().Delivered > 10 })
	before := rc.Snapshot()
	// kfake's coordinator is a hash of a generation and the group: a
	// rehash keeps it in place one time in three, so rehash until it moves.
	for range 5 {
		was := kc.Fake.CoordinatorFor(e.group)
		for kc.Fake.CoordinatorFor(e.group) == was {
			kc.Fake.RehashCoordinators()
		}
		time.Sleep(400 * time.Millisecond)
	}
	// Counted before waiting for the commits: the test's own reads of the
	// committed offsets look the coordinator up every time (kafka.Client).
	counts, _ := consumertest.Since(before, rc.Snapshot())
	t.Logf("during 5 coordinator moves: %v", counts)
	e.waitCommitted(2 * time.Minute)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
	if counts["JoinGroup"] > 4 {
		t.Errorf("%d JoinGroup requests while the coordinators moved, want at most 4 (2 members, at most one rebalance): a moving coordinator must not churn the group",
			counts["JoinGroup"])
	}
	if n := counts["FindCoordinator"]; n == 0 || n > 20 {
		t.Errorf("%d FindCoordinator requests for 5 moves and 2 members, want some (the members follow) and at most 20 (one lookup per member and move, a few retries)", n)
	}
}

// idleWindow is how long TestKeptConnections watches an idle worker:
// IDLE_WINDOW_SECONDS, default 3.
func idleWindow() time.Duration {
	if v, err := strconv.Atoi(os.Getenv("IDLE_WINDOW_SECONDS")); err == nil && v > 0 {
		return time.Duration(v) * time.Second
	}
	return 3 * time.Second
}

// TestKeptConnections: once it has started, an idle worker opens no new
// broker connection (each begins with ApiVersions), does not look the
// coordinator up again (its connections are kept) and, alone in its group,
// polls no backlog.
func TestKeptConnections(t *testing.T) {
	kc := consumertest.StartFake(t)
	rc := consumertest.CountRequests(kc)
	e := newEnv(t, kc, 6, sendertest.Options{})
	want := e.produceKeyed(keys, 2)
	e.start(func(c *consumer.Config, _ *sender.Config) { c.MaxWait = 500 * time.Millisecond })
	e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
	time.Sleep(time.Second) // past the start
	before := rc.Snapshot()
	window := idleWindow()
	time.Sleep(window)
	counts, total := consumertest.Since(before, rc.Snapshot())
	t.Logf("idle for %v: %d requests (%.1f/s): %v", window, total, float64(total)/window.Seconds(), counts)
	if n := counts["ApiVersions"]; n > 0 {
		t.Errorf("%d new connections (ApiVersions) while idle, want none", n)
	}
	if n := counts["FindCoordinator"]; n > 0 {
		t.Errorf("%d FindCoordinator requests while idle and the coordinator did not move, want none", n)
	}
	if counts["Heartbeat"] == 0 {
		t.Error("no heartbeat while idle: the counter sees nothing")
	}
	// Alone in its group, the worker paces by its own calls: it reads no
	// backlog (no ListOffsets or OffsetFetch loop) while idle.
	if n := counts["ListOffsets"] + counts["OffsetFetch"]; n > 0 {
		t.Errorf("%d ListOffsets/OffsetFetch requests while idle and alone, want none", n)
	}
}
