package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

func TestEndToEnd(t *testing.T) {
	runEndToEnd(t, consumertest.Start(t))
}

// TestEndToEndRealKafka runs the same test on a real broker: KAFKA_BROKERS,
// or a container when Docker is available; otherwise it skips and says so.
func TestEndToEndRealKafka(t *testing.T) {
	runEndToEnd(t, consumertest.StartReal(t))
}

func runEndToEnd(t *testing.T, kc *consumertest.Cluster) {
	e := newEnv(t, kc, 3, sendertest.Options{})
	want := e.produceKeyed(keys, 10)

	// Malformed records, each followed by a good one on the same key (so
	// the same partition): the good ones must flow on.
	expired := textEvent("kx", "too late")
	expired.Headers = []kafka.Header{{Key: wire.HeaderExpiresAt, Value: []byte("2001-01-01T00:00:00Z")}}
	bad := map[string]kafka.Message{
		"invalid_json":  {Key: []byte("kx"), Value: []byte(`{"MsgBody": [`)},
		"missing":       {Key: []byte("kx"), Value: []byte(`{"From_Account":"a"}`)},
		"unknown_type":  {Key: []byte("kx"), Value: []byte(`{"MsgBody":[{"MsgType":"TIMPollElem","MsgContent":{}}]}`)},
		"two_custom":    {Key: []byte("kx"), Value: []byte(`{"MsgBody":[{"MsgType":"TIMCustomElem","MsgContent":{"Data":"a"}},{"MsgType":"TIMCustomElem","MsgContent":{"Data":"b"}}]}`)},
		"too_long":      textEvent("kx", strings.Repeat("x", 12001)),
		"unknown_field": {Key: []byte("kx"), Value: []byte(`{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"a"}}],"Priority":"High"}`)},
		"expired":       expired,
	}
	wantReason := map[string]string{
		"invalid_json": "invalid_json", "missing": "invalid_event", "unknown_type": "invalid_event",
		"two_custom": "invalid_event", "too_long": "body_too_long", "unknown_field": "invalid_event", "expired": "expired",
	}
	names := make([]string, 0, len(bad))
	for n := range bad {
		names = append(names, n)
	}
	sort.Strings(names)
	var msgs []kafka.Message
	for i, n := range names {
		msgs = append(msgs, bad[n])
		text := fmt.Sprintf("kx-%d", i)
		msgs = append(msgs, textEvent("kx", text))
		want = append(want, text)
	}
	if err := e.kafka.Produce(context.Background(), e.topic, msgs...); err != nil {
		t.Fatal(err)
	}

	e.start(nil)
	waitFor(t, 60*time.Second, "all events delivered", func() bool { return len(e.emu.Delivered()) >= len(want) })
	e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)

	dl, err := e.kafka.ReadAll(context.Background(), e.dlq)
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != len(bad) {
		t.Fatalf("dead-letter topic holds %d records, want %d", len(dl), len(bad))
	}
	byValue := map[string]kafka.Message{}
	for _, m := range dl {
		byValue[string(m.Value)] = m
	}
	for _, n := range names {
		m, ok := byValue[string(bad[n].Value)]
		if !ok {
			t.Errorf("%s: not dead-lettered", n)
			continue
		}
		if got := wire.Header(m, wire.HeaderDLQReason); got != wantReason[n] {
			t.Errorf("%s: reason %q, want %q (info %q)", n, got, wantReason[n], wire.Header(m, wire.HeaderDLQInfo))
		}
		if string(m.Key) != "kx" || wire.Header(m, wire.HeaderSourceTopic) != e.topic ||
			wire.Header(m, wire.HeaderSourceOffset) == "" || wire.Header(m, wire.HeaderDLQInfo) == "" {
			t.Errorf("%s: dead-letter record lacks key or source headers: %+v", n, m.Headers)
		}
	}
	if m := byValue[string(bad["unknown_field"].Value)]; !strings.Contains(wire.Header(m, wire.HeaderDLQInfo), "Priority") {
		t.Errorf("unknown field reason does not name the field: %q", wire.Header(m, wire.HeaderDLQInfo))
	}
	if m := byValue[string(expired.Value)]; wire.Header(m, wire.HeaderExpiresAt) == "" {
		t.Errorf("original headers not kept in the dead-letter record: %+v", m.Headers)
	}
}

// TestFaults: 10002 and 502 at high rates and lost answers: every event is
// delivered once, in order.
func TestFaults(t *testing.T) {
	kc := consumertest.Start(t)
	e := newEnv(t, kc, 3, sendertest.Options{Seed: 7, Faults: sendertest.Faults{
		InternalErrorRate: 0.3, BadGatewayRate: 0.2, DropAfterProcessRate: 0.2,
	}})
	want := e.produceKeyed(keys, 8)
	e.start(nil)
	e.waitCommitted(90 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
	st := e.emu.Stats()
	if st.ByCode[10002] == 0 || st.ByCode[-502] == 0 || st.Duplicates == 0 {
		t.Errorf("faults not exercised: %+v", st)
	}
}

// TestPauseDeadLettersNothing: during a 10007 period nothing is sent or
// dead-lettered and the worker reports itself paused; once it clears,
// everything is delivered once.
func TestPauseDeadLettersNothing(t *testing.T) {
	kc := consumertest.Start(t)
	e := newEnv(t, kc, 3, sendertest.Options{Faults: sendertest.Faults{FeatureOff: true}})
	want := e.produceKeyed(keys, 3)
	rw := e.start(nil)
	waitFor(t, 30*time.Second, "worker paused", rw.w.Paused)
	if ready, why := rw.w.Ready(); ready || !strings.Contains(why, "paused") {
		t.Errorf("Ready() = %v, %q while paused", ready, why)
	}
	time.Sleep(500 * time.Millisecond) // several probes
	if n := len(e.emu.Delivered()); n != 0 {
		t.Fatalf("%d delivered while the feature is off", n)
	}
	calls := e.emu.Stats().Calls
	if calls > 40 {
		t.Errorf("%d calls in the pause: probes are not backing off", calls)
	}
	e.emu.SetFaults(sendertest.Faults{})
	e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
	if rw.w.Paused() {
		t.Error("still paused after the fault cleared")
	}
	dl, err := e.kafka.ReadAll(context.Background(), e.dlq)
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 0 {
		t.Errorf("%d records dead-lettered during a pause, want 0", len(dl))
	}
}

// TestRejectedByAPIDeadLettered: an event the API rejects (80001) goes to
// the dead-letter topic with the code; the ones behind it are delivered.
func TestRejectedByAPIDeadLettered(t *testing.T) {
	kc := consumertest.Start(t)
	e := newEnv(t, kc, 1, sendertest.Options{Faults: sendertest.Faults{Codes: []int{80001}}})
	want := e.produceKeyed([]string{"k"}, 3)
	e.start(nil)
	e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want[1:])
	dl, err := e.kafka.ReadAll(context.Background(), e.dlq)
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 1 || wire.Header(dl[0], wire.HeaderDLQCode) != "80001" ||
		wire.Header(dl[0], wire.HeaderDLQReason) != "content_blocked" || wire.Header(dl[0], wire.HeaderDLQAttempts) != "1" {
		t.Fatalf("dead-letter records %+v, want one with code 80001", dl)
	}
}

// TestRebalance: a second worker joins and leaves mid-stream.
func TestRebalance(t *testing.T) {
	kc := consumertest.Start(t)
	e := newEnv(t, kc, 3, sendertest.Options{})
	slow := func(_ *consumer.Config, s *sender.Config) { s.Rate = 40 }
	want := e.produceKeyed(keys, 15)
	e.start(slow)
	waitFor(t, 30*time.Second, "some deliveries", func() bool { return len(e.emu.Delivered()) > 10 })
	second := e.start(slow)
	waitFor(t, 30*time.Second, "more deliveries", func() bool { return len(e.emu.Delivered()) > 40 })
	second.stop(t)
	e.waitCommitted(60 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
}

// TestDrainOnStop: stopping the worker lets the in-flight call finish and
// commits it; a restarted worker continues without a duplicate.
func TestDrainOnStop(t *testing.T) {
	kc := consumertest.Start(t)
	e := newEnv(t, kc, 1, sendertest.Options{Faults: sendertest.Faults{Latency: 300 * time.Millisecond}})
	want := e.produceKeyed([]string{"k"}, 6)
	rw := e.start(nil)
	waitFor(t, 30*time.Second, "first delivery", func() bool { return len(e.emu.Delivered()) >= 1 })
	rw.stop(t)
	n := len(e.emu.Delivered())
	committed, err := e.kafka.Committed(context.Background(), e.group, e.topic)
	if err != nil {
		t.Fatal(err)
	}
	if committed[0] != int64(n) {
		t.Errorf("after drain: %d delivered, committed offset %d; want them equal", n, committed[0])
	}
	e.start(nil)
	e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
	if st := e.emu.Stats(); st.Duplicates != 0 {
		t.Errorf("%d duplicates: the drain did not commit what it delivered", st.Duplicates)
	}
}

// TestBrokerFaults: the broker drops connections on offset commits,
// fetches and dead-letter produces: nothing is lost or delivered twice.
func TestBrokerFaults(t *testing.T) {
	kc := consumertest.StartFake(t)
	e := newEnv(t, kc, 3, sendertest.Options{})
	want := e.produceKeyed(keys, 10)
	if err := kc.Produce(context.Background(), e.topic, kafka.Message{Key: []byte("ka"), Value: []byte("not json")}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	hits := map[int16]int{}
	inject := func(key int16, n int) {
		kc.Fake.ControlKey(key, func(kmsg.Request) (kmsg.Response, error, bool) {
			mu.Lock()
			defer mu.Unlock()
			hits[key]++
			kc.Fake.KeepControl() // handled requests drop the control unless kept
			if hits[key] >= n {
				kc.Fake.DropControl() // takes precedence over KeepControl
			}
			return nil, errors.New("injected broker fault"), true // closes the connection
		})
	}
	inject(int16(kmsg.OffsetCommit), 4)
	inject(int16(kmsg.Fetch), 3)
	inject(int16(kmsg.Produce), 2)
	e.start(nil)
	e.waitCommitted(60 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
	mu.Lock()
	defer mu.Unlock()
	if hits[int16(kmsg.OffsetCommit)] < 4 || hits[int16(kmsg.Fetch)] < 3 || hits[int16(kmsg.Produce)] < 2 {
		t.Errorf("faults not all injected: %v", hits)
	}
	dl, err := kc.ReadAll(context.Background(), e.dlq)
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 1 {
		t.Errorf("dead-letter topic holds %d records, want 1", len(dl))
	}
}
