package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// receiptEvents makes n events over keys, each with a traceparent: texts,
// every 7th malformed, every 11th with a word moderation blocks.
func receiptEvents(n int) []kafka.Message {
	var msgs []kafka.Message
	for i := range n {
		k := keys[i%len(keys)]
		m := textEvent(k, fmt.Sprintf("%s-%d", k, i))
		switch {
		case i%7 == 6:
			m.Value = []byte(`{"MsgBody":[],"Priorty":1}`)
		case i%11 == 10:
			m = textEvent(k, fmt.Sprintf("%s-%d forbidden", k, i))
		}
		m.Headers = []kafka.Header{{Key: "traceparent", Value: []byte(fmt.Sprintf("00-%032x-%016x-01", i+1, i+1))}}
		msgs = append(msgs, m)
	}
	return msgs
}

// TestReceiptsMixedRun: delivered, merged, retried, rejected inside a
// merged call (split), malformed: every event has exactly one receipt,
// matching the emulator's call (Random, MsgSeq) or its dead-letter record.
func TestReceiptsMixedRun(t *testing.T) {
	for _, merge := range []bool{false, true} {
		t.Run(fmt.Sprintf("merge=%v", merge), func(t *testing.T) {
			kc := consumertest.Start(t)
			e := newEnv(t, kc, 3, sendertest.Options{Faults: sendertest.Faults{
				Blocked: []string{"forbidden"}, Answers: map[int]float64{10002: 0.2}}})
			receipts := kc.Topic(t, "receipts", 2)
			if err := kc.Produce(context.Background(), e.topic, receiptEvents(80)...); err != nil {
				t.Fatal(err)
			}
			e.start(func(c *consumer.Config, s *sender.Config) {
				c.ReceiptTopic, c.Merge = receipts, merge
				s.Rate = 100 // slow enough for events to wait and merge
			})
			e.waitCommitted(60 * time.Second)
			c := checkReceiptTopic(t, e, receipts, true)
			t.Logf("%+v", c)
			if c.Events != 80 || c.DeadLettered != 11+7-1 || c.Retried == 0 || (merge && c.Merged == 0) {
				t.Errorf("counts %+v: want 80 events, 17 dead-lettered (11 malformed, 7 blocked, one both), some retried, some merged in merge mode", c)
			}
		})
	}
}

// checkReceiptTopic reads the source, receipt and dead-letter topics and
// checks the receipts against them and the emulator.
func checkReceiptTopic(t *testing.T, e *env, receipts string, exact bool) consumertest.ReceiptCounts {
	t.Helper()
	ctx := context.Background()
	src, err := e.kafka.ReadAll(ctx, e.topic)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := e.kafka.ReadAll(ctx, receipts)
	if err != nil {
		t.Fatal(err)
	}
	dl, err := e.kafka.ReadAll(ctx, e.dlq)
	if err != nil {
		t.Fatal(err)
	}
	return consumertest.CheckReceipts(t, src, rs, e.emu.Delivered(), dl, exact)
}

// refuseProduce makes the kfake broker answer produce requests to topic
// with NOT_ENOUGH_REPLICAS while refuse is set.
func refuseProduce(kc *consumertest.Cluster, topic string, refuse *atomic.Bool, refused *atomic.Int64) {
	kc.Fake.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		kc.Fake.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		if !refuse.Load() || len(pr.Topics) != 1 || pr.Topics[0].Topic != topic {
			return nil, nil, false
		}
		refused.Add(1)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = 19 // NOT_ENOUGH_REPLICAS
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
}

// TestReceiptTopicRefusingWrites: a receipt topic that refuses writes
// holds the partition (stuck in Ready, nothing committed); a worker
// stopped meanwhile leaves the call recorded as delivered, and the next
// one writes the receipt without calling the API again.
func TestReceiptTopicRefusingWrites(t *testing.T) {
	kc := consumertest.StartFake(t)
	e := newEnv(t, kc, 1, sendertest.Options{})
	receipts := kc.Topic(t, "receipts", 1)
	var refuse atomic.Bool
	var refused atomic.Int64
	refuse.Store(true)
	refuseProduce(kc, receipts, &refuse, &refused)
	want := e.produceKeyed([]string{"k"}, 1)
	cfg := func(c *consumer.Config, _ *sender.Config) {
		c.ReceiptTopic, c.StuckAfter, c.DrainTimeout = receipts, 300*time.Millisecond, 300*time.Millisecond
	}
	rw := e.start(cfg)
	waitFor(t, 30*time.Second, "stuck on the receipt write", func() bool {
		ready, why := rw.w.Ready()
		return !ready && strings.Contains(why, "stuck on offset 0") && strings.Contains(why, "receipt write")
	})
	if n := len(e.emu.Delivered()); n != 1 {
		t.Fatalf("%d deliveries before the receipt, want 1", n)
	}
	committed, err := kc.Committed(context.Background(), e.group, e.topic)
	if err != nil {
		t.Fatal(err)
	}
	if committed[0] != 0 {
		t.Errorf("committed offset %d while its receipt is refused, want 0", committed[0])
	}
	rw.stop(t)
	refuse.Store(false)
	e.start(cfg)
	e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
	if calls := e.emu.Stats().Calls; calls != 1 {
		t.Errorf("%d API calls, want 1: the next owner must write the receipt of a delivered call without calling again", calls)
	}
	if refused.Load() == 0 {
		t.Error("no receipt write was refused")
	}
	checkReceiptTopic(t, e, receipts, true)
}

// TestReceiptsCopyTraceHeaders: a receipt carries the event's
// traceparent and tracestate, not its other headers; with tracing off the
// event's log lines (a dead letter's too) carry the trace_id of its
// traceparent.
func TestReceiptsCopyTraceHeaders(t *testing.T) {
	kc := consumertest.Start(t)
	e := newEnv(t, kc, 1, sendertest.Options{})
	receipts := kc.Topic(t, "receipts", 1)
	m := textEvent("k", "hello")
	m.Headers = []kafka.Header{{Key: "traceparent", Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")},
		{Key: "tracestate", Value: []byte("v=1")}, {Key: "x-tenant", Value: []byte("a")}}
	bad := kafka.Message{Key: []byte("bad"), Value: []byte("{"),
		Headers: []kafka.Header{{Key: "traceparent", Value: []byte("00-11111111111111111111111111111111-2222222222222222-01")}}}
	if err := kc.Produce(context.Background(), e.topic, m, bad); err != nil {
		t.Fatal(err)
	}
	var logs consumertest.SyncBuffer
	e.start(func(c *consumer.Config, _ *sender.Config) {
		c.ReceiptTopic = receipts
		c.Logger = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&logs), zap.DebugLevel))
	})
	e.waitCommitted(30 * time.Second)
	rs, err := kc.ReadAll(context.Background(), receipts)
	if err != nil || len(rs) != 2 {
		t.Fatalf("%d receipts, %v", len(rs), err)
	}
	if wire.Header(rs[0], "x-tenant") != "" || wire.Header(rs[0], "tracestate") != "v=1" ||
		wire.Header(rs[0], wire.HeaderReceiptSchema) != wire.ReceiptSchema {
		t.Errorf("receipt headers %v", rs[0].Headers)
	}
	for _, want := range []string{`"offset":0,"random":\d+,"trace_id":"0af7651916cd43dd8448eb211c80319c"`, `"offset":1,"trace_id":"11111111111111111111111111111111"`} {
		if !regexp.MustCompile(want).MatchString(logs.String()) {
			t.Errorf("no log line matches %s:\n%s", want, logs.String())
		}
	}
	var r map[string]any
	_ = json.Unmarshal(rs[0].Value, &r)
	if r["outcome"] != "delivered" || r["msg_seq"] != float64(1) || r["call_events"] != float64(1) {
		t.Errorf("receipt %s", rs[0].Value)
	}
}
