package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// receiptAwait is `publish --wait`: it notes the receipt topic's end before
// the events are produced, records where each event went as the writer
// acknowledges it, then follows the receipt topic until every event has a
// receipt (matched by its source topic, partition and offset) or the wait
// ends, and says what became of each.
type receiptAwait struct {
	conn     *kafkaconn.Conn
	receipts string        // the receipt topic
	d        time.Duration // how long to wait
	topic    string        // the topic written to
	from     map[int]int64
	start    time.Time

	mu   sync.Mutex
	sent []kafka.Message // partition, offset and key of each acknowledged event
}

// position is where an event was written.
type position struct {
	partition int
	offset    int64
}

// receiptWait is a resolved --wait: for how long, in which receipt topic;
// zero for no wait.
type receiptWait struct {
	d     time.Duration
	topic string
}

// start prepares waiting for the receipts of what out writes to topic
// (nil when not waiting): it reads the receipt topic's end, so it comes
// before the first write, and records where out's records go.
func (rw receiptWait) start(ctx context.Context, conn *kafkaconn.Conn, topic string, out *kafka.Writer) (*receiptAwait, error) {
	if rw.d == 0 {
		return nil, nil
	}
	from, err := conn.Ends(ctx, rw.topic)
	if err != nil {
		return nil, configError{fmt.Errorf("KAFKA_RECEIPT_TOPIC (--receipt-topic) %s: %w", rw.topic, err)}
	}
	a := &receiptAwait{conn: conn, receipts: rw.topic, d: rw.d, topic: topic, from: from, start: time.Now()}
	out.Completion = a.produced
	return a, nil
}

// produced is the writer's Completion: it records where events went.
func (a *receiptAwait) produced(ms []kafka.Message, err error) {
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range ms {
		a.sent = append(a.sent, kafka.Message{Partition: m.Partition, Offset: m.Offset, Key: m.Key})
	}
}

// maxListed is how many events wait lists one by one: all of them up to
// this many, else only those not delivered.
const maxListed = 20

// wait follows the receipt topic for up to a.d and prints each written
// event's outcome; it returns an error unless every event was delivered.
// A nil receiptAwait (no --wait), or nothing written, waits for nothing.
func (a *receiptAwait) wait(ctx context.Context, out io.Writer) error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	want := make(map[position]kafka.Message, len(a.sent))
	for _, m := range a.sent {
		want[position{m.Partition, m.Offset}] = m
	}
	a.mu.Unlock()
	if len(want) == 0 {
		return nil
	}
	got := map[position]wire.Receipt{}
	wctx, cancel := context.WithTimeout(ctx, a.d)
	defer cancel()
	err := a.conn.Follow(wctx, a.receipts, a.from, func(m kafka.Message) bool {
		r, err := wire.DecodeReceipt(m.Value)
		if err != nil || r.Source.Topic != a.topic {
			return true // another topic's receipt, or another schema
		}
		at := position{r.Source.Partition, r.Source.Offset}
		if _, ok := want[at]; ok {
			// A repeated receipt (after a worker's crash) says the same; an
			// already_delivered one (another group read it later) says no
			// more than the first.
			if prev, seen := got[at]; !seen || prev.Outcome == wire.OutcomeAlreadyDelivered {
				got[at] = r
			}
		}
		return len(got) < len(want)
	})
	if err != nil && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return fmt.Errorf("read receipts from %s: %w", a.receipts, err)
	}
	// The wait ended (or was interrupted): say what is known.

	order := make([]position, 0, len(want))
	for at := range want {
		order = append(order, at)
	}
	sort.Slice(order, func(i, j int) bool {
		if order[i].partition != order[j].partition {
			return order[i].partition < order[j].partition
		}
		return order[i].offset < order[j].offset
	})
	delivered, dead, missing := 0, 0, 0
	listed := 0
	for _, at := range order {
		r, ok := got[at]
		switch {
		case !ok:
			missing++
		case r.Outcome == wire.OutcomeDelivered || r.Outcome == wire.OutcomeAlreadyDelivered:
			delivered++
		default:
			dead++
		}
		if len(order) <= maxListed || (!(ok && (r.Outcome == wire.OutcomeDelivered || r.Outcome == wire.OutcomeAlreadyDelivered)) && listed < maxListed) {
			listed++
			fmt.Fprintf(out, "%s: %s\n", describeEvent(want[at]), describeOutcome(r, ok))
		}
	}
	waited := time.Since(a.start).Round(time.Millisecond)
	if len(order) > 1 {
		fmt.Fprintf(out, "receipts after %v: %d delivered, %d dead-lettered, %d without a receipt\n", waited, delivered, dead, missing)
	}
	switch {
	case dead == 0 && missing == 0:
		return nil
	case missing == len(order):
		return fmt.Errorf("no receipt in %s after %v: is a worker running with KAFKA_RECEIPT_TOPIC=%s?", a.receipts, waited, a.receipts)
	}
	return fmt.Errorf("%d of %d event(s) not delivered: %d dead-lettered, %d without a receipt after %v", dead+missing, len(order), dead, missing, waited)
}

// describeEvent names an event by where it was written, and its key.
func describeEvent(m kafka.Message) string {
	s := fmt.Sprintf("partition %d offset %d", m.Partition, m.Offset)
	if len(m.Key) > 0 {
		s += fmt.Sprintf(" (key %s)", m.Key)
	}
	return s
}

// describeOutcome says what a receipt reports, in a line.
func describeOutcome(r wire.Receipt, ok bool) string {
	if !ok {
		return "no receipt yet"
	}
	var b strings.Builder
	if r.Outcome == wire.OutcomeDelivered {
		fmt.Fprintf(&b, "delivered, MsgSeq %d, %d attempt(s)", r.MsgSeq, r.Attempts)
		if r.CallEvents > 1 {
			fmt.Fprintf(&b, ", in one call with %d other event(s)", r.CallEvents-1)
		}
		if r.ProduceToCallMillis != nil {
			fmt.Fprintf(&b, ", sent %v after it was produced", (time.Duration(*r.ProduceToCallMillis * float64(time.Millisecond))).Round(time.Millisecond))
		}
		return b.String()
	}
	if r.Outcome == wire.OutcomeAlreadyDelivered {
		return "delivered before (the delivered log knew it); not sent again"
	}
	if r.Outcome == wire.OutcomeDeadLettered {
		b.WriteString("dead-lettered")
	} else {
		b.WriteString(r.Outcome) // a newer worker's outcome
	}
	if dl := r.DeadLetter; dl != nil {
		fmt.Fprintf(&b, " to %s: %s", dl.Topic, dl.Reason)
		if dl.Code != 0 {
			fmt.Fprintf(&b, " (ErrorCode %d)", dl.Code)
		}
		if dl.Info != "" {
			fmt.Fprintf(&b, ": %s", dl.Info)
		}
	}
	return b.String()
}
