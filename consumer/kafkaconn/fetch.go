package kafkaconn

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/fetch"
)

// The fetch path. kafka-go's Reader neither drops records of aborted
// transactions (even with ReadCommitted) nor skips control batches, and it
// retries OFFSET_OUT_OF_RANGE forever, logging skips at debug level. So
// every reader of timbroadcast (the worker, Follow, ReadFrom) fetches with
// a Fetcher, on kafka-go's protocol layer (Transport.RoundTrip
// with protocol/fetch), the way Kafka's own consumer reads committed data:
// isolation level read_committed (the broker returns records only up to
// the last stable offset, so nothing of an open transaction), then the
// record batches in offset order with the answer's aborted transactions.

// isolationReadCommitted is the Fetch request's isolation level 1.
const isolationReadCommitted = 1

// controlAbort is the type of an ABORT transaction marker (COMMIT is 1).
const controlAbort = 0

// Fetcher reads one partition from Next onwards, committed records only.
type Fetcher struct {
	rt        kafka.RoundTripper
	addr      net.Addr
	topic     string
	partition int
	maxWait   time.Duration
	maxBytes  int
	lim       Limits
	// Next is the offset the next Fetch asks for.
	Next int64
}

// Fetcher returns a fetcher of topic's partition from offset next whose
// requests wait at most maxWait at the broker for records to arrive.
func (c *Conn) Fetcher(topic string, partition int, next int64, maxWait time.Duration) *Fetcher {
	return &Fetcher{rt: c.Transport(), addr: kafka.TCP(c.Brokers...), topic: topic, partition: partition,
		maxWait: maxWait, maxBytes: 10 << 20, lim: c.Limits.orDefault(), Next: next}
}

// MaxWait is how long a Fetch waits at the broker for records.
func (f *Fetcher) MaxWait() time.Duration { return f.maxWait }

// Fetched is what one Fetch answered.
type Fetched struct {
	// Records are the records to deliver, in offset order.
	Records []kafka.Message
	// BrokerTime says, for each of Records, that its Time is the broker's
	// (a topic with message.timestamp.type=LogAppendTime), not what its
	// producer wrote.
	BrokerTime []bool
	// Oversized are the records over the Limits, not kept, in offset
	// order (between Records by offset): the caller dead-letters them.
	Oversized []Oversized
	// Aborted counts records skipped as part of aborted transactions;
	// Markers counts transaction markers (control records) passed over.
	Aborted, Markers int
	// Batches is the number of record batches in the answer.
	Batches int
	// BudgetFull says records were left for a later fetch because the
	// Budget was spent: wait for BudgetNeed bytes of it (Budget.Wait)
	// before fetching again.
	BudgetFull bool
	BudgetNeed int64
}

// PartitionError is a partition-level error in a Fetch answer
// (OFFSET_OUT_OF_RANGE, NOT_LEADER_FOR_PARTITION, ...).
type PartitionError struct {
	Err kafka.Error
}

func (e *PartitionError) Error() string { return "fetch: " + e.Err.Error() }
func (e *PartitionError) Unwrap() error { return e.Err }

// Fetch makes one Fetch request from f.Next and returns the deliverable
// records; f.Next moves past everything the answer held, skipped batches
// and markers included, so commits stay contiguous.
func (f *Fetcher) Fetch(ctx context.Context) (*Fetched, error) {
	ctx, cancel := context.WithTimeout(ctx, f.maxWait+15*time.Second)
	defer cancel()
	req := &fetch.Request{
		ReplicaID:      -1,
		MaxWaitTime:    int32(f.maxWait / time.Millisecond),
		MinBytes:       1,
		MaxBytes:       int32(f.maxBytes),
		IsolationLevel: isolationReadCommitted,
		SessionID:      0,
		SessionEpoch:   -1, // no fetch session: every request is complete
		Topics: []fetch.RequestTopic{{
			Topic: f.topic,
			Partitions: []fetch.RequestPartition{{
				Partition: int32(f.partition), CurrentLeaderEpoch: -1, FetchOffset: f.Next,
				LogStartOffset: -1, PartitionMaxBytes: int32(f.maxBytes),
			}},
		}},
	}
	msg, err := f.rt.RoundTrip(ctx, f.addr, &fetchExchange{req: req, lim: f.lim})
	if err != nil {
		return nil, fmt.Errorf("fetch %s/%d at %d: %w", f.topic, f.partition, f.Next, err)
	}
	resp, ok := msg.(*answer)
	if !ok {
		return nil, fmt.Errorf("fetch %s/%d: unexpected answer %T", f.topic, f.partition, msg)
	}
	if resp.errorCode != 0 {
		return nil, &PartitionError{Err: kafka.Error(resp.errorCode)}
	}
	for _, t := range resp.topics {
		for _, p := range t.partitions {
			if t.name != f.topic || int(p.partition) != f.partition {
				continue
			}
			if p.errorCode != 0 {
				return nil, &PartitionError{Err: kafka.Error(p.errorCode)}
			}
			f.Next = max(f.Next, p.next)
			return &p.fetched, nil
		}
	}
	return &Fetched{}, nil // nothing for us in this answer
}
