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
// partition whose records the broker stamps with its own clock
// (message.timestamp.type=LogAppendTime), creating it when missing. A
// claims log of several partitions is a configuration error (naming
// KAFKA_SLOT_TOPIC). One that is missing and cannot be created (no CREATE
// permission) is logged as an error and nil is returned: a member alone
// needs no claims log; with other members its calls wait for the log, and
// LogError says so. A topic created by a release before 0.11.0 stamps
// records with their writers' clocks (CreateTime): it is switched if the
// worker may (ALTER_CONFIGS), else it keeps working with a warning that
// says how to switch it.
func EnsureLog(ctx context.Context, conn *kafkaconn.Conn, topic string, log *zap.Logger) error {
	parts, err := conn.Partitions(ctx, topic)
	if err != nil && errors.Is(err, kafka.UnknownTopicOrPartition) {
		log.Info("creating the claims log topic (one partition, stamped by the broker's clock)", zap.String("topic", topic))
		// Members need the last records alone: ten minutes of them, in
		// segments of ten minutes so retention can delete them.
		if cerr := conn.CreateTopic(ctx, topic, 1, kafka.ConfigEntry{ConfigName: "retention.ms", ConfigValue: "600000"},
			kafka.ConfigEntry{ConfigName: "segment.ms", ConfigValue: "600000"},
			kafka.ConfigEntry{ConfigName: timestampTypeConfig, ConfigValue: logAppendTime}); cerr != nil {
			log.Error("the claims log topic (KAFKA_SLOT_TOPIC) is missing and cannot be created: create it with one partition "+
				"and message.timestamp.type=LogAppendTime, or grant the worker CREATE on it; until then a worker alone sends, "+
				"and workers sharing the group's partitions wait",
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
	ensureBrokerClock(ctx, conn, topic, log)
	return nil
}

const (
	timestampTypeConfig = "message.timestamp.type"
	logAppendTime       = "LogAppendTime"
)

// ensureBrokerClock switches a claims topic that stamps its records with
// their writers' clocks to the broker's, or warns how to.
func ensureBrokerClock(ctx context.Context, conn *kafkaconn.Conn, topic string, log *zap.Logger) {
	v, err := conn.TopicConfig(ctx, topic, timestampTypeConfig)
	if err != nil {
		log.Warn("cannot read the claims log topic's configuration: if it is not message.timestamp.type=LogAppendTime, "+
			"calls follow the clocks of the members", zap.String("topic", topic), zap.Error(err))
		return
	}
	if v == logAppendTime {
		return
	}
	resp, err := conn.Client().IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{
		Resources: []kafka.IncrementalAlterConfigsRequestResource{{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
			Configs: []kafka.IncrementalAlterConfigsRequestConfig{{Name: timestampTypeConfig, Value: logAppendTime,
				ConfigOperation: kafka.ConfigOperationSet}},
		}}})
	if err == nil {
		for _, r := range resp.Resources {
			if r.Error != nil {
				err = r.Error
			}
		}
	}
	if err != nil {
		log.Warn("the claims log topic stamps its records with their writers' clocks (message.timestamp.type="+v+"), "+
			"so a member whose clock is off moves every member's calls, and the worker may not switch it. Switch it with "+
			"kafka-configs --bootstrap-server <brokers> --alter --entity-type topics --entity-name "+topic+
			" --add-config message.timestamp.type=LogAppendTime", zap.String("topic", topic), zap.Error(err))
		return
	}
	log.Info("switched the claims log topic to the broker's clock (message.timestamp.type=LogAppendTime): "+
		"it was created by a release before 0.11.0", zap.String("topic", topic))
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

func (k *kafkaSlots) bounds(ctx context.Context) (int64, int64, error) {
	return kafkaconn.Bounds(ctx, k.conn.Client(), k.topic, 0)
}

// raw converts what a fetch answered.
func raw(res *kafkaconn.Fetched, to int64) []rawRecord {
	out := make([]rawRecord, 0, len(res.Records))
	for i, m := range res.Records {
		if to >= 0 && m.Offset >= to {
			break
		}
		r := rawRecord{offset: m.Offset, value: m.Value}
		if i < len(res.BrokerTime) && res.BrokerTime[i] {
			r.stamp = m.Time
		}
		out = append(out, r)
	}
	return out
}

// scan returns the records in [from, to).
func (k *kafkaSlots) scan(ctx context.Context, from, to int64) ([]rawRecord, error) {
	f := k.conn.Fetcher(k.topic, 0, from, 0)
	var out []rawRecord
	for f.Next < to {
		before := f.Next
		res, err := f.Fetch(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, raw(res, to)...)
		if f.Next == before {
			break // nothing more below to (a transaction's end, compaction)
		}
	}
	return out, nil
}

// read returns the records from offset from on, waiting up to
// slotsMaxWait for some.
func (k *kafkaSlots) read(ctx context.Context, from int64) ([]rawRecord, int64, error) {
	if k.fetch == nil || k.fetch.Next != from {
		k.fetch = k.conn.Fetcher(k.topic, 0, from, slotsMaxWait)
	}
	res, err := k.fetch.Fetch(ctx)
	if err != nil {
		var pe *kafkaconn.PartitionError
		if errors.As(err, &pe) && pe.Err == kafka.OffsetOutOfRange {
			// Retention went past us (a member stopped for long): go on
			// from what is left.
			first, _, berr := k.bounds(ctx)
			if berr == nil && first > from {
				k.fetch = nil
				return []rawRecord{{offset: first, restart: true}}, first, nil
			}
		}
		return nil, from, err
	}
	return raw(res, -1), k.fetch.Next, nil
}

// append appends values, acknowledged by all in-sync replicas.
func (k *kafkaSlots) append(ctx context.Context, values [][]byte, ts time.Time) (time.Time, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	recs := make([]kafka.Record, len(values))
	for i, v := range values {
		recs[i] = kafka.Record{Time: ts, Value: kafka.NewBytes(v)}
	}
	resp, err := k.conn.Client().Produce(ctx, &kafka.ProduceRequest{
		Topic: k.topic, Partition: 0, RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(recs...),
	})
	if err == nil {
		err = resp.Error
	}
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("append to the claims log %s: %w", k.topic, err)
	}
	return resp.LogAppendTime, time.Millisecond, nil
}
