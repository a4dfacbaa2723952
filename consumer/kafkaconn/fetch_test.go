package kafkaconn

import (
	"testing"
	"time"

	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/fetch"
)

func records(base int64, values ...string) protocol.RecordReader {
	rs := make([]protocol.Record, len(values))
	for i, v := range values {
		rs[i] = protocol.Record{Offset: base + int64(i), Time: time.Unix(0, 0), Value: protocol.NewBytes([]byte(v))}
	}
	return protocol.NewRecordReader(rs...)
}

func dataBatch(base, producer int64, transactional bool, values ...string) *protocol.RecordBatch {
	b := &protocol.RecordBatch{BaseOffset: base, ProducerID: producer, Records: records(base, values...)}
	if transactional {
		b.Attributes = protocol.Transactional
	}
	return b
}

func marker(offset, producer int64, abort bool) *protocol.ControlBatch {
	typ := int16(1) // COMMIT
	if abort {
		typ = controlAbort
	}
	b := protocol.NewControlBatch(protocol.ControlRecord{Offset: offset, Type: typ})
	b.BaseOffset, b.ProducerID, b.Attributes = offset, producer, protocol.Control|protocol.Transactional
	return b
}

// TestDecodeReadCommitted walks the read_committed algorithm over a
// hand-made answer: committed, aborted and plain batches interleaved, two
// producers, markers. Only committed and plain records come out; the next
// offset moves past everything.
func TestDecodeReadCommitted(t *testing.T) {
	part := &fetch.ResponsePartition{
		HighWatermark: 20,
		RecordSet: protocol.RecordSet{Records: &protocol.RecordStream{Records: []protocol.RecordReader{
			dataBatch(0, 7, true, "a0", "a1"), // producer 7: committed
			marker(2, 7, false),
			dataBatch(3, 8, true, "b0", "b1"), // producer 8: aborted
			dataBatch(5, 0, false, "n0"),      // not transactional
			dataBatch(6, 8, true, "b2"),       // still producer 8's aborted transaction
			marker(7, 8, true),
			dataBatch(8, 8, true, "c0"), // producer 8's next transaction: committed
			marker(9, 8, false),
		}}},
		AbortedTransactions: []fetch.ResponseTransaction{{ProducerID: 8, FirstOffset: 3}},
	}
	f := &Fetcher{topic: "t", partition: 0, Next: 1}
	out, err := f.decode(part)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range out.Records {
		got = append(got, string(m.Value))
	}
	want := []string{"a1", "n0", "c0"} // a0 is before the fetch offset
	if len(got) != len(want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delivered %v, want %v", got, want)
		}
	}
	if f.Next != 10 || out.Aborted != 3 || out.Markers != 3 || out.Batches != 8 {
		t.Errorf("next %d aborted %d markers %d batches %d; want 10, 3, 3, 8", f.Next, out.Aborted, out.Markers, out.Batches)
	}
	if out.Records[0].Offset != 1 || out.Records[2].Offset != 8 || out.Records[0].HighWaterMark != 20 {
		t.Errorf("offsets %d, %d, high watermark %d", out.Records[0].Offset, out.Records[2].Offset, out.Records[0].HighWaterMark)
	}
}
