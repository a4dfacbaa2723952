package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
	"github.com/timbroadcast/timbroadcast/consumer/metrics"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// The delivered log: never twice, whatever happens to offsets. The
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
// watermark (truncated) lowers it, loudly, so new records at those
// offsets are delivered. Neither skips nor resends silently.
//
// Cost: one produce (acks=all) per call, between the API's OK and the
// commit; one read of the log's new entries per session start, and while
// old records are sent at most one per DedupeWindow/4. Nothing while idle.
// Memory: one entry per source partition (a few hundred bytes each).

// deliveredLog is this worker's view of the delivered log.
type deliveredLog struct {
	conn *kafkaconn.Conn
	// writer appends to the log (its one partition), the concurrent
	// writes of every stream in one request.
	writer  topicAppender
	topic   string
	by      string
	log     *zap.Logger
	metrics *metrics.Metrics
	// stale is how old the view may be before a record older than
	// DedupeWindow/2 is sent (DedupeWindow/4).
	stale time.Duration

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

// truncationSkew is how much later than a delivered-log entry a record's
// timestamp must be for the record to count as produced after it (clocks
// of producers and workers differ a little).
const truncationSkew = time.Second

// topicIDTTL is how long a topic's id is taken as known: a session start
// asks again after it (a rebalance starts every partition at once).
const topicIDTTL = 10 * time.Second

func newDeliveredLog(conn *kafkaconn.Conn, cfg Config) *deliveredLog {
	return &deliveredLog{
		conn: conn, writer: topicAppender{conn.Appender(cfg.DeliveredTopic, 0), cfg.DeliveredTopic}, topic: cfg.DeliveredTopic, log: cfg.Logger.Named("delivered"),
		metrics: cfg.Metrics, stale: cfg.DedupeWindow / 4, entries: map[string]wire.Watermark{},
		ids: map[string]topicIDAt{},
	}
}

// check verifies the log's topic, creating it when missing (compacted,
// one partition). A topic that cannot be created or has several
// partitions is a configuration error naming KAFKA_DELIVERED_TOPIC.
func (d *deliveredLog) check(ctx context.Context) error {
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

// refresh reads the log's entries written since the last read, unless a
// read that started at or after notBefore has completed. Concurrent
// callers share one read.
func (d *deliveredLog) refresh(ctx context.Context, notBefore time.Time) error {
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
func (d *deliveredLog) read(ctx context.Context, from int64) (int64, []wire.Watermark, error) {
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
func (d *deliveredLog) applyLocked(e wire.Watermark) {
	key := e.Key()
	d.entries[key] = d.entries[key].Apply(e)
}

// entry returns the entry of app (its key) in tp, if any.
func (d *deliveredLog) entry(app string, tp topicPartition) (wire.Watermark, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.entries[wire.DeliveredKey(app, tp.topic, tp.partition)]
	return e, ok
}

// topicID returns the source topic's id ("" when the broker reports none
// or cannot be asked: then only the log's end guards the watermark).
func (d *deliveredLog) topicID(ctx context.Context, topic string) string {
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

// watermark builds the entry that records next for tp with pending, as
// readers will see it applied to what is known (wire.Watermark.Apply:
// raised, never lowered, unless reset is set).
func (d *deliveredLog) watermark(app string, tp topicPartition, topicID string, next int64, reset string, pending *wire.Pending) wire.Watermark {
	e := wire.Watermark{V: wire.DeliveredVersion, App: app, Topic: tp.topic, TopicID: topicID, Partition: tp.partition,
		Next: next, Reset: reset, Pending: pending, At: time.Now().UnixMilli(), By: d.by}
	old, _ := d.entry(app, tp)
	return old.Apply(e)
}

// message is e as a record of the log.
func (d *deliveredLog) message(e wire.Watermark) kafka.Message {
	return kafka.Message{Key: []byte(e.Key()), Value: e.Encode(), Time: time.UnixMilli(e.At)}
}

// written applies an entry this worker wrote (its write acknowledged).
func (d *deliveredLog) written(e wire.Watermark) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.applyLocked(e)
}

// write writes e and waits for all in-sync replicas, once, within a
// bound (the pending record of an unknown outcome: best effort).
func (d *deliveredLog) write(ctx context.Context, e wire.Watermark) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := d.writer.WriteMessages(ctx, d.message(e)); err != nil {
		return fmt.Errorf("write to the delivered log %s: %w", d.topic, err)
	}
	d.written(e)
	return nil
}

// Close closes the log's writer.
func (d *deliveredLog) Close() error { return d.writer.Close() }

// --- the partition's side -------------------------------------------------

// deliveredFloor reads the delivered log for the partition at the start
// of a session that starts at offset start, and returns the offset below
// which its records were delivered already (-1 for none). It checks the
// entry first: an entry of an earlier topic of the same name (another id)
// does not apply, and one above the log's end is lowered to it, each with
// an error log, a metric and a note in /readyz.
func (s *stream) deliveredFloor(start int64) (int64, error) {
	d := s.w.delivered
	if d == nil || s.app == nil {
		return -1, nil
	}
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(200*time.Millisecond), backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0))
	since := s.deliveredSince
	for {
		err := d.refresh(s.taking, since)
		if err == nil {
			break
		}
		if !s.readFailed(s.taking, bo, start, "cannot read the delivered log (KAFKA_DELIVERED_TOPIC); the partition waits and retries",
			"delivered log: ", err) {
			return 0, s.ended(err)
		}
	}
	s.topicID = d.topicID(s.taking, s.tp.topic)
	e, ok := d.entry(s.app.key, s.tp)
	if !ok || e.Next <= 0 {
		return -1, nil
	}
	if !e.SameTopic(s.topicID) {
		s.log.Warn("the source topic was deleted and created again under its name (its id changed): what the delivered log "+
			"remembers of the old topic does not apply, and every record of the new one is delivered",
			zap.String("remembered_topic_id", e.TopicID), zap.String("topic_id", s.topicID), zap.Int64("old_watermark", e.Next))
		s.w.notes.Add(s.w.cfg.Now(), fmt.Sprintf("%s: the topic was created again (id %s, was %s); the delivered log starts over for it",
			s.tp, s.topicID, e.TopicID))
		s.w.metrics.RecordWatermarkReset("topic_recreated")
		return -1, nil
	}
	end, err := s.logEnd(false)
	if err == nil && end < e.Next {
		end, err = s.logEnd(true) // the end read at the session's start may be behind
	}
	if err != nil {
		return 0, s.ended(err)
	}
	if end < e.Next {
		// What the log holds now was delivered, unless it was produced
		// after the entry was written (a topic created again on a broker
		// without topic ids): those records are new.
		floor := end
		if newer, err := s.offsets.OffsetAt(s.taking, time.UnixMilli(e.At).Add(truncationSkew)); err == nil && newer >= 0 && newer < floor {
			floor = newer
		}
		s.log.Error("the partition's log ends below what the delivered log says was delivered: records were lost (an unclean "+
			"leader election, or the topic created again on a broker without topic ids); the records it holds from before the "+
			"last delivery recorded are taken as delivered, those after are delivered", zap.Int64("log_end", end),
			zap.Int64("delivered_watermark", e.Next), zap.Int64("lowered_to", floor), zap.Time("last_recorded_at", time.UnixMilli(e.At)))
		s.w.notes.Add(s.w.cfg.Now(), fmt.Sprintf("%s: the log ends at %d, below the delivered watermark %d (truncated); lowered to %d",
			s.tp, end, e.Next, floor))
		s.w.metrics.RecordWatermarkReset(wire.ResetLogTruncated)
		lowered := d.watermark(s.app.key, s.tp, s.topicID, floor, wire.ResetLogTruncated, nil)
		if err := s.writeHeld(s.log, "delivered log write", d.writer, start, []kafka.Message{d.message(lowered)}, nil, nil); err != nil {
			return 0, err
		}
		d.written(lowered)
		return floor, nil
	}
	if start < e.Next {
		s.log.Info("records from the start offset on were delivered already (delivered log): they are committed as "+
			"already_delivered, not sent", zap.Int64("from_offset", start), zap.Int64("to_offset", e.Next-1),
			zap.String("delivered_log", d.topic), zap.String("written_by", wire.Printable(wire.Cut(e.By, 128))))
	}
	return e.Next, nil
}

// recordDelivered records in the delivered log that every record up to
// c's last member has its outcome, before c is committed: written and
// acknowledged, or the partition holds.
func (s *stream) recordDelivered(c *call) error {
	d := s.w.delivered
	if d == nil || s.app == nil {
		return nil
	}
	e := d.watermark(s.app.key, s.tp, s.topicID, c.lastOffset()+1, "", nil)
	if err := s.writeHeld(c.log, "delivered log write", d.writer, c.firstOffset(), []kafka.Message{d.message(e)}, nil, nil); err != nil {
		return err
	}
	d.written(e)
	s.floor = max(s.floor, e.Next)
	return nil
}

// recordSettled records in the delivered log that every record of the
// stream's app up to offset last has its final outcome (several apps: the
// commit waits below them for another app's record).
func (s *stream) recordSettled(last int64) error {
	d := s.w.delivered
	if d == nil || s.app == nil {
		return nil
	}
	e := d.watermark(s.app.key, s.tp, s.topicID, last+1, "", nil)
	if err := s.writeHeld(s.log, "delivered log write", d.writer, last, []kafka.Message{d.message(e)}, nil, nil); err != nil {
		return err
	}
	d.written(e)
	s.floor = max(s.floor, e.Next)
	return nil
}

// recordUnknown records in the delivered log that c's first attempt with
// an unknown outcome started at since, so whoever sends c next (this
// member after a restart, another after a crash, a new group) resends it
// only while the server still dedupes it. Best effort: a failed write is
// logged, and the call goes on.
func (s *stream) recordUnknown(c *call, since time.Time) {
	d := s.w.delivered
	if d == nil || s.app == nil {
		return
	}
	pending := &wire.Pending{First: c.firstOffset(), Last: c.lastOffset(), Random: c.random, UnknownSince: since.UnixMilli()}
	next := c.firstOffset()
	if e, ok := d.entry(s.app.key, s.tp); ok {
		next = e.Next
	}
	if err := d.write(s.sending, d.watermark(s.app.key, s.tp, s.topicID, next, "", pending)); err != nil {
		c.log.Warn("cannot record the unknown outcome in the delivered log: after a crash the next owner resends the call "+
			"even past the dedupe window", zap.Error(err))
	}
}

// unknownSince returns when a call recorded as pending in the delivered
// log (same first offset, same Random) first had an unknown outcome; zero
// for none.
func (s *stream) unknownSince(c *call) time.Time {
	d := s.w.delivered
	if d == nil || s.app == nil {
		return time.Time{}
	}
	e, ok := d.entry(s.app.key, s.tp)
	if !ok || e.Pending == nil || e.Pending.First != c.firstOffset() || e.Pending.Random != c.random {
		return time.Time{}
	}
	return time.UnixMilli(e.Pending.UnknownSince)
}

// freshFloor returns the floor to skip rec by: the session's, raised by
// the delivered log read again when rec is older than half the dedupe
// window (another deployment may have delivered it long enough ago that
// the server would not dedupe a resend) and the last read is older than a
// quarter of it. A fresh record never waits for a read.
func (s *stream) freshFloor(rec *record) int64 {
	d := s.w.delivered
	if d == nil || s.app == nil || rec.msg.Time.IsZero() || s.w.cfg.Now().Sub(rec.msg.Time) < s.w.cfg.DedupeWindow/2 {
		return s.floor
	}
	if err := d.refresh(s.taking, time.Now().Add(-d.stale)); err != nil {
		s.log.Warn("cannot read the delivered log again; going by what was read before", zap.Error(err))
		return s.floor
	}
	if e, ok := d.entry(s.app.key, s.tp); ok && e.SameTopic(s.topicID) {
		s.floor = max(s.floor, e.Next)
	}
	return s.floor
}
