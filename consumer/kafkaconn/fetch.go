package kafkaconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
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
	// Next is the offset the next Fetch asks for.
	Next int64
}

// Fetcher returns a fetcher of topic's partition from offset next whose
// requests wait at most maxWait at the broker for records to arrive.
func (c *Conn) Fetcher(topic string, partition int, next int64, maxWait time.Duration) *Fetcher {
	return &Fetcher{rt: c.transport, addr: kafka.TCP(c.Brokers...), topic: topic, partition: partition,
		maxWait: maxWait, maxBytes: 10 << 20, Next: next}
}

// MaxWait is how long a Fetch waits at the broker for records.
func (f *Fetcher) MaxWait() time.Duration { return f.maxWait }

// Fetched is what one Fetch answered.
type Fetched struct {
	// Records are the records to deliver, in offset order.
	Records []kafka.Message
	// Aborted counts records skipped as part of aborted transactions;
	// Markers counts transaction markers (control records) passed over.
	Aborted, Markers int
	// Batches is the number of record batches in the answer.
	Batches int
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
	msg, err := f.rt.RoundTrip(ctx, f.addr, req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s/%d at %d: %w", f.topic, f.partition, f.Next, err)
	}
	resp, ok := msg.(*fetch.Response)
	if !ok {
		return nil, fmt.Errorf("fetch %s/%d: unexpected answer %T", f.topic, f.partition, msg)
	}
	if resp.ErrorCode != 0 {
		return nil, &PartitionError{Err: kafka.Error(resp.ErrorCode)}
	}
	var part *fetch.ResponsePartition
	for i := range resp.Topics {
		for j := range resp.Topics[i].Partitions {
			if p := &resp.Topics[i].Partitions[j]; resp.Topics[i].Topic == f.topic && int(p.Partition) == f.partition {
				part = p
			}
		}
	}
	if part == nil {
		return &Fetched{}, nil // nothing for us in this answer
	}
	if part.ErrorCode != 0 {
		return nil, &PartitionError{Err: kafka.Error(part.ErrorCode)}
	}
	out, err := f.decode(part)
	if err != nil {
		return nil, fmt.Errorf("fetch %s/%d at %d: %w", f.topic, f.partition, f.Next, err)
	}
	return out, nil
}

// decode walks an answer's record batches in offset order, keeping what a
// read_committed consumer delivers.
func (f *Fetcher) decode(part *fetch.ResponsePartition) (*Fetched, error) {
	out := &Fetched{}
	var batches []protocol.RecordReader
	switch rs := part.RecordSet.Records.(type) {
	case nil:
	case *protocol.RecordStream:
		batches = rs.Records
	default:
		batches = []protocol.RecordReader{rs}
	}
	out.Batches = len(batches)

	// Aborted transactions in first-offset order: a producer joins the
	// aborted set when its transaction's first offset is reached, and
	// leaves it at its ABORT marker.
	pending := append([]fetch.ResponseTransaction(nil), part.AbortedTransactions...)
	sort.Slice(pending, func(i, j int) bool { return pending[i].FirstOffset < pending[j].FirstOffset })
	aborted := map[int64]bool{}

	for _, b := range batches {
		var base int64
		switch batch := b.(type) {
		case *protocol.RecordBatch:
			base = batch.BaseOffset
		case *protocol.ControlBatch:
			base = batch.BaseOffset
		case *protocol.MessageSet:
			base = batch.BaseOffset
		}
		for len(pending) > 0 && pending[0].FirstOffset <= base {
			aborted[pending[0].ProducerID] = true
			pending = pending[1:]
		}
		switch batch := b.(type) {
		case *protocol.ControlBatch:
			for {
				cr, err := batch.ReadControlRecord()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return nil, fmt.Errorf("control record: %w", err)
				}
				out.Markers++
				f.Next = max(f.Next, cr.Offset+1)
				if cr.Type == controlAbort {
					delete(aborted, batch.ProducerID)
				}
			}
		case *protocol.RecordBatch:
			if batch.Attributes.Transactional() && aborted[batch.ProducerID] {
				n, last, err := drain(batch)
				if err != nil {
					return nil, err
				}
				out.Aborted += n
				f.Next = max(f.Next, last+1)
				continue
			}
			if err := f.take(batch, part.HighWatermark, out); err != nil {
				return nil, err
			}
		default:
			if err := f.take(b, part.HighWatermark, out); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// take appends a batch's records at or after f.Next to out.
func (f *Fetcher) take(r protocol.RecordReader, highWater int64, out *Fetched) error {
	for {
		rec, err := r.ReadRecord()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read record: %w", err)
		}
		m, err := message(rec, f.topic, f.partition, highWater)
		if err != nil {
			return err
		}
		if m.Offset < f.Next {
			continue // a batch starts before the fetch offset
		}
		out.Records = append(out.Records, m)
		f.Next = m.Offset + 1
	}
}

// drain reads a skipped batch to its end: its record count and last
// offset.
func drain(r protocol.RecordReader) (n int, last int64, err error) {
	last = -1
	for {
		rec, err := r.ReadRecord()
		if errors.Is(err, io.EOF) {
			return n, last, nil
		}
		if err != nil {
			return n, last, fmt.Errorf("read record: %w", err)
		}
		closeBytes(rec)
		n++
		last = max(last, rec.Offset)
	}
}

// message copies a protocol record into a kafka.Message.
func message(rec *protocol.Record, topic string, partition int, highWater int64) (kafka.Message, error) {
	defer closeBytes(rec)
	key, err := protocol.ReadAll(rec.Key)
	if err != nil {
		return kafka.Message{}, fmt.Errorf("read key: %w", err)
	}
	value, err := protocol.ReadAll(rec.Value)
	if err != nil {
		return kafka.Message{}, fmt.Errorf("read value: %w", err)
	}
	var headers []kafka.Header
	if len(rec.Headers) > 0 {
		headers = make([]kafka.Header, len(rec.Headers))
		for i, h := range rec.Headers {
			headers[i] = kafka.Header{Key: h.Key, Value: append([]byte(nil), h.Value...)}
		}
	}
	return kafka.Message{
		Topic: topic, Partition: partition, Offset: rec.Offset, HighWaterMark: highWater,
		Key: key, Value: value, Headers: headers, Time: rec.Time,
	}, nil
}

func closeBytes(rec *protocol.Record) {
	if rec.Key != nil {
		rec.Key.Close()
	}
	if rec.Value != nil {
		rec.Value.Close()
	}
}
