package main_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// TestReceiptsCrash kills the real binary with SIGKILL mid-stream while it
// writes receipts, on a mixed stream (delivered, retried after 10002,
// blocked by moderation, malformed; merged in merge mode). After every
// kill, every committed event has a receipt; at the end every event has
// at least one, matching the emulator's call (Random, MsgSeq) or its
// dead-letter record, and nothing was delivered twice.
func TestReceiptsCrash(t *testing.T) {
	needBinary(t)
	t.Run("plain", func(t *testing.T) { receiptsCrash(t, map[string]string{"TIM_RATE": "60"}) })
	t.Run("merge", func(t *testing.T) {
		receiptsCrash(t, map[string]string{"TIM_RATE": "30", "TIM_MERGE": "on", "TIM_MERGE_MAX_BYTES": "400"})
	})
}

func receiptsCrash(t *testing.T, extra map[string]string) {
	ce := newCrashEnv(t, 3, 25, sendertest.Options{Faults: sendertest.Faults{
		Latency: 5 * time.Millisecond, Blocked: []string{"forbidden"}, Answers: map[int]float64{10002: 0.1}}}, extra)
	receipts := ce.kc.Topic(t, "receipts", 3)
	ce.env["KAFKA_RECEIPT_TOPIC"] = receipts
	var more []kafka.Message
	for i := range 12 {
		k := []byte(fmt.Sprint("abcdef"[i%6 : i%6+1]))
		if i%2 == 0 {
			more = append(more, kafka.Message{Key: k, Value: []byte(`{"MsgBody":[{"MsgType":"TIMTextElem"}]`)})
		} else {
			more = append(more, kafka.Message{Key: k, Value: []byte(fmt.Sprintf(`{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"forbidden-%d"}}]}`, i))})
		}
	}
	if err := ce.kc.Produce(context.Background(), ce.topic, more...); err != nil {
		t.Fatal(err)
	}
	dlq := ce.env["KAFKA_DLQ_TOPIC"]
	rng := rand.New(rand.NewPCG(3, 4))
	for range 8 {
		killMidStream(t, ce, 1, 6, rng)
		committedHaveReceipts(t, ce, receipts)
	}
	if n := len(ce.emu.Delivered()); n >= len(ce.want) {
		t.Fatalf("all %d delivered before the last kill; the kills did not interrupt sending", n)
	}
	w := startWorker(t, ce.env)
	ce.waitCommitted(t, 2*time.Minute)
	w.kill(t)
	ce.check(t)
	ctx := context.Background()
	src, err1 := ce.kc.ReadAll(ctx, ce.topic)
	rs, err2 := ce.kc.ReadAll(ctx, receipts)
	dl, err3 := ce.kc.ReadAll(ctx, dlq)
	if err1 != nil || err2 != nil || err3 != nil {
		t.Fatal(err1, err2, err3)
	}
	c := consumertest.CheckReceipts(t, src, rs, ce.emu.Delivered(), dl, false)
	t.Logf("receipts %+v; emulator %+v", c, ce.emu.Stats())
	if c.Events != len(src) || c.DeadLettered < 12 || c.Retried == 0 {
		t.Errorf("receipts %+v: want all %d events, at least the 12 dead letters, some retried", c, len(src))
	}
}

// committedHaveReceipts checks that every event below a committed offset
// has a receipt: the receipt is written before the commit.
func committedHaveReceipts(t *testing.T, ce *crashEnv, receipts string) {
	t.Helper()
	ctx := context.Background()
	committed, err := ce.kc.Committed(ctx, ce.env["KAFKA_GROUP_ID"], ce.topic)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := ce.kc.ReadAll(ctx, receipts)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, m := range rs {
		r, err := wire.DecodeReceipt(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		have[fmt.Sprintf("%d@%d", r.Source.Partition, r.Source.Offset)] = true
	}
	for p, next := range committed {
		for off := int64(0); off < next; off++ {
			if !have[fmt.Sprintf("%d@%d", p, off)] {
				t.Errorf("partition %d offset %d is committed (next %d) but has no receipt", p, off, next)
			}
		}
	}
}
