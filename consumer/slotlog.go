package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
)

// slotsMaxWait is how long a read of the claims log waits at the broker:
// an idle member asks once per slotsMaxWait, and a claim wakes the read at
// once.
const slotsMaxWait = 5 * time.Second

// kafkaSlots is the claims log on a single-partition Kafka topic.
type kafkaSlots struct {
	conn  *kafkaconn.Conn
	topic string
	fetch *kafkaconn.Fetcher
}

func (k *kafkaSlots) offsets() *offsets {
	return &offsets{client: k.conn.Client(), topic: k.topic, partition: 0}
}

// bootstrap reads the log's last record: its writer's chain state tells
// where to start.
func (k *kafkaSlots) bootstrap(ctx context.Context) (int64, chainState, error) {
	first, end, err := k.offsets().bounds(ctx)
	if err != nil {
		return 0, chainState{}, err
	}
	empty := chainState{Seen: first - 1}
	if end <= first {
		return first, empty, nil
	}
	f := k.conn.Fetcher(k.topic, 0, end-1, 0)
	res, err := f.Fetch(ctx)
	if err != nil {
		return 0, chainState{}, err
	}
	if len(res.Records) == 0 {
		return end, chainState{Seen: end - 1}, nil // a transaction marker: nothing to start from
	}
	last := res.Records[len(res.Records)-1]
	r, err := decodeClaim(last.Value)
	if err != nil {
		return last.Offset + 1, chainState{Seen: last.Offset}, nil
	}
	st := r.State
	if st.Seen+1 < first {
		st.Seen = first - 1 // records after the snapshot deleted by retention: start from what is left
	}
	return st.Seen + 1, st, nil
}

// read returns the records from offset from on, waiting up to
// slotsMaxWait for some.
func (k *kafkaSlots) read(ctx context.Context, from int64) ([]slotRecord, int64, error) {
	if k.fetch == nil || k.fetch.Next != from {
		k.fetch = k.conn.Fetcher(k.topic, 0, from, slotsMaxWait)
	}
	res, err := k.fetch.Fetch(ctx)
	if err != nil {
		var pe *kafkaconn.PartitionError
		if errors.As(err, &pe) && pe.Err == kafka.OffsetOutOfRange {
			// Retention went past us (a member stopped for long): start over
			// from the last record's snapshot.
			next, _, berr := k.bootstrap(ctx)
			if berr == nil {
				k.fetch = nil
				return nil, next, nil
			}
		}
		return nil, from, err
	}
	out := make([]slotRecord, 0, len(res.Records))
	for _, m := range res.Records {
		r, err := decodeClaim(m.Value)
		out = append(out, slotRecord{offset: m.Offset, rec: r, err: err})
	}
	return out, k.fetch.Next, nil
}

// append appends r, acknowledged by all in-sync replicas.
func (k *kafkaSlots) append(ctx context.Context, r claimRecord) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := k.conn.Client().Produce(ctx, &kafka.ProduceRequest{
		Topic: k.topic, Partition: 0, RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(kafka.Record{Time: time.Unix(0, r.TS), Value: kafka.NewBytes(encodeClaim(r))}),
	})
	if err == nil {
		err = resp.Error
	}
	if err != nil {
		return fmt.Errorf("append to the claims log %s: %w", k.topic, err)
	}
	return nil
}
