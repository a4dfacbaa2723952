package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// forgetCmd is `timbroadcast forget`: the delivered log forgets what was
// delivered from an offset (or a time) on, for the source topic's
// partitions, so records read again from there (after the group's offsets
// are reset to re-broadcast them on purpose) are sent again. It writes one
// entry per partition that lowers the watermark (reset "forget"); the
// workers must be stopped while it runs, as resetting the group's offsets
// needs anyway: a running worker remembers what it read before.
type forgetCmd struct {
	kafkaAccess
	app        string
	topic, log string
	partitions []int // nil: every partition
	fromOffset int64 // -1: by fromTime
	fromTime   time.Time
	dryRun     bool
	stdout     io.Writer
	now        func() time.Time
}

func parseForget(p process, args []string) (*forgetCmd, error) {
	s := p.settings("forget")
	k := addKafkaSettings(s, "")
	topic := s.add("topic", "KAFKA_TOPIC", "", "source topic whose deliveries to forget (the urgent topic's too, when named here)")
	log := s.add("delivered-topic", "KAFKA_DELIVERED_TOPIC", "<topic>.delivered", "the workers' delivered log")
	app := s.add("sdkappid", "TIM_SDKAPPID", "", "the app whose deliveries to forget")
	parts := s.add("partitions", "", "", "comma-separated partitions [default: all]")
	fromOffset := s.add("from-offset", "", "", "forget deliveries of records at this offset and after (in each partition)")
	fromTime := s.add("from-time", "", "", "forget deliveries of records produced at this RFC 3339 time and after")
	dry := s.boolFlag("dry-run", "print what would be forgotten, change nothing")
	if err := s.parse(args); err != nil {
		return nil, err
	}
	c := &forgetCmd{dryRun: *dry, stdout: p.stdout, now: time.Now, fromOffset: -1}
	var err error
	if c.kafkaAccess, err = k.access(p.logger); err != nil {
		return nil, err
	}
	if c.conn == nil {
		return nil, k.brokers.errorf("is required (%s)", k.brokers.usage)
	}
	if c.topic, err = topic.required(); err != nil {
		return nil, err
	}
	if c.log = log.String(); c.log == "<topic>.delivered" || c.log == "" {
		c.log = c.topic + ".delivered"
	}
	if c.log == "off" {
		return nil, log.errorf("is off: there is nothing to forget")
	}
	if c.app, err = app.required(); err != nil {
		return nil, err
	}
	if n, err := strconv.Atoi(c.app); err != nil || n <= 0 {
		return nil, app.errorf("%q is not an SDKAppID (a positive number)", c.app)
	}
	for _, p := range parts.list() {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, parts.errorf("%q is not a partition number", p)
		}
		c.partitions = append(c.partitions, n)
	}
	switch {
	case fromOffset.String() != "" && fromTime.String() != "":
		return nil, errors.New("--from-offset and --from-time are both set; set one")
	case fromOffset.String() != "":
		if c.fromOffset, err = strconv.ParseInt(fromOffset.String(), 10, 64); err != nil || c.fromOffset < 0 {
			return nil, fromOffset.errorf("%q is not an offset", fromOffset.val)
		}
	case fromTime.String() != "":
		if c.fromTime, err = time.Parse(time.RFC3339, fromTime.String()); err != nil {
			return nil, fromTime.errorf("%q is not an RFC 3339 time (2026-12-01T08:00:00Z)", fromTime.val)
		}
	default:
		return nil, errors.New("--from-offset or --from-time is required: where the forgetting starts")
	}
	return c, nil
}

// Run lowers the watermark of each partition, printing what it forgot.
func (c *forgetCmd) Run(ctx context.Context) error {
	conn := c.conn
	parts, err := conn.Partitions(ctx, c.topic)
	if err != nil {
		return fmt.Errorf("forget: %w", err)
	}
	if c.partitions != nil {
		have := map[int]bool{}
		for _, p := range parts {
			have[p] = true
		}
		for _, p := range c.partitions {
			if !have[p] {
				return fmt.Errorf("forget: topic %s has no partition %d (it has %d)", c.topic, p, len(parts))
			}
		}
		parts = c.partitions
	}
	sort.Ints(parts)
	from := map[int]int64{}
	if c.fromOffset >= 0 {
		for _, p := range parts {
			from[p] = c.fromOffset
		}
	} else {
		at, err := conn.OffsetsAt(ctx, c.topic, c.fromTime)
		if err != nil {
			return fmt.Errorf("forget: %w", err)
		}
		ends, err := conn.Ends(ctx, c.topic)
		if err != nil {
			return fmt.Errorf("forget: %w", err)
		}
		for _, p := range parts {
			if off, ok := at[p]; ok && off >= 0 {
				from[p] = off
			} else {
				from[p] = ends[p] // nothing produced since: nothing to forget
			}
		}
	}
	entries, err := readDelivered(ctx, conn, c.log)
	if err != nil {
		return fmt.Errorf("forget: %w", err)
	}
	ids, err := conn.TopicIDs(ctx, []string{c.topic})
	if err != nil {
		return fmt.Errorf("forget: %w", err)
	}
	var msgs []kafka.Message
	for _, p := range parts {
		key := wire.DeliveredKey(c.app, c.topic, p)
		old, ok := entries[key]
		if !ok || old.Next <= from[p] {
			fmt.Fprintf(c.stdout, "%s/%d: nothing delivered at or after offset %d on record; nothing to forget\n", c.topic, p, from[p])
			continue
		}
		e := wire.Watermark{V: wire.DeliveredVersion, App: c.app, Topic: c.topic, TopicID: ids[c.topic].String(), Partition: p,
			Next: from[p], Reset: wire.ResetForget, At: c.now().UnixMilli(), By: "forget"}
		msgs = append(msgs, kafka.Message{Key: []byte(key), Value: e.Encode(), Time: time.UnixMilli(e.At)})
		verb := "forgot"
		if c.dryRun {
			verb = "would forget"
		}
		fmt.Fprintf(c.stdout, "%s/%d: %s deliveries of offsets %d to %d: read again, they are sent again\n", c.topic, p, verb, from[p], old.Next-1)
	}
	if len(msgs) == 0 || c.dryRun {
		return nil
	}
	if err := conn.Produce(ctx, c.log, msgs...); err != nil {
		return fmt.Errorf("forget: %w", err)
	}
	fmt.Fprintf(c.stdout, "Now reset the group's offsets to where the broadcast should start again, with the workers stopped, e.g.\n"+
		"  kafka-consumer-groups --bootstrap-server <brokers> --group <KAFKA_GROUP_ID> --topic %s --reset-offsets --to-offset <offset> --execute\n"+
		"then start the workers.\n", strings.TrimSpace(c.topic))
	return nil
}

// readDelivered reads the whole delivered log topic and returns its
// entries by key as the workers compute them (wire.Watermark.Apply in log
// order); records that are not entries are passed over.
func readDelivered(ctx context.Context, conn *kafkaconn.Conn, topic string) (map[string]wire.Watermark, error) {
	records, err := conn.ReadFrom(ctx, topic, nil)
	if err != nil {
		return nil, fmt.Errorf("read the delivered log %s: %w", topic, err)
	}
	entries := map[string]wire.Watermark{}
	for _, m := range records {
		if e, err := wire.ParseWatermark(m.Key, m.Value); err == nil {
			entries[e.Key()] = entries[e.Key()].Apply(e)
		}
	}
	return entries, nil
}
