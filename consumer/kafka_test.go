package consumer_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/metrics"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/dedupe"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// Tests of the Kafka that production runs: transactions, retention,
// truncation, growing topics, poison dead letters, resumes that meet
// errors. All on kfake, which implements each of these.

// txClient is a transactional franz-go producer (tests only: the product
// speaks kafka-go).
func txClient(t *testing.T, brokers []string, topic, id string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID(id), kgo.DefaultProduceTopic(topic),
		kgo.TransactionTimeout(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// txProduce produces texts "<prefix>-<i>" (key "k") in one transaction and
// ends it as told; with end nil the transaction stays open.
func txProduce(t *testing.T, cl *kgo.Client, prefix string, n int, end *kgo.TransactionEndTry) []string {
	t.Helper()
	ctx := context.Background()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	var texts []string
	for i := range n {
		text := fmt.Sprintf("%s-%d", prefix, i)
		m := textEvent("k", text)
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: m.Key, Value: m.Value}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		texts = append(texts, text)
	}
	if end != nil {
		if err := cl.EndTransaction(ctx, *end); err != nil {
			t.Fatal(err)
		}
	}
	return texts
}

func TestTransactionsReadCommitted(t *testing.T) {
	for _, merge := range []bool{false, true} {
		t.Run(fmt.Sprintf("merge=%v", merge), func(t *testing.T) {
			kc := consumertest.StartFake(t)
			e := newEnv(t, kc, 1, sendertest.Options{})
			cl := txClient(t, kc.Brokers, e.topic, "tx-"+e.topic)
			commit, abort := kgo.TryCommit, kgo.TryAbort
			a := txProduce(t, cl, "committed", 5, &commit)
			txProduce(t, cl, "aborted", 5, &abort)
			open := txProduce(t, cl, "open", 3, nil)

			e.start(func(c *consumer.Config, _ *sender.Config) { c.Merge = merge })
			waitFor(t, 30*time.Second, "the committed transaction", func() bool { return len(deliveredTexts(e.emu)) >= len(a) })
			time.Sleep(500 * time.Millisecond) // time to (wrongly) send more
			checkExactlyOnce(t, deliveredTexts(e.emu), a)

			if err := cl.EndTransaction(context.Background(), kgo.TryCommit); err != nil {
				t.Fatal(err)
			}
			want := append(append([]string(nil), a...), open...)
			e.waitCommitted(30 * time.Second)
			waitFor(t, 30*time.Second, "the transaction committed later", func() bool { return len(deliveredTexts(e.emu)) >= len(want) })
			checkExactlyOnce(t, deliveredTexts(e.emu), want)
			if dl, err := kc.ReadAll(context.Background(), e.dlq); err != nil || len(dl) != 0 {
				t.Errorf("%d dead letters (%v): transaction markers must never be dead-lettered", len(dl), err)
			}
		})
	}
}

// commitStandalone commits an offset for the group without membership.
func commitStandalone(t *testing.T, e *env, partition int, offset int64, meta string) {
	t.Helper()
	resp, err := e.kafka.Client().OffsetCommit(context.Background(), &kafka.OffsetCommitRequest{
		GroupID: e.group, GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{e.topic: {{Partition: partition, Offset: offset, Metadata: meta}}},
	})
	if err == nil {
		for _, p := range resp.Topics[e.topic] {
			err = p.Error
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

func withMetrics(reg *prometheus.Registry) func(*consumer.Config, *sender.Config) {
	return func(c *consumer.Config, _ *sender.Config) { c.Metrics = metrics.New(reg) }
}

func skipped(reg *prometheus.Registry, reason string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "timbroadcast_records_skipped_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestRetentionBelowCommitted(t *testing.T) {
	kc := consumertest.StartFake(t)
	e := newEnv(t, kc, 1, sendertest.Options{})
	all := e.produceKeyed([]string{"k"}, 10)
	// Records 0..5 are deleted (retention, DeleteRecords) while the group's
	// committed offset is 2.
	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDeleteRecordsRequest()
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = e.topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = 0, 6
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("delete records: %v %+v", err, resp)
	}
	commitStandalone(t, e, 0, 2, "")

	reg := prometheus.NewRegistry()
	rw := e.start(withMetrics(reg))
	e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), all[6:])
	if got := skipped(reg, "retention"); got != 4 {
		t.Errorf("records_skipped_total{reason=retention} = %v, want 4 (offsets 2..5)", got)
	}
	if _, why := rw.w.Ready(); !strings.Contains(why, "offsets 2..5 were deleted before delivery") {
		t.Errorf("/readyz says %q, want the skipped range", why)
	}
}

func TestCommittedBeyondLogEnd(t *testing.T) {
	kc := consumertest.StartFake(t)
	e := newEnv(t, kc, 1, sendertest.Options{})
	e.produceKeyed([]string{"old"}, 3)
	commitStandalone(t, e, 0, 50, "") // a manual reset, or a truncated log
	reg := prometheus.NewRegistry()
	rw := e.start(withMetrics(reg))
	waitFor(t, 30*time.Second, "the truncation noted", func() bool {
		_, why := rw.w.Ready()
		return strings.Contains(why, "beyond the log end 3")
	})
	want := e.produceKeyed([]string{"new"}, 2)
	e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
	if got := skipped(reg, "log_truncated"); got != 47 {
		t.Errorf("records_skipped_total{reason=log_truncated} = %v, want 47", got)
	}
}

// TestPoisonDeadLetterTooLarge: a record whose dead-letter copy is larger
// than the writer allows is dead-lettered as a truncated copy that says
// so; the partition moves on.
func TestPoisonDeadLetterTooLarge(t *testing.T) {
	kc := consumertest.StartFake(t)
	e := newEnv(t, kc, 1, sendertest.Options{})
	poison := []byte(strings.Repeat("x", 1_048_400)) // fits the topic; with the dead-letter headers, not the writer
	w := kc.Writer(e.topic)
	w.BatchBytes = 4 << 20
	if err := w.WriteMessages(context.Background(), kafka.Message{Key: []byte("k"), Value: poison}); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	want := e.produceKeyed([]string{"k"}, 2)
	e.start(nil)
	e.waitCommitted(60 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
	dl, err := kc.ReadAll(context.Background(), e.dlq)
	if err != nil || len(dl) != 1 {
		t.Fatalf("%d dead letters, %v", len(dl), err)
	}
	sum := sha256.Sum256(poison)
	if wire.Header(dl[0], wire.HeaderDLQTruncated) == "" || wire.Header(dl[0], wire.HeaderDLQOriginalSize) != strconv.Itoa(len(poison)) ||
		wire.Header(dl[0], wire.HeaderDLQOriginalSHA256) != hex.EncodeToString(sum[:]) || wire.Header(dl[0], wire.HeaderDLQReason) != "invalid_json" {
		t.Errorf("dead letter headers %v", dl[0].Headers)
	}
	if len(dl[0].Value) != wire.TruncatedValueBytes {
		t.Errorf("dead letter value of %d bytes, want %d", len(dl[0].Value), wire.TruncatedValueBytes)
	}
}

// batchRandom is the Random of a merged call of msgs (what the worker
// records in flight).
func batchRandom(t *testing.T, topic string, msgs []kafka.Message) uint32 {
	t.Helper()
	var rs []uint32
	for i, m := range msgs {
		ev, err := wire.DecodeEvent(wire.Record{Topic: topic, Offset: int64(i), Key: m.Key, Value: m.Value})
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, ev.Message.Random)
	}
	return dedupe.BatchRandom(rs)
}

// TestResumeAfterOffsetFetchErrors: the committed offset's metadata
// records a merged call in flight; the first reads of it fail with a
// group-level error. The worker retries and resends exactly that call
// (same Random), instead of taking the error as "nothing in flight".
func TestResumeAfterOffsetFetchErrors(t *testing.T) {
	kc := consumertest.StartFake(t)
	e := newEnv(t, kc, 1, sendertest.Options{})
	var msgs []kafka.Message
	var want []string
	for i := range 6 {
		text := fmt.Sprintf("k-%d", i)
		msgs = append(msgs, textEvent("k", text))
		want = append(want, text)
	}
	if err := kc.Produce(context.Background(), e.topic, msgs...); err != nil {
		t.Fatal(err)
	}
	random := batchRandom(t, e.topic, msgs[:3])
	commitStandalone(t, e, 0, 0, wire.InFlight{Last: 2, Random: random}.String())

	var failed atomic.Int32
	kc.Fake.ControlKey(int16(kmsg.OffsetFetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		kc.Fake.KeepControl()
		if failed.Add(1) > 4 {
			kc.Fake.DropControl()
			return nil, nil, false
		}
		r := req.(*kmsg.OffsetFetchRequest)
		resp := r.ResponseKind().(*kmsg.OffsetFetchResponse)
		resp.ErrorCode = 14 // COORDINATOR_LOAD_IN_PROGRESS
		for _, tp := range r.Topics {
			rt := kmsg.NewOffsetFetchResponseTopic()
			rt.Topic = tp.Topic
			for _, p := range tp.Partitions {
				rp := kmsg.NewOffsetFetchResponseTopicPartition()
				rp.Partition, rp.Offset, rp.ErrorCode = p, -1, 14
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
	e.start(func(c *consumer.Config, _ *sender.Config) { c.Merge = true })
	e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredEvents(e.emu), want)
	d := e.emu.Delivered()
	if len(d) == 0 || d[0].Random != random || len(d[0].Elements()) != 3 {
		t.Fatalf("first call Random %d with %d events; want the recorded call %d of 3", d[0].Random, len(d[0].Elements()), random)
	}
	if failed.Load() < 4 {
		t.Errorf("only %d offset fetches failed: the fault was not exercised", failed.Load())
	}
}

// TestResumeCannotRebuild: the recorded call does not match its records
// (changed, or compacted away): the worker sends the surviving records one
// by one and goes on; it never stops the partition or the group.
func TestResumeCannotRebuild(t *testing.T) {
	for _, tt := range []struct {
		name string
		rec  wire.InFlight
	}{
		{"records changed", wire.InFlight{Last: 2, Random: 12345}},
		{"records compacted away", wire.InFlight{Last: 40, Random: 12345}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kc := consumertest.StartFake(t)
			e := newEnv(t, kc, 1, sendertest.Options{})
			want := e.produceKeyed([]string{"k"}, 6)
			commitStandalone(t, e, 0, 0, tt.rec.String())
			e.start(func(c *consumer.Config, _ *sender.Config) { c.Merge = true })
			e.waitCommitted(30 * time.Second)
			checkExactlyOnce(t, deliveredEvents(e.emu), want)
		})
	}
}

// TestPartitionsAdded: partitions added to the topic while the worker runs
// are consumed within a bounded time.
func TestPartitionsAdded(t *testing.T) {
	kc := consumertest.StartFake(t)
	e := newEnv(t, kc, 2, sendertest.Options{})
	e.start(func(c *consumer.Config, _ *sender.Config) { c.PartitionWatchInterval = 200 * time.Millisecond })
	waitFor(t, 30*time.Second, "joined", func() bool { r, _ := e.workers[0].w.Ready(); return r })
	resp, err := kc.Client().CreatePartitions(context.Background(), &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: e.topic, Count: 4}},
	})
	if err != nil || resp.Errors[e.topic] != nil {
		t.Fatalf("create partitions: %v %v", err, resp)
	}
	w := kc.Writer(e.topic)
	w.Balancer = kafka.BalancerFunc(func(m kafka.Message, parts ...int) int { return m.Partition })
	var msgs []kafka.Message
	var want []string
	for p := 2; p < 4; p++ {
		for i := range 3 {
			m := textEvent(fmt.Sprintf("p%d", p), fmt.Sprintf("p%d-%d", p, i))
			m.Partition = p
			msgs = append(msgs, m)
			want = append(want, fmt.Sprintf("p%d-%d", p, i))
		}
	}
	// The producer learns of the new partitions at its next metadata
	// refresh: retry until it has.
	waitFor(t, 30*time.Second, "the new partitions writable", func() bool {
		return w.WriteMessages(context.Background(), msgs...) == nil
	})
	_ = w.Close()
	waitFor(t, 30*time.Second, "events of the new partitions", func() bool { return len(e.emu.Delivered()) >= len(want) })
	e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
}

// TestLatestCommitsItsStart: with KAFKA_START_OFFSET=latest, records
// produced after a partition was first assigned are delivered even when
// its first owner stopped before delivering anything.
func TestLatestCommitsItsStart(t *testing.T) {
	kc := consumertest.StartFake(t)
	e := newEnv(t, kc, 1, sendertest.Options{})
	e.produceKeyed([]string{"before"}, 3) // older than the worker: not for it
	latest := func(c *consumer.Config, _ *sender.Config) { c.StartOffset = kafka.LastOffset }
	first := e.start(latest)
	waitFor(t, 30*time.Second, "the start offset committed", func() bool {
		got, err := kc.Committed(context.Background(), e.group, e.topic)
		return err == nil && got[0] == 3
	})
	first.stop(t)
	want := e.produceKeyed([]string{"during"}, 2) // nobody consumes now
	e.start(latest)
	e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
}

// TestCompressedBatches: every codec reaches the new fetch path.
func TestCompressedBatches(t *testing.T) {
	kc := consumertest.StartFake(t)
	e := newEnv(t, kc, 1, sendertest.Options{})
	var want []string
	for _, codec := range []kafka.Compression{kafka.Gzip, kafka.Snappy, kafka.Lz4, kafka.Zstd} {
		w := kc.Writer(e.topic)
		w.Compression = codec
		var msgs []kafka.Message
		for i := range 5 {
			text := fmt.Sprintf("%s-%d", codec, i)
			msgs = append(msgs, textEvent("k", text))
			want = append(want, text)
		}
		if err := w.WriteMessages(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
		_ = w.Close()
	}
	e.start(nil)
	e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
}

// TestLeadersMove: on three brokers whose partition leaders all move five
// times while a backlog is delivered (the source, dead-letter, receipt,
// claims and delivered logs' partitions alike), every event has one
// receipt, each good one is delivered once, the malformed ones are
// dead-lettered, and all is committed. The transport keeps its metadata for
// minutes (kafkaconn.MetadataTTL): a request that meets a moved leader
// reads it again at once, or this stalls until the timed refresh.
func TestLeadersMove(t *testing.T) {
	kc := consumertest.StartFake(t, kfake.NumBrokers(3))
	e := newEnv(t, kc, 6, sendertest.Options{})
	receipts := kc.Topic(t, "receipts", 2)
	if err := kc.Produce(context.Background(), e.topic, receiptEvents(80)...); err != nil {
		t.Fatal(err)
	}
	e.start(func(c *consumer.Config, s *sender.Config) {
		c.ReceiptTopic = receipts
		s.Rate = 25
	})
	waitFor(t, 30*time.Second, "first deliveries", func() bool { return e.emu.Stats().Delivered > 5 })
	for range 5 {
		kc.Fake.ShufflePartitionLeaders()
		time.Sleep(300 * time.Millisecond)
	}
	e.waitCommitted(60 * time.Second)
	c := checkReceiptTopic(t, e, receipts, true)
	if c.Events != 80 || c.DeadLettered != 11 {
		t.Errorf("counts %+v: want 80 events, the 11 malformed dead-lettered", c)
	}
}
