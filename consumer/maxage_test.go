package consumer_test

import (
	"context"
	"testing"
	"time"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// TestMaxAge: with MaxAge (TIM_MAX_AGE) an event whose record timestamp is
// older than that when its turn comes is dead-lettered expired, naming
// TIM_MAX_AGE; fresh events around it are delivered once.
func TestMaxAge(t *testing.T) {
	e := newEnv(t, consumertest.Start(t), 1, sendertest.Options{})
	old := textEvent("k", "stale")
	old.Time = time.Now().Add(-2 * time.Hour)
	fresh1, fresh2 := textEvent("k", "fresh-1"), textEvent("k", "fresh-2")
	if err := e.kafka.Produce(context.Background(), e.topic, fresh1, old, fresh2); err != nil {
		t.Fatal(err)
	}
	e.start(func(c *consumer.Config, _ *sender.Config) { c.MaxAge = time.Hour })
	waitFor(t, 30*time.Second, "the fresh events delivered", func() bool { return len(e.emu.Delivered()) >= 2 })
	e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), []string{"fresh-1", "fresh-2"})
	dl, err := e.kafka.ReadAll(context.Background(), e.dlq)
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 1 || wire.Header(dl[0], wire.HeaderDLQReason) != wire.ReasonExpired || wire.Header(dl[0], wire.HeaderDLQField) != "TIM_MAX_AGE" {
		t.Fatalf("dead letters %+v, want the stale event as expired naming TIM_MAX_AGE", dl)
	}
}
