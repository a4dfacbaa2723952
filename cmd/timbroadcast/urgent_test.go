package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// TestUrgentLane: a bulk backlog of 1,000 events over 6 partitions and 10
// urgent events produced 3 s apart, against the emulator's limit of 1
// call/s: every urgent event is sent within 2 s of being produced, nothing
// is lost or shown twice in either topic, and bulk keeps at least 85% of
// the rate the urgent calls leave. Three replicas; then one process with
// merge on. The log lines are the urgent delay distribution:
//
//	go test -run TestUrgentLane -v ./cmd/timbroadcast
func TestUrgentLane(t *testing.T) {
	t.Run("3 replicas", func(t *testing.T) { urgentLane(t, 3, map[string]string{}) })
	t.Run("1 process, merge", func(t *testing.T) { urgentLane(t, 1, map[string]string{"TIM_MERGE": "on"}) })
}

func urgentLane(t *testing.T, replicas int, extra map[string]string) {
	extra["TIM_RATE"] = "1"
	ce := replicaEnvWith(t, 6, 0, sendertest.Options{Rate: 1}, 60, extra)
	// Bulk events of about 2 KB: merged, five or six fill a call, so the
	// backlog outlasts the run in merge mode too.
	var bulk []kafka.Message
	for i := range 1000 {
		k := fmt.Sprintf("key%02d", i%60)
		v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{sender.Text(fmt.Sprintf("%s-%d|%s", k, i/60, strings.Repeat("b", 2000)))}})
		bulk = append(bulk, kafka.Message{Key: []byte(k), Value: v})
	}
	if err := ce.kc.Produce(context.Background(), ce.topic, bulk...); err != nil {
		t.Fatal(err)
	}
	urgentTopic := ce.kc.Topic(t, "urgent", 2)
	ce.env["KAFKA_URGENT_TOPIC"] = urgentTopic
	workers, _ := startReplicas(t, ce.env, replicas)
	for ce.emu.Stats().Delivered < 3 { // the bulk backlog is flowing
		time.Sleep(50 * time.Millisecond)
	}
	start := ce.emu.Stats()
	startAt := time.Now()
	produced := map[string]time.Time{}
	w := ce.kc.Writer(urgentTopic)
	w.BatchTimeout = time.Millisecond
	for i := range 10 {
		text := fmt.Sprintf("urgent-%d", i)
		v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{sender.Text(text)}})
		produced[text] = time.Now()
		if err := w.WriteMessages(context.Background(), kafka.Message{Key: []byte(text), Value: v}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
	}
	_ = w.Close()
	time.Sleep(2 * time.Second)
	end := ce.emu.Stats()
	span := time.Since(startAt)
	for _, wk := range workers {
		_ = wk.cmd.Process.Signal(syscall.SIGTERM)
		<-wk.done
	}

	var delays []time.Duration
	urgentCalls := map[uint64]bool{}
	for _, d := range ce.emu.Delivered() {
		for _, el := range d.Elements() {
			var c sender.TextElem
			_ = json.Unmarshal(el.MsgContent, &c)
			if at, ok := produced[c.Text]; ok {
				delays = append(delays, d.At.Sub(at))
				urgentCalls[d.MsgSeq] = true
			}
		}
	}
	noneTwice(t, ce.emu)
	if len(delays) != len(produced) {
		t.Fatalf("%d of %d urgent events delivered", len(delays), len(produced))
	}
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	bulkCalls := (end.Delivered - start.Delivered) - len(urgentCalls)
	available := span.Seconds()*1 - float64(len(urgentCalls))
	t.Logf("urgent produce-to-call delay over %d events: min %v, median %v, max %v; bulk %d calls of %.0f available (%.0f%%)",
		len(delays), delays[0].Round(time.Millisecond), delays[len(delays)/2].Round(time.Millisecond),
		delays[len(delays)-1].Round(time.Millisecond), bulkCalls, available, 100*float64(bulkCalls)/available)
	if delays[len(delays)-1] > 2*time.Second {
		t.Errorf("an urgent event waited %v, want at most 2s", delays[len(delays)-1])
	}
	if float64(bulkCalls) < 0.85*available {
		t.Errorf("bulk made %d calls of %.0f available, want at least 85%%", bulkCalls, available)
	}
	if limited := end.ByCode[10023] - start.ByCode[10023]; limited > 1 {
		t.Errorf("%d calls answered 10023", limited)
	}
}
