package main_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"syscall"
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
	faults := sendertest.Faults{Latency: 5 * time.Millisecond, Blocked: []string{"forbidden"}, Answers: map[int]float64{10002: 0.1}}
	ce := newCrashEnv(t, 3, 25, sendertest.Options{Faults: faults}, extra)
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
	// The next owner counts its own attempts, so a kill during the backoff
	// after a 10002 leaves no trace in the receipts: make sure the last
	// worker, which no kill interrupts, retries a call.
	faults.Codes = []int{10002}
	ce.emu.SetFaults(faults)
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

// TestPublishWait: `publish --wait` reads the worker's receipts of the
// events it published and says what became of each: exit 0 when all were
// delivered (MsgSeq printed), 1 naming the dead-lettered one, 1 with a
// hint when no worker writes receipts; 2 without a receipt topic.
// `replay --wait` does the same for the records it replays.
func TestPublishWait(t *testing.T) {
	needBinary(t)
	kc := consumertest.Start(t)
	emu := sendertest.NewServer(sendertest.Options{AppID: 1400000001, Admin: admin, SecretKey: key,
		Faults: sendertest.Faults{Blocked: []string{"forbidden"}}})
	t.Cleanup(emu.Close)
	topic := kc.Topic(t, "wait", 2)
	env := baseEnv(kc.Brokers, topic, kc.Topic(t, "wait-dlq", 1), emu.URL)

	if _, stderr, code := runCmd(t, env, "", "publish", "--text", "hi", "--wait", "5s"); code != 2 || !strings.Contains(stderr, "KAFKA_RECEIPT_TOPIC") {
		t.Errorf("--wait without a receipt topic: exit %d, %q; want 2 naming KAFKA_RECEIPT_TOPIC", code, stderr)
	}
	env["KAFKA_RECEIPT_TOPIC"] = kc.Topic(t, "wait-receipts", 2)
	w := startWorker(t, env)

	out, stderr, code := runCmd(t, env, "", "publish", "--text", "doors open", "--key", "show-1", "--wait", "30s")
	if code != 0 || !regexp.MustCompile(`partition \d offset 0 \(key show-1\): delivered, MsgSeq \d+, 1 attempt\(s\), sent \S+ after it was produced`).MatchString(out) {
		t.Fatalf("publish --wait: exit %d\n%s\n%s", code, out, stderr)
	}
	var delivered sendertest.Delivery
	for _, d := range emu.Delivered() {
		delivered = d
	}
	if !strings.Contains(out, fmt.Sprintf("MsgSeq %d,", delivered.MsgSeq)) {
		t.Errorf("publish --wait printed %q; the emulator's call had MsgSeq %d", out, delivered.MsgSeq)
	}

	lines := `{"key":"a","event":{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"fine"}}]}}
{"key":"b","event":{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"forbidden words"}}]}}
{"key":"c","event":{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"fine too"}}]}}`
	out, stderr, code = runCmd(t, env, lines, "publish", "--file", "-", "--wait", "30s")
	if code != 1 || !strings.Contains(out, "(key b): dead-lettered to "+env["KAFKA_DLQ_TOPIC"]+": content_blocked (ErrorCode 80001)") ||
		strings.Count(out, ": delivered, MsgSeq") != 2 || !strings.Contains(out, "2 delivered, 1 dead-lettered, 0 without a receipt") ||
		!strings.Contains(stderr, "1 of 3 event(s) not delivered") {
		t.Errorf("publish --wait with a blocked event: exit %d\n%s\n%s", code, out, stderr)
	}

	// The moderation rule is fixed: the operator replays the dead letter
	// and waits for it.
	emu.SetFaults(sendertest.Faults{})
	out, stderr, code = runCmd(t, env, "", "replay", "--reason", "content_blocked", "--wait", "30s")
	if code != 0 || !strings.Contains(out, "replayed 1 record(s)") || !regexp.MustCompile(`\(key b\): delivered, MsgSeq \d+`).MatchString(out) {
		t.Errorf("replay --wait: exit %d\n%s\n%s", code, out, stderr)
	}

	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	<-w.done
	out, stderr, code = runCmd(t, env, "", "publish", "--text", "nobody there", "--wait", "500ms")
	if code != 1 || !strings.Contains(out, "no receipt yet") || !strings.Contains(stderr, "is a worker running with KAFKA_RECEIPT_TOPIC=") {
		t.Errorf("publish --wait with no worker: exit %d\n%s\n%s", code, out, stderr)
	}
}
