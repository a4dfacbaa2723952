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

// TestUrgentLane: a bulk backlog of 1,000 events over 6 partitions and 6
// urgent events produced 2.5 s apart (the benchmark: 10, 3 s apart), against the emulator's limit of 1
// call/s: every urgent event overtakes the backlog (sent within 3 s of
// being produced; dealt a slot among the eight backlogged partitions it
// would wait up to 8 s), nothing is lost or shown twice in either topic,
// and bulk keeps most of the rate the urgent calls leave. Three replicas;
// then one process with merge on. How fast, as a distribution, is
// BenchmarkUrgentLane.
func TestUrgentLane(t *testing.T) {
	for _, c := range urgentCases {
		t.Run(c.name, func(t *testing.T) {
			r := urgentLane(t, c.replicas, c.env(), 6, 2500*time.Millisecond)
			if r.max() > 3*time.Second {
				t.Errorf("an urgent event waited %v, want at most 3s", r.max())
			}
			if r.bulkShare() < 0.7 {
				t.Errorf("bulk made %d calls of %.0f available, want at least 70%%", r.bulkCalls, r.available)
			}
			if r.limited > 3 {
				t.Errorf("%d calls answered 10023", r.limited)
			}
		})
	}
}

// BenchmarkUrgentLane reports the produce-to-call delay of urgent events
// over a bulk backlog (median and max, ms) and the part of the remaining
// rate bulk kept, for the cases of TestUrgentLane:
//
//	go test -run '^$' -bench UrgentLane -benchtime 1x ./cmd/timbroadcast
func BenchmarkUrgentLane(b *testing.B) {
	for _, c := range urgentCases {
		b.Run(c.name, func(b *testing.B) {
			var r urgentResult
			for range b.N {
				r = urgentLane(b, c.replicas, c.env(), 10, 3*time.Second)
			}
			b.ReportMetric(float64(r.delays[len(r.delays)/2].Milliseconds()), "median-ms")
			b.ReportMetric(float64(r.max().Milliseconds()), "max-ms")
			b.ReportMetric(100*r.bulkShare(), "%bulk")
			b.ReportMetric(0, "ns/op")
		})
	}
}

var urgentCases = []struct {
	name     string
	replicas int
	env      func() map[string]string
}{
	{"3 replicas", 3, func() map[string]string { return map[string]string{} }},
	{"1 process, merge", 1, func() map[string]string { return map[string]string{"TIM_MERGE": "on"} }},
}

// urgentResult is what one urgent-lane run measured.
type urgentResult struct {
	delays    []time.Duration // produce-to-call delay of each urgent event, sorted
	bulkCalls int             // bulk calls made meanwhile
	available float64         // calls the rate allowed, less the urgent ones
	limited   int             // calls answered 10023
}

func (r urgentResult) max() time.Duration { return r.delays[len(r.delays)-1] }

func (r urgentResult) bulkShare() float64 { return float64(r.bulkCalls) / r.available }

// urgentLane produces events urgent events gap apart over a bulk backlog
// and measures them.
func urgentLane(t testing.TB, replicas int, extra map[string]string, events int, gap time.Duration) urgentResult {
	t.Helper()
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
	for i := range events {
		text := fmt.Sprintf("urgent-%d", i)
		v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{sender.Text(text)}})
		produced[text] = time.Now()
		if err := w.WriteMessages(context.Background(), kafka.Message{Key: []byte(text), Value: v}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(gap)
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
	r := urgentResult{
		delays:    delays,
		bulkCalls: (end.Delivered - start.Delivered) - len(urgentCalls),
		available: span.Seconds()*1 - float64(len(urgentCalls)),
		limited:   end.ByCode[10023] - start.ByCode[10023],
	}
	t.Logf("urgent produce-to-call delay over %d events: min %v, median %v, max %v; bulk %d calls of %.0f available (%.0f%%); %d answered 10023",
		len(delays), delays[0].Round(time.Millisecond), delays[len(delays)/2].Round(time.Millisecond),
		r.max().Round(time.Millisecond), r.bulkCalls, r.available, 100*r.bulkShare(), r.limited)
	return r
}
