package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/mapping"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// benchEnv is newEnv for benchmarks (which cannot use *testing.T helpers).
func benchEnv(b *testing.B, partitions int) *env {
	b.Helper()
	kc, err := consumertest.NewFake()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(kc.Close)
	emu := sendertest.NewServer(sendertest.Options{AppID: appID, Admin: admin, SecretKey: key})
	b.Cleanup(emu.Close)
	e := &env{kafka: kc, emu: emu}
	e.topic = fmt.Sprintf("bench-%d", time.Now().UnixNano())
	e.dlq = e.topic + ".dlq"
	e.group = "g-" + e.topic
	for _, tp := range []struct {
		n string
		p int
	}{{e.topic, partitions}, {e.dlq, 1}} {
		if err := kc.CreateTopic(context.Background(), tp.n, tp.p); err != nil {
			b.Fatal(err)
		}
	}
	return e
}

// BenchmarkIdleLatency measures the time from producing a record to an
// idle worker until the API call reaches the emulator, one record at a
// time. It reports p50 and p99 in milliseconds.
//
//	go test -run '^$' -bench IdleLatency -benchtime 200x ./consumer
func BenchmarkIdleLatency(b *testing.B) {
	b.Run("unpaced", func(b *testing.B) { idleLatency(b, 0, nil) })
	// Domain events mapped by a jq program (TIM_MAP).
	prog, err := mapping.Compile(`"\(.user): \(.text)"`)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("unpaced-mapped", func(b *testing.B) { idleLatency(b, 0, prog) })
	// The call schedule at the default rate (1/s): one process owns every
	// partition, so an idle event leaves at once.
	b.Run("schedule-1/s", func(b *testing.B) { idleLatency(b, 1, nil) })
}

// idleLatency measures one record at a time through a worker whose call
// schedule runs at appRate (0: none), spacing records past the rate; with
// prog, records are domain events the program maps.
func idleLatency(b *testing.B, appRate float64, prog *mapping.Program) {
	e := benchEnv(b, 3)
	rw := e.startBenchRate(b, appRate, prog)
	defer rw.cancel()
	w := e.kafka.Writer(e.topic)
	w.BatchTimeout = time.Millisecond
	defer w.Close()
	var lat []time.Duration
	i := 0
	for b.Loop() {
		i++
		n := len(e.emu.Delivered())
		start := time.Now()
		m := textEvent(fmt.Sprintf("k%d", i), fmt.Sprintf("idle-%d", i))
		if prog != nil {
			m.Value = []byte(fmt.Sprintf(`{"type":"notice","user":"u%d","text":"idle-%d","room":"r1","at":"2026-11-25T20:00:00Z"}`, i, i))
		}
		if err := w.WriteMessages(context.Background(), m); err != nil {
			b.Fatal(err)
		}
		var at time.Time
		for {
			d := e.emu.Delivered()
			if len(d) > n {
				at = d[len(d)-1].At
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		lat = append(lat, at.Sub(start))
		if appRate > 0 {
			time.Sleep(time.Duration(float64(time.Second) * 1.1 / appRate)) // idle: past the last call's period
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkDeadLetterThroughput measures records per second through the
// non-sending path: 10,000 malformed records over 3 partitions, each
// dead-lettered (acks=all) and committed.
//
//	go test -run '^$' -bench DeadLetterThroughput -benchtime 1x ./consumer
func BenchmarkDeadLetterThroughput(b *testing.B) {
	const n = 10000
	for b.Loop() {
		e := benchEnv(b, 3)
		var msgs []kafka.Message
		for i := range n {
			msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(`{"MsgBody": "not an array"}`)})
		}
		if err := e.kafka.Produce(context.Background(), e.topic, msgs...); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		rw := e.startBench(b)
		e.kafka.WaitCommitted(b, e.group, e.topic, time.Hour)
		elapsed := time.Since(start)
		rw.cancel()
		<-rw.done
		b.ReportMetric(n/elapsed.Seconds(), "records/s")
	}
}

// BenchmarkAlreadyDelivered measures how fast a new group (or offsets
// reset to the earliest) passes over records the delivered log says were
// delivered: 10,000 events over 3 partitions are delivered by one group,
// then a second group reads them all again and commits each as
// already_delivered without sending. It reports records/s of the second
// pass and checks that nothing was sent again.
//
//	go test -run '^$' -bench AlreadyDelivered -benchtime 1x ./consumer
func BenchmarkAlreadyDelivered(b *testing.B) {
	const n = 10000
	for b.Loop() {
		e := benchEnv(b, 3)
		var msgs []kafka.Message
		for i := range n {
			msgs = append(msgs, textEvent(fmt.Sprintf("k%d", i), fmt.Sprintf("event-%d", i)))
		}
		if err := e.kafka.Produce(context.Background(), e.topic, msgs...); err != nil {
			b.Fatal(err)
		}
		first := e.startBench(b)
		e.kafka.WaitCommitted(b, e.group, e.topic, time.Hour)
		first.cancel()
		<-first.done
		sent := len(e.emu.Delivered())
		e.group += "-again"
		start := time.Now()
		again := e.startBench(b)
		e.kafka.WaitCommitted(b, e.group, e.topic, time.Hour)
		elapsed := time.Since(start)
		again.cancel()
		<-again.done
		if got := len(e.emu.Delivered()); got != sent {
			b.Fatalf("the second group sent %d events again", got-sent)
		}
		b.ReportMetric(n/elapsed.Seconds(), "records/s")
	}
}

// startBench starts a worker with production defaults except pacing.
func (e *env) startBench(b *testing.B) *runningWorker { return e.startBenchRate(b, 0, nil) }

// startBenchRate starts a worker with production defaults, paced by the
// call schedule at appRate (0: unpaced), mapping records with prog (nil:
// none).
func (e *env) startBenchRate(b *testing.B, appRate float64, prog *mapping.Program) *runningWorker {
	b.Helper()
	scfg := sender.Config{AppID: appID, Admin: admin, SecretKey: key, Endpoints: []string{e.emu.URL}, Rate: sender.Unlimited}
	if appRate > 0 {
		scfg.Rate = appRate
	}
	client, err := sender.New(scfg)
	if err != nil {
		b.Fatal(err)
	}
	w, err := newBenchWorkerRate(e, client, appRate, prog)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{w: w, cancel: cancel, done: make(chan error, 1)}
	go func() { rw.done <- w.Run(ctx) }()
	return rw
}

// newBenchWorkerRate returns a worker with production defaults, paced by
// the call schedule at appRate (0: none).
func newBenchWorkerRate(e *env, s consumer.Sender, appRate float64, prog *mapping.Program) (*consumer.Worker, error) {
	return consumer.New(consumer.Config{Brokers: e.kafka.Brokers, Topic: e.topic, GroupID: e.group, DLQTopic: e.dlq, AppRate: appRate,
		Map: prog}, s)
}

// BenchmarkMergeBacklog drains a backlog of 10,000 text events of about
// 200 bytes in merge mode. The API allows 1 call/s; to finish in seconds
// the emulator and worker run at 50 calls/s, and events/s is also reported
// scaled to 1 call/s (events per call × 1). The lower bound of calls is the
// events' total element bytes / 12,000, rounded up; packing efficiency is
// the mean request body over the 12,000-byte limit. It runs twice: on the
// in-process broker as it is, and with every Fetch answered 30 ms late, as
// a remote broker would (what a partition reads ahead must cover that).
//
//	go test -run '^$' -bench MergeBacklog -benchtime 1x ./consumer
func BenchmarkMergeBacklog(b *testing.B) {
	for _, rtt := range []time.Duration{0, 30 * time.Millisecond} {
		b.Run(fmt.Sprintf("fetch-latency-%s", rtt), func(b *testing.B) { mergeBacklog(b, rtt) })
	}
}

// mergeBacklog drains the backlog with every Fetch answered latency late
// (a remote broker), so that a partition's read-ahead shows.
func mergeBacklog(b *testing.B, latency time.Duration) {
	const n, rateCPS = 10000, 50.0
	for b.Loop() {
		e := benchEnv(b, 1)
		if latency > 0 {
			fake := e.kafka.Fake
			fake.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
				fake.KeepControl()
				fake.SleepControl(func() { time.Sleep(latency) })
				return nil, nil, false
			})
		}
		var msgs []kafka.Message
		elementBytes := 0
		for i := range n {
			text := fmt.Sprintf("announcement %05d: %s", i, strings.Repeat("lorem ipsum ", 14))
			el, _ := json.Marshal(sender.Text(text))
			elementBytes += len(el) + 1 // and its comma in MsgBody
			m := textEvent(fmt.Sprintf("k%d", i%6), text)
			msgs = append(msgs, m)
		}
		if err := e.kafka.Produce(context.Background(), e.topic, msgs...); err != nil {
			b.Fatal(err)
		}
		scfg := sender.Config{AppID: appID, Admin: admin, SecretKey: key, Endpoints: []string{e.emu.URL}, Rate: rateCPS}
		client, err := sender.New(scfg)
		if err != nil {
			b.Fatal(err)
		}
		w, err := consumer.New(consumer.Config{Brokers: e.kafka.Brokers, Topic: e.topic, GroupID: e.group, DLQTopic: e.dlq, Merge: true}, client)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- w.Run(ctx) }()
		for e.emu.Stats().Elements < n {
			time.Sleep(5 * time.Millisecond)
		}
		elapsed := time.Since(start)
		cancel()
		<-done
		st := e.emu.Stats()
		lower := (elementBytes + sender.MaxBodyBytes - 1) / sender.MaxBodyBytes
		b.ReportMetric(float64(st.Delivered), "calls")
		b.ReportMetric(float64(lower), "lower-bound-calls")
		b.ReportMetric(float64(st.Bytes)/float64(st.Delivered)/sender.MaxBodyBytes*100, "packing-%")
		b.ReportMetric(float64(n)/elapsed.Seconds(), "events/s@50cps")
		b.ReportMetric(float64(n)/float64(st.Delivered), "events/s@1cps")
		b.ReportMetric(float64(st.Elements), "events-delivered")
	}
}
