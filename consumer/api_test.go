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

// TestSignatureExpiredTwicePauses: a server that refuses every signature
// as expired (the host clock far off) pauses the worker within 3 attempts,
// with a message naming the clock, instead of spending the app's rate.
func TestSignatureExpiredTwicePauses(t *testing.T) {
	e := newEnv(t, consumertest.Start(t), 1, sendertest.Options{Faults: sendertest.Faults{Answers: map[int]float64{70001: 1}}})
	want := e.produceKeyed([]string{"k"}, 2)
	rw := e.start(func(c *consumer.Config, _ *sender.Config) {
		c.PauseInitial, c.PauseMax = 10*time.Second, 10*time.Second
	})
	waitFor(t, 30*time.Second, "paused", rw.w.Paused)
	if n := e.emu.Stats().ByCode[70001]; n > 3 {
		t.Errorf("%d attempts answered 70001 before the pause, want at most 3", n)
	}
	if ready, why := rw.w.Ready(); ready || !strings.Contains(why, "clock") {
		t.Errorf("Ready() = %v, %q; want not ready, naming the clock", ready, why)
	}
	rw.stop(t)
	e.emu.SetFaults(sendertest.Faults{})
	e.start(nil)
	e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
}

// TestAppWideCodesPause: each answer that every event would get pauses
// the worker with nothing dead-lettered, and sending resumes by itself
// once the answer clears.
func TestAppWideCodesPause(t *testing.T) {
	codes := []int{10003, 10007, 10026, 10059, 60006, 60010, 60012, 60016, 60017, 60020, 60021,
		70009, 70013, 70014, 70016, 70020, 70051, 70403}
	e := newEnv(t, consumertest.Start(t), 1, sendertest.Options{})
	rw := e.start(nil)
	var want []string
	for i, code := range codes {
		e.emu.SetFaults(sendertest.Faults{Answers: map[int]float64{code: 1}})
		text := fmt.Sprintf("k-%d", i)
		want = append(want, text)
		if err := e.kafka.Produce(context.Background(), e.topic, textEvent("k", text)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, fmt.Sprintf("paused on %d", code), rw.w.Paused)
		if _, why := rw.w.Ready(); !strings.Contains(why, fmt.Sprint(code)) {
			t.Errorf("%d: Ready() says %q, want the code named", code, why)
		}
		e.emu.SetFaults(sendertest.Faults{})
		waitFor(t, 30*time.Second, fmt.Sprintf("resumed after %d", code), func() bool { return len(e.emu.Delivered()) == i+1 })
	}
	e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
	if dl, err := e.kafka.ReadAll(context.Background(), e.dlq); err != nil || len(dl) != 0 {
		t.Errorf("%d dead-lettered (%v), want none: a pause never dead-letters", len(dl), err)
	}
}

// TestStuckShowsInReady: an event retried longer than StuckAfter makes
// the worker not ready, naming the partition and offset; it clears once
// the event goes through.
func TestStuckShowsInReady(t *testing.T) {
	e := newEnv(t, consumertest.Start(t), 1, sendertest.Options{Faults: sendertest.Faults{Answers: map[int]float64{10002: 1}}})
	want := e.produceKeyed([]string{"k"}, 1)
	rw := e.start(func(c *consumer.Config, _ *sender.Config) { c.StuckAfter = 300 * time.Millisecond })
	waitFor(t, 30*time.Second, "stuck", func() bool {
		ready, why := rw.w.Ready()
		return !ready && strings.Contains(why, "/0 stuck on offset 0") && strings.Contains(why, "10002")
	})
	e.emu.SetFaults(sendertest.Faults{})
	e.waitCommitted(30 * time.Second)
	waitFor(t, 10*time.Second, "ready again", func() bool { r, _ := rw.w.Ready(); return r })
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
}

// TestRetryMaxElapsedDeadLetters: with a retry budget, an event that keeps
// failing is dead-lettered as retry_exhausted and the next one flows.
func TestRetryMaxElapsedDeadLetters(t *testing.T) {
	e := newEnv(t, consumertest.Start(t), 1, sendertest.Options{Faults: sendertest.Faults{Answers: map[int]float64{10002: 1}}})
	if err := e.kafka.Produce(context.Background(), e.topic, textEvent("k", "doomed")); err != nil {
		t.Fatal(err)
	}
	e.start(func(c *consumer.Config, s *sender.Config) {
		c.RetryMaxElapsed, s.MaxElapsed = 300*time.Millisecond, 300*time.Millisecond
	})
	var dl []kafka.Message
	waitFor(t, 30*time.Second, "dead letter", func() bool {
		dl, _ = e.kafka.ReadAll(context.Background(), e.dlq)
		return len(dl) == 1
	})
	if got := wire.Header(dl[0], wire.HeaderDLQReason); got != sender.ReasonRetryExhausted {
		t.Errorf("reason %q, want %q", got, sender.ReasonRetryExhausted)
	}
	if got := wire.Header(dl[0], wire.HeaderDLQCode); got != "10002" {
		t.Errorf("code %q, want the last answer 10002", got)
	}
	e.emu.SetFaults(sendertest.Faults{})
	want := e.produceKeyed([]string{"k"}, 1)
	e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
}

// TestInvalidDownloadFlagNoCall: Download_Flag 1 is dead-lettered as
// invalid_event before any API call.
func TestInvalidDownloadFlagNoCall(t *testing.T) {
	e := newEnv(t, consumertest.Start(t), 1, sendertest.Options{})
	bad := kafka.Message{Key: []byte("k"), Value: []byte(`{"MsgBody":[{"MsgType":"TIMFileElem","MsgContent":{"Url":"https://x/f.pdf","FileSize":1,"FileName":"f.pdf","Download_Flag":1}}]}`)}
	if err := e.kafka.Produce(context.Background(), e.topic, bad); err != nil {
		t.Fatal(err)
	}
	e.start(nil)
	e.waitCommitted(30 * time.Second)
	dl, err := e.kafka.ReadAll(context.Background(), e.dlq)
	if err != nil || len(dl) != 1 {
		t.Fatalf("dead letters %d, %v", len(dl), err)
	}
	if r, f := wire.Header(dl[0], wire.HeaderDLQReason), wire.Header(dl[0], wire.HeaderDLQField); r != "invalid_event" || !strings.Contains(f, "Download_Flag") {
		t.Errorf("reason %q field %q, want invalid_event naming Download_Flag", r, f)
	}
	if n := e.emu.Stats().Calls; n != 0 {
		t.Errorf("%d API calls, want 0", n)
	}
}
