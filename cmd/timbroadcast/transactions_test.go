package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// TestTransactionsCrash: a transactional producer commits and aborts
// transactions and leaves one open while the real binary is killed with
// SIGKILL again and again. Nothing aborted is ever broadcast, nothing of
// the open transaction before it commits, no transaction marker reaches
// the dead-letter topic, and every committed event is shown once, in
// order per key. Plain and merge mode.
func TestTransactionsCrash(t *testing.T) {
	t.Run("plain", func(t *testing.T) { transactionsCrash(t, map[string]string{"TIM_RATE": "60"}) })
	t.Run("merge", func(t *testing.T) {
		transactionsCrash(t, map[string]string{"TIM_RATE": "30", "TIM_MERGE": "on", "TIM_MERGE_MAX_BYTES": "400"})
	})
}

func transactionsCrash(t *testing.T, extra map[string]string) {
	ce := newCrashEnv(t, 3, 0, sendertest.Options{Faults: sendertest.Faults{Latency: 5 * time.Millisecond}}, extra)
	cl, err := kgo.NewClient(kgo.SeedBrokers(ce.kc.Brokers...), kgo.TransactionalID("tx-"+ce.topic),
		kgo.DefaultProduceTopic(ce.topic), kgo.TransactionTimeout(3*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	seq := map[string]int{}
	produce := func(txn int) []string {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		var texts []string
		for range 2 {
			for _, k := range []string{"a", "b", "c", "d", "e", "f"} {
				text := fmt.Sprintf("%s-%d", k, seq[k])
				seq[k]++
				v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{sender.Text(text)}})
				if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(k), Value: v}).FirstErr(); err != nil {
					t.Fatal(err)
				}
				texts = append(texts, text)
			}
		}
		return texts
	}
	aborted := map[string]bool{}
	for txn := range 10 {
		texts := produce(txn)
		commit := txn%3 != 1
		if commit {
			ce.want = append(ce.want, texts...)
		} else {
			for _, x := range texts {
				aborted[x] = true
			}
		}
		if err := cl.EndTransaction(ctx, map[bool]kgo.TransactionEndTry{true: kgo.TryCommit, false: kgo.TryAbort}[commit]); err != nil {
			t.Fatal(err)
		}
	}
	open := produce(10) // stays open through the kills

	killMidStream(t, ce, 8, 4, rand.New(rand.NewPCG(3, 4)))
	w := startWorker(t, ce.env)
	// Everything committed so far, and nothing of the open transaction.
	waitDelivered(t, ce, len(ce.want))
	time.Sleep(300 * time.Millisecond)
	for _, d := range ce.emu.Delivered() {
		for _, el := range d.Elements() {
			var c sender.TextElem
			_ = json.Unmarshal(el.MsgContent, &c)
			if aborted[c.Text] {
				t.Errorf("%s of an aborted transaction was broadcast", c.Text)
			}
			for _, o := range open {
				if c.Text == o {
					t.Errorf("%s of an open transaction was broadcast before its commit", c.Text)
				}
			}
		}
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	ce.want = append(ce.want, open...)
	ce.waitCommitted(t, 2*time.Minute)
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-w.done
	ce.check(t)
	dl, err := ce.kc.ReadAll(ctx, ce.env["KAFKA_DLQ_TOPIC"])
	if err != nil || len(dl) != 0 {
		t.Errorf("%d dead letters (%v), want none", len(dl), err)
	}
	if strings.Contains(w.logs.String(), "invalid_json") {
		t.Error("a transaction marker was taken for an event")
	}
}

// waitDelivered waits until n distinct texts were delivered.
func waitDelivered(t *testing.T, ce *crashEnv, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		seen := map[string]bool{}
		for _, d := range ce.emu.Delivered() {
			for _, el := range d.Elements() {
				var c sender.TextElem
				_ = json.Unmarshal(el.MsgContent, &c)
				seen[c.Text] = true
			}
		}
		if len(seen) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events delivered", len(seen), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
