package consumer_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// TestMergeEndToEnd: 2,000 events of mixed sizes over 3 partitions, merge
// on: each delivered exactly once, per-key order kept inside and across
// calls, no call over the size limit, far fewer calls than events.
func TestMergeEndToEnd(t *testing.T) {
	const limit = 6000
	e := newEnv(t, consumertest.Start(t), 3, sendertest.Options{Rate: 100})
	msgs, want := mixedEvents(2000, keys, 1)
	if err := e.kafka.Produce(context.Background(), e.topic, msgs...); err != nil {
		t.Fatal(err)
	}
	e.start(func(c *consumer.Config, s *sender.Config) {
		c.Merge, c.MergeMaxBytes = true, limit
		s.Rate = 100
	})
	e.waitCommitted(2 * time.Minute)
	checkExactlyOnce(t, deliveredEvents(e.emu), want)
	st := e.emu.Stats()
	if st.MaxBody > limit {
		t.Errorf("a call of %d bytes, over the %d limit", st.MaxBody, limit)
	}
	if st.Delivered*4 > len(want) {
		t.Errorf("%d calls for %d events: merging did not happen", st.Delivered, len(want))
	}
	if st.ByCode[10023] != 0 {
		t.Errorf("%d calls answered 10023", st.ByCode[10023])
	}
	t.Logf("%d events in %d calls (largest %d bytes, mean %d)", len(want), st.Delivered, st.MaxBody, st.Bytes/max(st.Delivered, 1))
}

// TestMergeRejectedSplit: a merged call the API rejects for one member's
// content is split; only that member is dead-lettered.
func TestMergeRejectedSplit(t *testing.T) {
	e := newEnv(t, consumertest.Start(t), 1, sendertest.Options{Faults: sendertest.Faults{Blocked: []string{"forbidden"}}})
	var msgs []kafka.Message
	var want []string
	for i := range 10 {
		text := fmt.Sprintf("k-%d", i)
		if i == 4 {
			text += "|forbidden words"
		} else {
			want = append(want, text)
		}
		msgs = append(msgs, textEvent("k", text))
	}
	if err := e.kafka.Produce(context.Background(), e.topic, msgs...); err != nil {
		t.Fatal(err)
	}
	e.start(func(c *consumer.Config, _ *sender.Config) { c.Merge = true })
	e.waitCommitted(time.Minute)
	checkExactlyOnce(t, deliveredEvents(e.emu), want)
	dl, err := e.kafka.ReadAll(context.Background(), e.dlq)
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 1 || !strings.Contains(string(dl[0].Value), "forbidden") ||
		wire.Header(dl[0], wire.HeaderDLQReason) != "content_blocked" {
		t.Fatalf("dead-letter topic: %d records, want only the blocked one", len(dl))
	}
	if st := e.emu.Stats(); st.ByCode[80001] < 2 {
		t.Errorf("want the merged call and the lone resend rejected, got %d rejections", st.ByCode[80001])
	}
}

// TestMergeLoneEventSameBytes: with merge on, an event that is alone when
// its slot opens is sent with exactly the bytes of merge off.
func TestMergeLoneEventSameBytes(t *testing.T) {
	e := newEnv(t, consumertest.Start(t), 1, sendertest.Options{})
	e.start(func(c *consumer.Config, _ *sender.Config) { c.Merge = true })
	ev := textEvent("solo", "alone")
	if err := e.kafka.Produce(context.Background(), e.topic, ev); err != nil {
		t.Fatal(err)
	}
	e.waitCommitted(30 * time.Second)
	d := e.emu.Delivered()
	if len(d) != 1 {
		t.Fatalf("%d deliveries", len(d))
	}
	plain, err := wire.DecodeEvent(wire.Record{Topic: e.topic, Key: ev.Key, Value: ev.Value})
	if err != nil {
		t.Fatal(err)
	}
	if string(d[0].Body) != string(plain.Body) {
		t.Errorf("lone event sent as %s, want %s", d[0].Body, plain.Body)
	}
}
