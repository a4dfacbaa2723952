package consumertest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// ReceiptCounts summarises the receipts CheckReceipts checked.
type ReceiptCounts struct {
	Events       int // source records with a receipt
	Receipts     int // receipt records (repeats included)
	Repeats      int // receipts beyond the first of an event
	Delivered    int
	DeadLettered int
	Merged       int // events delivered in a call shared with others
	Retried      int // events whose call took more than one attempt
}

// CheckReceipts checks the receipt topic's records against what happened:
// every source record has a receipt (exactly one when exact; at least one
// otherwise, all repeats agreeing), keyed like it and carrying its trace
// headers; a delivered event's receipt names a call the emulator
// delivered (Random, MsgSeq) that carried the event's elements; a
// dead-lettered event's receipt matches its dead-letter record's reason
// and code; times are in order.
func CheckReceipts(tb testing.TB, sources, receipts []kafka.Message, deliveries []sendertest.Delivery, deadLetters []kafka.Message, exact bool) ReceiptCounts {
	tb.Helper()
	type source struct {
		topic     string
		partition int
		offset    int64
	}
	got := map[source][]wire.Receipt{}
	gotMsg := map[source][]kafka.Message{}
	for _, m := range receipts {
		r, err := wire.DecodeReceipt(m.Value)
		if err != nil {
			tb.Errorf("receipt at %d/%d: %v", m.Partition, m.Offset, err)
			continue
		}
		k := source{r.Source.Topic, r.Source.Partition, r.Source.Offset}
		got[k] = append(got[k], r)
		gotMsg[k] = append(gotMsg[k], m)
	}
	dlq := map[source]kafka.Message{}
	for _, d := range deadLetters {
		var off int64
		var part int
		_, _ = fmt.Sscan(wire.Header(d, wire.HeaderSourceOffset), &off)
		_, _ = fmt.Sscan(wire.Header(d, wire.HeaderSourcePartition), &part)
		dlq[source{wire.Header(d, wire.HeaderSourceTopic), part, off}] = d
	}
	bySeq := map[uint64]sendertest.Delivery{}
	for _, d := range deliveries {
		bySeq[d.MsgSeq] = d
	}
	c := ReceiptCounts{Receipts: len(receipts)}
	for _, src := range sources {
		k := source{src.Topic, src.Partition, src.Offset}
		rs := got[k]
		delete(got, k)
		switch {
		case len(rs) == 0:
			tb.Errorf("%s/%d@%d: no receipt", src.Topic, src.Partition, src.Offset)
			continue
		case exact && len(rs) > 1:
			tb.Errorf("%s/%d@%d: %d receipts, want 1", src.Topic, src.Partition, src.Offset, len(rs))
		}
		c.Events++
		c.Repeats += len(rs) - 1
		r := rs[0]
		for i, again := range rs[1:] {
			if again.Outcome != r.Outcome || again.MsgSeq != r.MsgSeq || again.Random != r.Random {
				tb.Errorf("%s/%d@%d: repeated receipt %d disagrees: %+v vs %+v", src.Topic, src.Partition, src.Offset, i+2, again, r)
			}
		}
		m := gotMsg[k][0]
		if !bytes.Equal(m.Key, src.Key) {
			tb.Errorf("%s/%d@%d: receipt key %q, want the event's %q", src.Topic, src.Partition, src.Offset, m.Key, src.Key)
		}
		for _, h := range wire.TraceHeaders {
			if want := wire.Header(src, h); wire.Header(m, h) != want {
				tb.Errorf("%s/%d@%d: receipt header %s %q, want the event's %q", src.Topic, src.Partition, src.Offset, h, wire.Header(m, h), want)
			}
		}
		ev, derr := wire.DecodeEvent(wire.RecordOf(src))
		if derr == nil && r.Random != ev.Message.Random {
			tb.Errorf("%s/%d@%d: receipt Random %d, event's %d", src.Topic, src.Partition, src.Offset, r.Random, ev.Message.Random)
		}
		if r.FirstAttemptAt != nil && r.CallAt != nil && (r.CallAt.Before(*r.FirstAttemptAt) || r.FinalAt.Before(*r.CallAt)) {
			tb.Errorf("%s/%d@%d: times out of order: first %v call %v final %v", src.Topic, src.Partition, src.Offset, r.FirstAttemptAt, r.CallAt, r.FinalAt)
		}
		if r.Attempts > 1 {
			c.Retried++
		}
		switch r.Outcome {
		case wire.OutcomeDelivered:
			c.Delivered++
			if r.CallEvents > 1 {
				c.Merged++
			}
			d, ok := bySeq[r.MsgSeq]
			switch {
			case derr != nil:
				tb.Errorf("%s/%d@%d: a record that does not decode has a delivered receipt", src.Topic, src.Partition, src.Offset)
			case !ok:
				tb.Errorf("%s/%d@%d: receipt MsgSeq %d: the emulator delivered no such call", src.Topic, src.Partition, src.Offset, r.MsgSeq)
			case d.Random != r.CallRandom:
				tb.Errorf("%s/%d@%d: receipt call Random %d, the emulator's call %d had %d", src.Topic, src.Partition, src.Offset, r.CallRandom, r.MsgSeq, d.Random)
			case !carries(d, ev.Message.MsgBody):
				tb.Errorf("%s/%d@%d: the call with MsgSeq %d does not carry the event's elements", src.Topic, src.Partition, src.Offset, r.MsgSeq)
			case r.CallEvents < 1 || r.ProduceToCallMillis == nil || r.CallAt == nil:
				tb.Errorf("%s/%d@%d: delivered receipt without call facts: %+v", src.Topic, src.Partition, src.Offset, r)
			}
		case wire.OutcomeDeadLettered:
			c.DeadLettered++
			d, ok := dlq[k]
			switch {
			case !ok:
				tb.Errorf("%s/%d@%d: dead-lettered receipt, but no dead-letter record", src.Topic, src.Partition, src.Offset)
			case r.DeadLetter == nil || r.DeadLetter.Reason != wire.Header(d, wire.HeaderDLQReason) ||
				fmt.Sprint(r.DeadLetter.Code) != wire.Header(d, wire.HeaderDLQCode):
				tb.Errorf("%s/%d@%d: receipt failure %+v, dead-letter record says %s/%s", src.Topic, src.Partition, src.Offset,
					r.DeadLetter, wire.Header(d, wire.HeaderDLQReason), wire.Header(d, wire.HeaderDLQCode))
			}
		default:
			tb.Errorf("%s/%d@%d: outcome %q", src.Topic, src.Partition, src.Offset, r.Outcome)
		}
	}
	for k := range got {
		tb.Errorf("receipt for %s/%d@%d, which is not a source record", k.topic, k.partition, k.offset)
	}
	return c
}

// carries reports whether a delivered call holds every element of an
// event, in order (merge envelopes unpacked).
func carries(d sendertest.Delivery, body []sender.Element) bool {
	els := d.Elements()
	for i := 0; i+len(body) <= len(els); i++ {
		if slices.EqualFunc(els[i:i+len(body)], body, func(a, b sender.Element) bool {
			return a.MsgType == b.MsgType && bytes.Equal(canonical(a.MsgContent), canonical(b.MsgContent))
		}) {
			return true
		}
	}
	return false
}

// canonical returns JSON re-encoded with sorted keys, for comparison.
func canonical(raw json.RawMessage) []byte {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return raw
	}
	b, _ := json.Marshal(v)
	return b
}
