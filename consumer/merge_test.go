package consumer_test

import (
	"context"
	"encoding/json"
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

// alternating makes n events per key alternating a text and a lone custom
// element, all with one CloudCustomData: a stream that merges only as far
// as one custom element per message allows.
func alternating(n int, keys []string) ([]kafka.Message, []string, int) {
	var msgs []kafka.Message
	var want []string
	bytes := 0
	for i := range n {
		k := keys[i%len(keys)]
		name := fmt.Sprintf("%s-%d", k, i/len(keys))
		var el sender.Element
		if (i/len(keys))%2 == 0 {
			el = sender.Text(name + "|" + strings.Repeat("t", 150))
		} else {
			el = sender.Custom(name + "|" + strings.Repeat("c", 150))
		}
		v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{el}, "CloudCustomData": "campaign=7"})
		b, _ := json.Marshal(el)
		bytes += len(b)
		msgs = append(msgs, kafka.Message{Key: []byte(k), Value: v})
		want = append(want, name)
	}
	return msgs, want, bytes
}

// TestMergeMixedStreams: 600 events alternating text and custom in every
// partition. Native mode packs at least 2 events per call (the most one
// custom element per message allows, in order); envelope mode comes within
// 2x of the lower bound of calls (event bytes / 12,000). Every event once,
// in order.
func TestMergeMixedStreams(t *testing.T) {
	for _, envelope := range []bool{false, true} {
		t.Run(map[bool]string{false: "native", true: "envelope"}[envelope], func(t *testing.T) {
			e := newEnv(t, consumertest.Start(t), 3, sendertest.Options{})
			msgs, want, elementBytes := alternating(600, []string{"ka", "kb", "kc"})
			if err := e.kafka.Produce(context.Background(), e.topic, msgs...); err != nil {
				t.Fatal(err)
			}
			e.start(func(c *consumer.Config, s *sender.Config) {
				c.Merge, c.MergeEnvelope = true, envelope
				s.Rate = 20 // slow enough that events wait and merge
			})
			e.waitCommitted(2 * time.Minute)
			checkExactlyOnce(t, deliveredEvents(e.emu), want)
			st := e.emu.Stats()
			lower := (elementBytes + sender.MaxBodyBytes - 1) / sender.MaxBodyBytes
			perCall := float64(len(want)) / float64(st.Delivered)
			t.Logf("%d events in %d calls (%.1f per call); lower bound %d calls", len(want), st.Delivered, perCall, lower)
			if !envelope && perCall < 2 {
				t.Errorf("native: %.2f events per call, want at least 2", perCall)
			}
			if envelope && st.Delivered > 2*lower {
				t.Errorf("envelope: %d calls, want at most %d (2x the lower bound %d)", st.Delivered, 2*lower, lower)
			}
		})
	}
}

// TestMergeFirstCallFull: a backlog in one partition, envelope mode. Every
// call but the last is packed to within 10% of the 12,000-byte limit, the
// first included: a merge call waits (briefly) for the router to hand over
// what the pump has fetched, instead of leaving with the handful of
// records routed when its slot came.
func TestMergeFirstCallFull(t *testing.T) {
	e := newEnv(t, consumertest.Start(t), 1, sendertest.Options{})
	msgs, want, _ := alternating(600, []string{"ka", "kb", "kc"})
	if err := e.kafka.Produce(context.Background(), e.topic, msgs...); err != nil {
		t.Fatal(err)
	}
	e.start(func(c *consumer.Config, s *sender.Config) {
		c.Merge, c.MergeEnvelope = true, true
		s.Rate = 20
	})
	e.waitCommitted(2 * time.Minute)
	checkExactlyOnce(t, deliveredEvents(e.emu), want)
	ds := e.emu.Delivered()
	sizes := make([]int, len(ds))
	for i, d := range ds {
		sizes[i] = len(d.Body)
	}
	t.Logf("%d events in %d calls, bodies %v", len(want), len(ds), sizes)
	for i, n := range sizes[:len(sizes)-1] {
		if n < sender.MaxBodyBytes*9/10 {
			t.Errorf("call %d of %d carries %d bytes, want at least %d (90%% of the limit): it left before the records already fetched were handed to it",
				i+1, len(sizes), n, sender.MaxBodyBytes*9/10)
		}
	}
}
