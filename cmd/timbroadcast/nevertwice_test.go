package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// The never-twice tests run the real binary against kfake and the API
// emulator with its dedupe window shortened to a few seconds, so "more
// than five minutes later" takes seconds: TIM_DEDUPE_WINDOW says the same
// to the worker.
const shortWindow = 2 * time.Second

// neverTwiceEnv is a crash environment whose emulator forgets Randoms
// after shortWindow, with the worker told so.
func neverTwiceEnv(t *testing.T, partitions int, extra map[string]string) *crashEnv {
	t.Helper()
	env := map[string]string{"TIM_DEDUPE_WINDOW": shortWindow.String(), "TIM_ATTEMPT_TIMEOUT": "300ms"}
	for k, v := range extra {
		env[k] = v
	}
	return newCrashEnv(t, partitions, 5, sendertest.Options{DedupeWindow: shortWindow}, env)
}

// stop drains a worker with SIGTERM.
func (w *worker) stop(t testing.TB) {
	t.Helper()
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.done:
		if err != nil {
			t.Errorf("worker exit after SIGTERM: %v\n%s", err, w.logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("worker still running 30s after SIGTERM\n%s", w.logs.String())
	}
}

// deliverAll runs a worker over ce until every event is committed, stops
// it, and waits out the server's dedupe window: from then on only the
// worker can keep an event from being shown twice.
func deliverAll(t *testing.T, ce *crashEnv) {
	t.Helper()
	w := startWorker(t, ce.env)
	ce.waitCommitted(t, 60*time.Second)
	w.stop(t)
	ce.check(t)
	time.Sleep(shortWindow + 500*time.Millisecond)
}

// resetToEarliest commits offset 0 for every partition of the group, as
// kafka-consumer-groups --reset-offsets --to-earliest does (the group
// empty).
func resetToEarliest(t *testing.T, ce *crashEnv) {
	t.Helper()
	ctx := context.Background()
	parts, err := ce.kc.Partitions(ctx, ce.topic)
	if err != nil {
		t.Fatal(err)
	}
	var commits []kafka.OffsetCommit
	for _, p := range parts {
		commits = append(commits, kafka.OffsetCommit{Partition: p, Offset: 0})
	}
	resp, err := ce.kc.Client().OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: ce.env["KAFKA_GROUP_ID"], GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{ce.topic: commits}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.Topics[ce.topic] {
		if p.Error != nil {
			t.Fatalf("reset partition %d: %v", p.Partition, p.Error)
		}
	}
	committed, err := ce.kc.Committed(ctx, ce.env["KAFKA_GROUP_ID"], ce.topic)
	if err != nil || committed[0] != 0 {
		t.Fatalf("offsets after the reset: %v, %v", committed, err)
	}
}

// deadLetters returns the dead letters of ce by reason.
func deadLetters(t *testing.T, ce *crashEnv) map[string][]kafka.Message {
	t.Helper()
	msgs, err := ce.kc.ReadAll(context.Background(), ce.env["KAFKA_DLQ_TOPIC"])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]kafka.Message{}
	for _, m := range msgs {
		for _, h := range m.Headers {
			if h.Key == wire.HeaderDLQReason {
				out[string(h.Value)] = append(out[string(h.Value)], m)
			}
		}
	}
	return out
}

// TestNeverTwiceOffsets: events delivered and committed, then, after the
// server's dedupe window, read again because the offsets went away or
// moved back: none is shown again; each is committed as already_delivered.
func TestNeverTwiceOffsets(t *testing.T) {
	needBinary(t)
	t.Parallel() // each has its own broker and emulator; most of it is waiting out the window
	for _, tc := range []struct {
		name  string
		extra map[string]string
		// again changes what the second run starts from.
		again func(t *testing.T, ce *crashEnv)
	}{
		{"a new group id at earliest", nil, func(t *testing.T, ce *crashEnv) { ce.env["KAFKA_GROUP_ID"] += "-renamed" }},
		{"a new group id in merge mode", map[string]string{"TIM_MERGE": "on"}, func(t *testing.T, ce *crashEnv) {
			ce.env["KAFKA_GROUP_ID"] += "-renamed"
		}},
		{"offsets reset to the earliest", nil, resetToEarliest},
		{"offsets reset in envelope merge mode", map[string]string{"TIM_MERGE": "envelope"}, resetToEarliest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ce := neverTwiceEnv(t, 2, tc.extra)
			deliverAll(t, ce)
			tc.again(t, ce)
			w := startWorker(t, ce.env)
			addr := waitHTTPAddr(t, w)
			ce.waitCommitted(t, 60*time.Second)
			ce.check(t) // still exactly once: nothing shown again
			if got := metricValue(t, addr, `timbroadcast_records_skipped_total{reason="already_delivered"}`); got != float64(len(ce.want)) {
				t.Errorf("already_delivered %v, want %d\n%s", got, len(ce.want), w.logs.String())
			}
			w.stop(t)
			if !strings.Contains(w.logs.String(), "already delivered (delivered log)") {
				t.Errorf("no info line says why nothing was sent:\n%s", w.logs.String())
			}
			if dl := deadLetters(t, ce); len(dl) != 0 {
				t.Errorf("dead letters %v, want none", dl)
			}
		})
	}
}

// TestNeverTwiceUrgentAndReceipts: the urgent lane's records are
// remembered by their own topic's offsets, and each record not sent again
// gets a receipt saying already_delivered.
func TestNeverTwiceUrgentAndReceipts(t *testing.T) {
	needBinary(t)
	t.Parallel() // each has its own broker and emulator; most of it is waiting out the window
	ce := neverTwiceEnv(t, 2, nil)
	ctx := context.Background()
	urgent := ce.kc.Topic(t, "urgent", 1)
	receipts := ce.kc.Topic(t, "receipts", 1)
	ce.env["KAFKA_URGENT_TOPIC"], ce.env["KAFKA_RECEIPT_TOPIC"] = urgent, receipts
	var msgs []kafka.Message
	for i := range 4 {
		text := fmt.Sprintf("urgent-%d", i)
		v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{sender.Text(text)}})
		msgs = append(msgs, kafka.Message{Key: []byte("u"), Value: v})
		ce.want = append(ce.want, text)
	}
	if err := ce.kc.Produce(ctx, urgent, msgs...); err != nil {
		t.Fatal(err)
	}
	group := ce.env["KAFKA_GROUP_ID"]
	deliverAll(t, ce)
	ce.kc.WaitCommitted(t, group, urgent, 10*time.Second)

	ce.env["KAFKA_GROUP_ID"] += "-renamed"
	w := startWorker(t, ce.env)
	ce.waitCommitted(t, 60*time.Second)
	ce.kc.WaitCommitted(t, ce.env["KAFKA_GROUP_ID"], urgent, 30*time.Second)
	w.stop(t)
	ce.check(t)
	all, err := ce.kc.ReadAll(ctx, receipts)
	if err != nil {
		t.Fatal(err)
	}
	already := map[string]int{} // topic -> already_delivered receipts
	for _, m := range all {
		var r wire.Receipt
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		if r.Outcome == wire.OutcomeAlreadyDelivered {
			already[r.Source.Topic]++
		}
	}
	if already[ce.topic] != 30 || already[urgent] != 4 {
		t.Errorf("already_delivered receipts by topic %v, want 30 of %s and 4 of %s", already, ce.topic, urgent)
	}
}

// TestNeverTwiceLostAnswer: the server takes a call but its answers never
// arrive for longer than the dedupe window. While the worker keeps
// retrying, and when it is killed and comes back after the window, the
// event ends delivered once and dead-lettered outcome_unknown (with the
// time of the first uncertain attempt); the records behind it flow on and
// everything is committed.
func TestNeverTwiceLostAnswer(t *testing.T) {
	needBinary(t)
	t.Parallel()  // each has its own broker and emulator; most of it is waiting out the window
	lost := "a-0" // the first event of key a: its answers are dropped
	check := func(t *testing.T, ce *crashEnv, w *worker) {
		t.Helper()
		ce.waitCommitted(t, 60*time.Second)
		ce.check(t)
		dl := deadLetters(t, ce)
		unknown := dl[sender.ReasonOutcomeUnknown]
		if len(unknown) != 1 || len(dl) != 1 {
			t.Fatalf("dead letters %v, want one outcome_unknown\n%s", dl, w.logs.String())
		}
		var ev struct{ MsgBody []sender.Element }
		if err := json.Unmarshal(unknown[0].Value, &ev); err != nil || !strings.Contains(string(ev.MsgBody[0].MsgContent), lost) {
			t.Errorf("the outcome_unknown dead letter is %s, want %s", unknown[0].Value, lost)
		}
		for _, h := range unknown[0].Headers {
			if h.Key == wire.HeaderDLQInfo && !strings.Contains(string(h.Value), "outcome unknown") {
				t.Errorf("dead letter info %q does not say the outcome is unknown and since when", h.Value)
			}
		}
	}

	t.Run("the worker keeps retrying", func(t *testing.T) {
		t.Parallel()
		ce := neverTwiceEnv(t, 1, nil)
		ce.emu.SetFaults(sendertest.Faults{DropContaining: []string{lost}})
		w := startWorker(t, ce.env)
		check(t, ce, w)
		w.stop(t)
	})

	t.Run("the worker is killed and back after the window", func(t *testing.T) {
		t.Parallel()
		ce := neverTwiceEnv(t, 1, nil)
		ce.emu.SetFaults(sendertest.Faults{DropContaining: []string{lost}})
		w := startWorker(t, ce.env)
		waitFor(t, 30*time.Second, "two lost answers", func() bool { return ce.emu.Stats().ByCode[-1] >= 2 })
		w.kill(t)
		ce.emu.SetFaults(sendertest.Faults{})
		time.Sleep(shortWindow + 500*time.Millisecond)
		w = startWorker(t, ce.env)
		check(t, ce, w)
		w.stop(t)
		if !strings.Contains(w.logs.String(), "unknown outcome (delivered log)") {
			t.Errorf("the second process did not learn of the first one's unknown outcome from the delivered log:\n%s", w.logs.String())
		}
	})
}

// TestNeverTwiceTopicRecreated: a topic deleted and created again under
// its name is new: every one of its records is delivered, although the
// delivered log remembers the old topic's offsets.
func TestNeverTwiceTopicRecreated(t *testing.T) {
	needBinary(t)
	t.Parallel() // each has its own broker and emulator; most of it is waiting out the window
	ce := neverTwiceEnv(t, 2, nil)
	deliverAll(t, ce)
	ctx := context.Background()
	resp, err := ce.kc.Client().DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{ce.topic}})
	if err == nil {
		err = resp.Errors[ce.topic]
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := ce.kc.CreateTopic(ctx, ce.topic, 2); err != nil {
		t.Fatal(err)
	}
	var msgs []kafka.Message
	for i := range 5 {
		for _, k := range []string{"a", "b", "c", "d", "e", "f"} {
			text := fmt.Sprintf("new%s-%d", k, i)
			v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{sender.Text(text)}})
			msgs = append(msgs, kafka.Message{Key: []byte(k), Value: v})
			ce.want = append(ce.want, text)
		}
	}
	if err := ce.kc.Produce(ctx, ce.topic, msgs...); err != nil {
		t.Fatal(err)
	}
	// A new group: what Kafka does with the old group's offsets of a
	// deleted topic is the broker's business; the delivered log's is ours.
	ce.env["KAFKA_GROUP_ID"] += "-after-recreate"
	w := startWorker(t, ce.env)
	addr := waitHTTPAddr(t, w)
	ce.waitCommitted(t, 60*time.Second)
	ce.check(t) // the 30 old ones once, the 30 new ones once
	if got := metricValue(t, addr, `timbroadcast_delivered_log_resets_total{reason="topic_recreated"}`); got < 1 {
		t.Errorf("topic_recreated resets %v, want at least 1", got)
	}
	w.stop(t)
}

// TestForget: an operator who means to show old records again forgets
// them in the delivered log (timbroadcast forget), resets the offsets,
// and they are sent again; the ones not forgotten are not.
func TestForget(t *testing.T) {
	needBinary(t)
	t.Parallel() // each has its own broker and emulator; most of it is waiting out the window
	ce := neverTwiceEnv(t, 1, nil)
	deliverAll(t, ce)
	out, errOut, code := runCmd(t, ce.env, "", "forget", "--from-offset", "25")
	if code != 0 {
		t.Fatalf("forget: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "forgot deliveries of offsets 25 to 29") {
		t.Errorf("forget printed %q", out)
	}
	js, _, code := runCmd(t, ce.env, "", "status", "--json") // exit 1: the group has no member now
	var st struct {
		Partitions []struct {
			Partition int   `json:"partition"`
			Delivered int64 `json:"delivered"`
		} `json:"partitions"`
	}
	if err := json.Unmarshal([]byte(js), &st); code == 2 || err != nil || len(st.Partitions) != 1 || st.Partitions[0].Delivered != 25 {
		t.Errorf("status after forget: exit %d, %v, %s; want partition 0 delivered up to 25", code, err, js)
	}
	resetToEarliest(t, ce)
	w := startWorker(t, ce.env)
	ce.waitCommitted(t, 60*time.Second)
	w.stop(t)
	got := map[string]int{}
	for _, d := range ce.emu.Delivered() {
		for _, el := range d.Elements() {
			var c sender.TextElem
			_ = json.Unmarshal(el.MsgContent, &c)
			got[c.Text]++
		}
	}
	twice := 0
	for _, n := range got {
		if n == 2 {
			twice++
		}
	}
	if twice != 5 || len(got) != len(ce.want) {
		t.Errorf("%d events shown twice, want the 5 forgotten ones (offsets 25 to 29); %d distinct", twice, len(got))
	}
	// By time: nothing was produced after now, so nothing is forgotten.
	out, errOut, code = runCmd(t, ce.env, "", "forget", "--from-time", time.Now().UTC().Format(time.RFC3339), "--dry-run")
	if code != 0 || !strings.Contains(out, "nothing to forget") {
		t.Errorf("forget --from-time now: exit %d, %q %q; want nothing to forget", code, out, errOut)
	}
}

// TestDeliveredLogOff: with KAFKA_DELIVERED_TOPIC=off every start warns
// that a new group or a reset shows events again, and it does: the
// documented cost of turning it off.
func TestDeliveredLogOff(t *testing.T) {
	needBinary(t)
	t.Parallel()
	ce := neverTwiceEnv(t, 1, map[string]string{"KAFKA_DELIVERED_TOPIC": "off"})
	deliverAll(t, ce)
	ce.env["KAFKA_GROUP_ID"] += "-renamed"
	w := startWorker(t, ce.env)
	ce.waitCommitted(t, 60*time.Second)
	w.stop(t)
	if !strings.Contains(w.logs.String(), "KAFKA_DELIVERED_TOPIC=off") {
		t.Errorf("no start warning names KAFKA_DELIVERED_TOPIC=off:\n%.2000s", w.logs.String())
	}
	if n := len(ce.emu.Delivered()); n != 2*len(ce.want) {
		t.Errorf("%d showings, want every event twice (%d) with the log off", n, 2*len(ce.want))
	}
	if _, err := ce.kc.Partitions(context.Background(), ce.topic+".delivered"); err == nil {
		t.Error("the delivered log topic was created although it is off")
	}
}

// waitFor polls cond until it holds, failing t after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
