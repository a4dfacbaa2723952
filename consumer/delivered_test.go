package consumer_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// writeEntry writes a delivered-log entry for partition 0 of e's topic,
// of the topic's current id, creating the log first.
func writeEntry(t *testing.T, e *env, next int64) {
	t.Helper()
	ctx := context.Background()
	log := e.topic + ".delivered"
	if err := e.kafka.CreateTopic(ctx, log, 1); err != nil {
		t.Fatal(err)
	}
	ids, err := e.kafka.TopicIDs(ctx, []string{e.topic})
	if err != nil {
		t.Fatal(err)
	}
	w := wire.Watermark{V: wire.DeliveredVersion, App: consumer.DefaultConfig().App, Topic: e.topic, TopicID: ids[e.topic].String(),
		Next: next, At: time.Now().UnixMilli(), By: "test"}
	if err := e.kafka.Produce(ctx, log, kafka.Message{Key: []byte(w.Key()), Value: w.Encode()}); err != nil {
		t.Fatal(err)
	}
}

// lastEntry returns the entry of partition 0 of e's topic as the log's
// readers compute it.
func lastEntry(t *testing.T, e *env) wire.Watermark {
	t.Helper()
	msgs, err := e.kafka.ReadAll(context.Background(), e.topic+".delivered")
	if err != nil {
		t.Fatal(err)
	}
	var w wire.Watermark
	for _, m := range msgs {
		if x, err := wire.ParseWatermark(m.Key, m.Value); err == nil && x.Partition == 0 {
			w = w.Apply(x)
		}
	}
	return w
}

func produceTexts(t *testing.T, e *env, prefix string, n int) []string {
	t.Helper()
	var texts []string
	var msgs []kafka.Message
	for i := range n {
		text := fmt.Sprintf("%s-%d", prefix, i)
		texts = append(texts, text)
		msgs = append(msgs, textEvent("k", text))
	}
	if err := e.kafka.Produce(context.Background(), e.topic, msgs...); err != nil {
		t.Fatal(err)
	}
	return texts
}

// TestDeliveredLogTruncated: a log that ends below the delivered log's
// watermark is not skipped silently. What it held before the last
// delivery recorded is taken as delivered (a truncation after an unclean
// leader election keeps delivered records), what was produced after is
// delivered (a topic created again on a broker without topic ids); the
// watermark is lowered for good (reset log_truncated), so records produced
// later are delivered too.
func TestDeliveredLogTruncated(t *testing.T) {
	kc := consumertest.Start(t)
	t.Run("the records it holds were delivered", func(t *testing.T) {
		e := newEnv(t, kc, 1, sendertest.Options{})
		produceTexts(t, e, "old", 10)
		writeEntry(t, e, 1000)
		rw := e.start(nil)
		e.waitCommitted(30 * time.Second)
		if got := len(e.emu.Delivered()); got != 0 {
			t.Fatalf("%d of the surviving records sent again, want none", got)
		}
		if w := lastEntry(t, e); w.Reset != wire.ResetLogTruncated || w.Next != 10 {
			t.Errorf("entry after the check: %+v, want lowered to 10 (log_truncated)", w)
		}
		want := produceTexts(t, e, "new", 5)
		e.waitCommitted(30 * time.Second)
		rw.stop(t)
		checkExactlyOnce(t, deliveredTexts(e.emu), want)
	})
	t.Run("records produced after the last delivery are new", func(t *testing.T) {
		e := newEnv(t, kc, 1, sendertest.Options{})
		writeEntry(t, e, 1000)
		time.Sleep(1100 * time.Millisecond) // past the entry's time and the skew allowed
		want := produceTexts(t, e, "recreated", 10)
		rw := e.start(nil)
		e.waitCommitted(30 * time.Second)
		rw.stop(t)
		checkExactlyOnce(t, deliveredTexts(e.emu), want)
		if w := lastEntry(t, e); w.Next != 10 {
			t.Errorf("entry after the deliveries: %+v, want next 10", w)
		}
	})
}

// TestDeliveredLogSecondDeployment: two deployments (two groups) on one
// topic for one app: the second, started after the first delivered
// everything, sends none of it again; the first's deliveries reach the
// second's view of the log before old records are sent.
func TestDeliveredLogSecondDeployment(t *testing.T) {
	e := newEnv(t, consumertest.Start(t), 2, sendertest.Options{})
	want := e.produceKeyed([]string{"a", "b", "c"}, 5)
	first := e.start(nil)
	e.waitCommitted(30 * time.Second)
	first.stop(t)
	second := e.start(func(c *consumer.Config, _ *sender.Config) { c.GroupID += "-second" })
	waitFor(t, 30*time.Second, "the second group committed", func() bool {
		c, err := e.kafka.Committed(context.Background(), e.group+"-second", e.topic)
		return err == nil && c[0]+c[1] == int64(len(want))
	})
	second.stop(t)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
}

// TestDeliveredLogWhileWaiting: a deployment whose calls wait (paused by
// its API) while another deployment delivers the same records learns of
// those deliveries before it sends, once the records are older than half
// the dedupe window: it sends none of them.
func TestDeliveredLogWhileWaiting(t *testing.T) {
	e := newEnv(t, consumertest.Start(t), 1, sendertest.Options{})
	const window = 600 * time.Millisecond
	paused := sendertest.NewServer(sendertest.Options{AppID: appID, Admin: admin, SecretKey: key, DedupeWindow: window,
		Faults: sendertest.Faults{FeatureOff: true}})
	t.Cleanup(paused.Close)
	want := produceTexts(t, e, "shared", 5)
	second := e.start(func(c *consumer.Config, s *sender.Config) {
		// Its own claims log: a pause of its emulator is not the first's.
		c.GroupID, c.SlotTopic = c.GroupID+"-second", c.Topic+".slots-second"
		c.DedupeWindow, s.DedupeWindow, s.AttemptTimeout = window, window, 100*time.Millisecond
		s.Endpoints = []string{paused.URL}
	})
	waitFor(t, 30*time.Second, "the second deployment paused", func() bool { return paused.Stats().ByCode[10007] > 0 })
	first := e.start(nil)
	e.waitCommitted(30 * time.Second)
	first.stop(t)
	time.Sleep(window) // the records are now older than half the window, the second's view older than a quarter
	paused.SetFaults(sendertest.Faults{})
	waitFor(t, 30*time.Second, "the second group committed", func() bool {
		c, err := e.kafka.Committed(context.Background(), e.group+"-second", e.topic)
		return err == nil && c[0] == int64(len(want))
	})
	second.stop(t)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
	if got := len(paused.Delivered()); got != 0 {
		t.Errorf("the second deployment sent %d events the first had delivered, want none", got)
	}
}

// TestOldRecordsWarning: a new group starting at the earliest offset of a
// partition that holds records older than a day says so at start; one
// whose records are all recent does not.
func TestOldRecordsWarning(t *testing.T) {
	kc := consumertest.Start(t)
	for _, tc := range []struct {
		name string
		age  time.Duration
		want bool
	}{{"two days old", 48 * time.Hour, true}, {"recent", time.Minute, false}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, kc, 1, sendertest.Options{})
			m := textEvent("k", "old")
			m.Time = time.Now().Add(-tc.age)
			if err := e.kafka.Produce(context.Background(), e.topic, m, textEvent("k", "new")); err != nil {
				t.Fatal(err)
			}
			core, logs := observer.New(zapcore.WarnLevel)
			rw := e.start(func(c *consumer.Config, _ *sender.Config) { c.Logger = zap.New(core) })
			e.waitCommitted(30 * time.Second)
			rw.stop(t)
			got := logs.FilterMessageSnippet("holding records older than a day").Len()
			if (got > 0) != tc.want {
				t.Errorf("%d warnings about records older than a day, want them: %v", got, tc.want)
			}
		})
	}
}

// TestCommitsCoalesced: what settles within a commit interval goes to the
// delivered log in one write and is committed in one commit, the write
// always before the commit past it: 200 calls at 200 a second make a few
// writes and commits with an interval of 250 ms, about one each with none
// (the default: each outcome at once).
func TestCommitsCoalesced(t *testing.T) {
	kc := consumertest.StartFake(t)
	for _, tc := range []struct {
		name     string
		interval time.Duration
		atMost   int // writes and commits
		atLeast  int
		calls    int
	}{
		{name: "250ms", interval: 250 * time.Millisecond, atMost: 20, calls: 200},
		{name: "at once", interval: 0, atLeast: 50, calls: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, kc, 1, sendertest.Options{})
			deliveredTopic := e.topic + ".delivered"
			var mu sync.Mutex
			var seq []int64 // -1: a write of the delivered log; else a commit's offset
			var on atomic.Bool
			on.Store(true)
			t.Cleanup(func() { on.Store(false) })
			kc.Fake.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
				kc.Fake.KeepControl()
				if !on.Load() {
					return nil, nil, false
				}
				for _, rt := range req.(*kmsg.ProduceRequest).Topics {
					if rt.Topic == deliveredTopic {
						mu.Lock()
						seq = append(seq, -1)
						mu.Unlock()
					}
				}
				return nil, nil, false
			})
			kc.Fake.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
				kc.Fake.KeepControl()
				r := req.(*kmsg.OffsetCommitRequest)
				if !on.Load() || r.Group != e.group {
					return nil, nil, false
				}
				for _, rt := range r.Topics {
					for _, p := range rt.Partitions {
						mu.Lock()
						seq = append(seq, p.Offset)
						mu.Unlock()
					}
				}
				return nil, nil, false
			})
			want := produceTexts(t, e, "c", tc.calls)
			rw := e.start(func(c *consumer.Config, s *sender.Config) {
				c.CommitInterval, c.AppRate, s.Rate = tc.interval, 200, 200
			})
			e.waitCommitted(30 * time.Second)
			rw.stop(t)
			checkExactlyOnce(t, deliveredTexts(e.emu), want)
			if w := lastEntry(t, e); w.Next != int64(tc.calls) {
				t.Errorf("delivered log entry %+v, want next %d", w, tc.calls)
			}
			mu.Lock()
			defer mu.Unlock()
			writes, commits, committed, written := 0, 0, int64(0), false
			for _, x := range seq {
				if x < 0 {
					writes++
					written = true
					continue
				}
				commits++
				if x > committed && !written {
					t.Errorf("commit at %d (from %d) with no delivered-log write since the last commit: %v", x, committed, seq)
				}
				committed, written = max(committed, x), false
			}
			t.Logf("%d calls: %d delivered-log writes, %d commits", tc.calls, writes, commits)
			if tc.atMost > 0 && (writes > tc.atMost || commits > tc.atMost) {
				t.Errorf("%d writes and %d commits for %d calls, want at most %d each (coalesced)", writes, commits, tc.calls, tc.atMost)
			}
			if writes < tc.atLeast || commits < tc.atLeast {
				t.Errorf("%d writes and %d commits for %d calls, want at least %d each (each at once)", writes, commits, tc.calls, tc.atLeast)
			}
		})
	}
}
