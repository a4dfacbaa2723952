package main_test

import (
	"context"
	encbin "encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// textEvent is an event of one text element.
func textEvent(t testing.TB, text string, extra map[string]any) []byte {
	t.Helper()
	ev := map[string]any{"MsgBody": []sender.Element{sender.Text(text)}}
	for k, v := range extra {
		ev[k] = v
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// produceBatches writes each batch as it is to partition 0 of topic.
func produceBatches(t testing.TB, kc *consumertest.Cluster, topic string, batches ...[]consumertest.BatchRecord) {
	t.Helper()
	for _, recs := range batches {
		codec := 0
		for _, r := range recs {
			if r.ZeroValue > 0 {
				codec = consumertest.CodecZstdRLE
			}
		}
		b, err := consumertest.RecordBatch(codec, recs...)
		if err != nil {
			t.Fatal(err)
		}
		if err := kc.ProduceBatch(context.Background(), topic, 0, b); err != nil {
			t.Fatal(err)
		}
	}
}

// deadLetterReasons returns each dead letter's reason and info.
func deadLetterReasons(t testing.TB, kc *consumertest.Cluster, dlq string) []string {
	t.Helper()
	dl, err := kc.ReadAll(context.Background(), dlq)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range dl {
		out = append(out, wire.Header(m, wire.HeaderDLQReason)+": "+wire.Header(m, wire.HeaderDLQInfo))
	}
	return out
}

// alive fails t if the worker exited.
func alive(t testing.TB, w *worker) {
	t.Helper()
	select {
	case err := <-w.done:
		w.done <- err
		t.Fatalf("the worker exited (%v):\n%s", err, w.logs.String())
	default:
	}
}

// peakMB is the worker's peak resident memory so far, in MB.
func peakMB(w *worker) float64 {
	return procStatus(fmt.Sprintf("/proc/%d/status", w.cmd.Process.Pid))["VmHWM"]
}

// TestPoisonDecoders: between good events, a Schema Registry Avro value
// whose array claims 2^45 items (ten bytes) and a record on which the
// mapping would run for ever (last(range(.n)), n = 10^15). The same
// process goes on: both are dead-lettered naming the limit they hit, the
// good events are delivered once and in order, everything is committed.
func TestPoisonDecoders(t *testing.T) {
	needBinary(t)
	reg := consumertest.NewRegistry(t)
	reg.Add(1, "AVRO", "", `{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"array","items":"null"}}]}`)
	ce := newCrashEnv(t, 1, 0, sendertest.Options{}, map[string]string{
		"KAFKA_SCHEMA_REGISTRY_URL": reg.URL, "TIM_MAP_TIMEOUT": "200ms",
		"TIM_MAP": `if .n then "\(last(range(.n)))" else . end`,
	})
	bomb := encbin.AppendVarint(nil, 1<<45) // a block of 2^45 nulls
	bomb = append(bomb, 0)
	msgs := []kafka.Message{
		{Key: []byte("k"), Value: textEvent(t, "good-1", nil)},
		{Key: []byte("k"), Value: consumertest.RegistryValue(t, 1, nil, bomb)},
		{Key: []byte("k"), Value: textEvent(t, "good-2", nil)},
		{Key: []byte("k"), Value: []byte(`{"n":1000000000000000}`)},
		{Key: []byte("k"), Value: textEvent(t, "good-3", nil)},
	}
	if err := ce.kc.Produce(context.Background(), ce.topic, msgs...); err != nil {
		t.Fatal(err)
	}
	w := startWorker(t, ce.env)
	ce.waitCommitted(t, time.Minute)
	alive(t, w)
	got := deliveredTextsOf(ce.emu)
	if strings.Join(got, ",") != "good-1,good-2,good-3" {
		t.Errorf("delivered %v, want good-1, good-2, good-3 in order", got)
	}
	reasons := deadLetterReasons(t, ce.kc, ce.env["KAFKA_DLQ_TOPIC"])
	if len(reasons) != 2 || !strings.HasPrefix(reasons[0], "decode_failed: ") || !strings.Contains(reasons[0], "values") ||
		!strings.HasPrefix(reasons[1], "map_failed: ") || !strings.Contains(reasons[1], "TIM_MAP_TIMEOUT") {
		t.Errorf("dead letters %q, want the Avro bomb decode_failed naming the bound, the runaway map_failed naming TIM_MAP_TIMEOUT", reasons)
	}
}

// TestPoisonRecords: between good events, records any producer can write
// to a topic that allows 4 MB: a zstd batch of tens of kilobytes holding a
// 1 GiB record; a batch whose 16 MiB record sits between two good ones;
// an event with an unknown field whose name is 1.5 MB (its dead letter
// once could never be written); and, receipts on, a valid event with a
// 1.5 MB key (its receipt once could never be written). The same process
// goes on: the big records are dead-lettered too_large naming where they
// are, the field-name event invalid_event, the keyed one delivered with a
// receipt; every good event delivered once, in order; all committed; and
// the worker's memory stays far below what the records claim.
func TestPoisonRecords(t *testing.T) {
	needBinary(t)
	ce := newCrashEnv(t, 1, 0, sendertest.Options{}, map[string]string{
		// A quarter of the default limits, so the 1 GiB record is read only
		// to 32 MiB (the expansion limit) under the race detector.
		"KAFKA_MAX_RECORD_BYTES": "2097152", "KAFKA_MAX_BATCH_BYTES": "2097152",
	})
	ctx := context.Background()
	src := fmt.Sprintf("poison-src-%d", time.Now().UnixNano())
	if err := ce.kc.CreateTopic(ctx, src, 1, kafka.ConfigEntry{ConfigName: "max.message.bytes", ConfigValue: "4194304"}); err != nil {
		t.Fatal(err)
	}
	receipts := ce.kc.Topic(t, "receipts", 1)
	ce.env["KAFKA_TOPIC"], ce.env["KAFKA_GROUP_ID"], ce.env["KAFKA_RECEIPT_TOPIC"] = src, "g-"+src, receipts
	ce.topic = src
	hugeName := strings.Repeat("f", 1500<<10)
	hugeKey := []byte(strings.Repeat("k", 1500<<10))
	produceBatches(t, ce.kc, src,
		[]consumertest.BatchRecord{{Key: []byte("k"), Value: textEvent(t, "good-1", nil)}},
		[]consumertest.BatchRecord{{Key: []byte("k"), ZeroValue: 1 << 30}},
		[]consumertest.BatchRecord{{Key: []byte("k"), Value: textEvent(t, "good-2", nil)}},
		[]consumertest.BatchRecord{{Key: []byte("k"), Value: textEvent(t, "good-3", nil)}, {Key: []byte("k"), ZeroValue: 16 << 20},
			{Key: []byte("k"), Value: textEvent(t, "good-4", nil)}},
		[]consumertest.BatchRecord{{Key: []byte("k"), Value: textEvent(t, "field", map[string]any{hugeName: 1})}},
		[]consumertest.BatchRecord{{Key: hugeKey, Value: textEvent(t, "big-key", nil)}},
		[]consumertest.BatchRecord{{Key: []byte("k"), Value: textEvent(t, "good-5", nil)}},
	)
	w := startWorker(t, ce.env)
	ce.waitCommitted(t, 2*time.Minute)
	alive(t, w)
	got := deliveredTextsOf(ce.emu)
	if strings.Join(got, ",") != "good-1,good-2,good-3,good-4,big-key,good-5" {
		t.Errorf("delivered %v, want good-1..4, big-key, good-5 in order", got)
	}
	reasons := deadLetterReasons(t, ce.kc, ce.env["KAFKA_DLQ_TOPIC"])
	if len(reasons) != 3 || !strings.HasPrefix(reasons[0], "too_large: ") || !strings.Contains(reasons[0], src+"/0 offset 1") ||
		!strings.HasPrefix(reasons[1], "too_large: ") || !strings.Contains(reasons[1], "KAFKA_MAX_RECORD_BYTES") ||
		!strings.HasPrefix(reasons[2], "invalid_event: ") {
		t.Errorf("dead letters %.300q, want two too_large naming where they are and the limit, one invalid_event", reasons)
	}
	dl, _ := ce.kc.ReadAll(ctx, ce.env["KAFKA_DLQ_TOPIC"])
	if len(dl) == 3 {
		if f := wire.Header(dl[2], wire.HeaderDLQField); len(f) > wire.MaxFieldBytes {
			t.Errorf("field header of %d bytes", len(f))
		}
	}
	rs, err := ce.kc.ReadAll(ctx, receipts)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 9 {
		t.Errorf("%d receipts, want 9 (one per record)", len(rs))
	}
	for _, r := range rs {
		if len(r.Key) > wire.MaxKeyBytes {
			t.Errorf("a receipt keyed by %d bytes", len(r.Key))
		}
	}
	// The records claim more than a gigabyte; the worker held a few
	// megabytes of them (the race detector's own memory included).
	if peak := peakMB(w); peak > 256 {
		t.Errorf("the worker's peak RSS is %.0f MB, over the StatefulSet's 256 MiB limit", peak)
	} else {
		t.Logf("peak RSS %.0f MB", peak)
	}
}
