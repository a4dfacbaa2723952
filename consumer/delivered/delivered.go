// Package delivered keeps the delivered log: never twice, whatever happens to offsets. The
// group's committed offset says where this group is; the server's dedupe
// catches a resend within five minutes. Neither helps when the offsets go
// away or move back (a new group id, offsets reset or expired, a second
// deployment on the same topic) more than five minutes later. So every
// delivery is also recorded, before its commit, in a compacted topic of
// one partition keyed by app and source partition (wire.Watermark): every
// record below an entry's Next has had its final outcome. A session reads
// the log before it starts and skips what is below (committed as
// already_delivered, never sent).
//
// The log knows the source topic by id too: a topic deleted and created
// again under its name starts from nothing, and a log that ends below the
// Watermark (truncated) lowers it, loudly, so new records at those
// offsets are delivered. Neither skips nor resends silently.
//
// Cost: one produce (acks=all) per commit of a partition, of every
// stream's watermark settled since, just before the commit (what settles
// while one is on its way goes together); one read of the log's new entries per session start, and while
// old records are sent at most one per DedupeWindow/4. Nothing while idle.
// Memory: one entry per source partition (a few hundred bytes each).
package delivered

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// Log is this worker's view of the delivered log.
type Log struct {
	conn *kafkaconn.Conn
	// writer appends to the log (its one partition), the concurrent
	// writes of every stream in one request.
	writer *kafkaconn.Appender
	topic  string
	by     string
	log    *zap.Logger
	// A record older than window/2 is sent only after a read less than
	// stale (window/4) old.
	window, stale time.Duration

	// idMu makes one topic id lookup at a time (topicID).
	idMu    sync.Mutex
	mu      sync.Mutex
	entries map[string]wire.Watermark // by key
	readTo  int64                     // the log's next offset to read
	// readAt is when the last complete read started; reading is closed
	// while one runs (its waiters wait for it).
	readAt  time.Time
	reading chan struct{}
	ids     map[string]topicIDAt // source topic ids, as last asked
}

type topicIDAt struct {
	id kafkaconn.TopicID
	at time.Time
}

// TruncationSkew is how much later than a delivered-log entry a record's
// timestamp must be for the record to count as produced after it (clocks
// of producers and workers differ a little).
const TruncationSkew = time.Second

// topicIDTTL is how long a topic's id is taken as known: a session start
// asks again after it (a rebalance starts every partition at once).
const topicIDTTL = 10 * time.Second

// New returns the view of the delivered log in topic (its one
// partition), whose entries this worker writes as by (its group). A record
// older than half of dedupeWindow is sent only after a read of the log
// less than a quarter of it old (Fresh).
func New(conn *kafkaconn.Conn, topic, by string, dedupeWindow time.Duration, log *zap.Logger) *Log {
	return &Log{
		conn: conn, writer: conn.Appender(topic, 0), topic: topic, by: by, log: log,
		window: dedupeWindow, stale: dedupeWindow / 4, entries: map[string]wire.Watermark{}, ids: map[string]topicIDAt{},
	}
}

// Topic is the log's topic.
func (d *Log) Topic() string { return d.topic }

// Appender appends to the log (its one partition), the concurrent writes
// of every stream in one request.
func (d *Log) Appender() *kafkaconn.Appender { return d.writer }

// Check verifies the log's topic, creating it when missing (compacted,
// one partition). A topic that cannot be created or has several
// partitions is a configuration error naming KAFKA_DELIVERED_TOPIC.
func (d *Log) Check(ctx context.Context) error {
	parts, err := d.conn.Partitions(ctx, d.topic)
	if err != nil && errors.Is(err, kafka.UnknownTopicOrPartition) {
		d.log.Info("creating the delivered log topic (one partition, compacted)", zap.String("topic", d.topic))
		if cerr := d.conn.CreateTopic(ctx, d.topic, 1, kafka.ConfigEntry{ConfigName: "cleanup.policy", ConfigValue: "compact"},
			kafka.ConfigEntry{ConfigName: "segment.ms", ConfigValue: "3600000"}); cerr != nil && !errors.Is(cerr, kafka.TopicAlreadyExists) {
			return fmt.Errorf("consumer: the delivered log topic (KAFKA_DELIVERED_TOPIC) %q is missing and cannot be created (%w): "+
				"create it with one partition and cleanup.policy=compact, or grant the worker CREATE on it, "+
				"or set KAFKA_DELIVERED_TOPIC=off to rely on the group's offsets alone", d.topic, cerr)
		}
		parts, err = d.conn.Partitions(ctx, d.topic)
	}
	if err != nil {
		return fmt.Errorf("consumer: the delivered log topic (KAFKA_DELIVERED_TOPIC) %q is not usable: %w", d.topic, err)
	}
	if len(parts) != 1 {
		return fmt.Errorf("consumer: delivered log topic (KAFKA_DELIVERED_TOPIC) %q has %d partitions; it needs exactly one", d.topic, len(parts))
	}
	if policy, err := d.conn.TopicConfig(ctx, d.topic, "cleanup.policy"); err == nil && policy != "" && policy != "compact" &&
		policy != "compact,delete" && policy != "delete,compact" {
		d.log.Warn("the delivered log topic is not compacted: retention will delete what an idle partition delivered, "+
			"and records read again after that may be shown again; set cleanup.policy=compact on it",
			zap.String("topic", d.topic), zap.String("cleanup.policy", policy))
	}
	return nil
}

// Refresh reads the log's entries written since the last read, unless a
// read that started at or after notBefore has completed. Concurrent
// callers share one read.
func (d *Log) Refresh(ctx context.Context, notBefore time.Time) error {
	for {
		d.mu.Lock()
		if !d.readAt.IsZero() && !d.readAt.Before(notBefore) {
			d.mu.Unlock()
			return nil
		}
		if wait := d.reading; wait != nil {
			d.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		done := make(chan struct{})
		d.reading = done
		from := d.readTo
		d.mu.Unlock()

		start := time.Now()
		next, entries, err := d.read(ctx, from)
		d.mu.Lock()
		d.reading = nil
		close(done)
		if err == nil {
			for _, e := range entries {
				d.applyLocked(e)
			}
			d.readTo, d.readAt = next, start
		}
		d.mu.Unlock()
		if err != nil {
			return fmt.Errorf("read the delivered log %s: %w", d.topic, err)
		}
		return nil
	}
}

// read returns the entries of the log from offset from to its end at the
// time of the call (records that are not entries are skipped with a
// warning), and the offset after them.
func (d *Log) read(ctx context.Context, from int64) (int64, []wire.Watermark, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	starts, err := d.conn.Starts(ctx, d.topic)
	if err != nil {
		return from, nil, err
	}
	ends, err := d.conn.Ends(ctx, d.topic)
	if err != nil {
		return from, nil, err
	}
	from, end := max(from, starts[0]), ends[0]
	var out []wire.Watermark
	f := d.conn.Fetcher(d.topic, 0, from, 0)
	for stalls := 0; f.Next < end && stalls < 3; {
		before := f.Next
		res, err := f.Fetch(ctx)
		var pe *kafkaconn.PartitionError
		if errors.As(err, &pe) && pe.Err == kafka.OffsetOutOfRange {
			// Compaction or retention moved the start meanwhile: read on
			// from the new start.
			if starts, serr := d.conn.Starts(ctx, d.topic); serr == nil && f.Next < starts[0] {
				f.Next = starts[0]
				continue
			}
		}
		if err != nil {
			return from, nil, err
		}
		if f.Next == before && len(res.Records) == 0 {
			stalls++ // nothing more to read below the end (an empty answer): stop after a few
			continue
		}
		for _, m := range res.Records {
			if m.Offset >= end {
				break
			}
			e, err := wire.ParseWatermark(m.Key, m.Value)
			switch {
			case err == nil:
				out = append(out, e)
			case err != nil && m.Value != nil: // a tombstone (nil value) is no entry
				d.log.Warn("delivered log: skipping a record that is not an entry this release reads", zap.Int64("offset", m.Offset),
					zap.String("key", wire.Printable(wire.Cut(string(m.Key), 200))), zap.Error(err))
			}
		}
	}
	// Records at and after end were not applied: the next read starts
	// there (or where a stalled read stopped).
	return min(f.Next, end), out, nil
}

// applyLocked applies one entry in log order (wire.Watermark.Apply).
func (d *Log) applyLocked(e wire.Watermark) {
	key := e.Key()
	d.entries[key] = d.entries[key].Apply(e)
}

// Entry returns the entry of app (its key) in a source partition, if any.
func (d *Log) Entry(app, topic string, partition int) (wire.Watermark, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.entries[wire.DeliveredKey(app, topic, partition)]
	return e, ok
}

// TopicID returns the source topic's id ("" when the broker reports none
// or cannot be asked: then only the log's end guards the watermark).
func (d *Log) TopicID(ctx context.Context, topic string) string {
	d.idMu.Lock() // one lookup at a time: a session's streams start together
	defer d.idMu.Unlock()
	d.mu.Lock()
	c, ok := d.ids[topic]
	d.mu.Unlock()
	if ok && time.Since(c.at) < topicIDTTL {
		return c.id.String()
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ids, err := d.conn.TopicIDs(ctx, []string{topic})
	if err != nil {
		d.log.Warn("cannot read the source topic's id; the delivered log checks the log's end alone this time",
			zap.String("topic", topic), zap.Error(err))
		return ""
	}
	d.mu.Lock()
	d.ids[topic] = topicIDAt{id: ids[topic], at: time.Now()}
	d.mu.Unlock()
	return ids[topic].String()
}

// Watermark builds the entry that records next for a source partition
// with pending, as
// readers will see it applied to what is known (wire.Watermark.Apply:
// raised, never lowered, unless reset is set).
func (d *Log) Watermark(app, topic string, partition int, topicID string, next int64, reset string, pending *wire.Pending) wire.Watermark {
	e := wire.Watermark{V: wire.DeliveredVersion, App: app, Topic: topic, TopicID: topicID, Partition: partition,
		Next: next, Reset: reset, Pending: pending, At: time.Now().UnixMilli(), By: d.by}
	old, _ := d.Entry(app, topic, partition)
	return old.Apply(e)
}

// Message is e as a record of the log.
func (d *Log) Message(e wire.Watermark) kafka.Message {
	return kafka.Message{Key: []byte(e.Key()), Value: e.Encode(), Time: time.UnixMilli(e.At)}
}

// Written applies an entry this worker wrote (its write acknowledged).
func (d *Log) Written(e wire.Watermark) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.applyLocked(e)
}

// Write writes e and waits for all in-sync replicas, once, within a
// bound (the pending record of an unknown outcome: best effort).
func (d *Log) Write(ctx context.Context, e wire.Watermark) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := d.writer.WriteMessages(ctx, d.Message(e)); err != nil {
		return fmt.Errorf("write to the delivered log %s: %w", d.topic, err)
	}
	d.Written(e)
	return nil
}

// Close closes the log's appender.
func (d *Log) Close() error { return d.writer.Close() }

// MayRead reports whether Fresh may read the log for a record of app
// produced at produced: one older than half the dedupe window.
func (d *Log) MayRead(app string, produced, now time.Time) bool {
	return d != nil && app != "" && !produced.IsZero() && now.Sub(produced) >= d.window/2
}

// Fresh returns the floor to skip a record of app ("": none) in a source partition
// by, produced at produced: floor, raised by the log read again when the
// record is older than half the dedupe window (another deployment may
// have delivered it long enough ago that the server would not dedupe a
// resend) and the last read is older than a quarter of it. A fresh record
// never waits for a read.
func (d *Log) Fresh(ctx context.Context, app, topic string, partition int, topicID string, produced, now time.Time, floor int64) int64 {
	if !d.MayRead(app, produced, now) {
		return floor
	}
	if err := d.Refresh(ctx, time.Now().Add(-d.stale)); err != nil {
		d.log.Warn("cannot read the delivered log again; going by what was read before", zap.String("topic", topic),
			zap.Int("partition", partition), zap.Error(err))
		return floor
	}
	if e, ok := d.Entry(app, topic, partition); ok && e.SameTopic(topicID) {
		floor = max(floor, e.Next)
	}
	return floor
}
