package schedule

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
)

// EnsureLog verifies that the claims log topic is a topic of one
// partition, creating it when missing. A claims log of several partitions
// is a configuration error (naming KAFKA_SLOT_TOPIC). One that is missing
// and cannot be created (no CREATE permission) is logged as an error and
// nil is returned: a member alone needs no claims log; with other members
// its calls wait for the log, and LogError says so.
func EnsureLog(ctx context.Context, conn *kafkaconn.Conn, topic string, log *zap.Logger) error {
	parts, err := conn.Partitions(ctx, topic)
	if err != nil && errors.Is(err, kafka.UnknownTopicOrPartition) {
		log.Info("creating the claims log topic (one partition)", zap.String("topic", topic))
		// Members need the last records alone: ten minutes of them, in
		// segments of ten minutes so retention can delete them.
		if cerr := conn.CreateTopic(ctx, topic, 1, kafka.ConfigEntry{ConfigName: "retention.ms", ConfigValue: "600000"},
			kafka.ConfigEntry{ConfigName: "segment.ms", ConfigValue: "600000"}); cerr != nil {
			log.Error("the claims log topic (KAFKA_SLOT_TOPIC) is missing and cannot be created: create it with one partition, "+
				"or grant the worker CREATE on it; until then a worker alone sends, and workers sharing the group's partitions wait",
				zap.String("topic", topic), zap.Error(cerr))
			return nil
		}
		parts, err = conn.Partitions(ctx, topic)
	}
	if err != nil {
		log.Error("the claims log topic (KAFKA_SLOT_TOPIC) is not usable yet", zap.String("topic", topic), zap.Error(err))
		return nil
	}
	if len(parts) != 1 {
		return fmt.Errorf("claims log topic (KAFKA_SLOT_TOPIC) %q has %d partitions; it needs exactly one "+
			"(Kafka's order on one partition decides whose call goes first)", topic, len(parts))
	}
	return nil
}

// slotsMaxWait is how long a read of the claims log waits at the broker:
// an idle member asks once per slotsMaxWait, and a claim wakes the read at
// once.
const slotsMaxWait = 5 * time.Second

// NewKafkaLog returns the claims log on topic, a topic of one partition
// (EnsureLog).
func NewKafkaLog(conn *kafkaconn.Conn, topic string) ClaimsLog {
	return &kafkaSlots{conn: conn, topic: topic}
}

// kafkaSlots is the claims log on a single-partition Kafka topic.
type kafkaSlots struct {
	conn  *kafkaconn.Conn
	topic string
	fetch *kafkaconn.Fetcher
}

// bootstrap reads the log's last record: its writer's chain state tells
// where to start.
func (k *kafkaSlots) bootstrap(ctx context.Context) (int64, chainState, error) {
	first, end, err := kafkaconn.Bounds(ctx, k.conn.Client(), k.topic, 0)
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
