package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// replayFilter chooses dead-letter records to replay.
type replayFilter struct {
	reasons        []string
	codes          []int
	since, until   time.Time
	fromOff, toOff int64 // dead-letter offsets, inclusive; -1 = open
}

func (f replayFilter) String() string {
	return fmt.Sprintf("reasons=%v codes=%v since=%v until=%v offsets=%d..%d", f.reasons, f.codes,
		f.since.UTC().Format(time.RFC3339), f.until.UTC().Format(time.RFC3339), f.fromOff, f.toOff)
}

// match reports whether a dead-letter record passes the filter.
func (f replayFilter) match(m kafka.Message) bool {
	h := func(k string) string { return wire.Header(m, k) }
	if len(f.reasons) > 0 && !slices.Contains(f.reasons, h(wire.HeaderDLQReason)) {
		return false
	}
	if len(f.codes) > 0 {
		c, err := strconv.Atoi(h(wire.HeaderDLQCode))
		if err != nil || !slices.Contains(f.codes, c) {
			return false
		}
	}
	if !f.since.IsZero() || !f.until.IsZero() {
		at, err := time.Parse(time.RFC3339Nano, h(wire.HeaderDLQFailedAt))
		if err != nil || (!f.since.IsZero() && at.Before(f.since)) || (!f.until.IsZero() && !at.Before(f.until)) {
			return false
		}
	}
	if f.fromOff >= 0 && m.Offset < f.fromOff {
		return false
	}
	if f.toOff >= 0 && m.Offset > f.toOff {
		return false
	}
	return true
}

// replayCmd is `timbroadcast replay`: it re-publishes the dead-letter
// records that pass a filter to the main topic, remembering its progress
// in a consumer group so a rerun never replays a record twice.
type replayCmd struct {
	kafkaAccess
	main, dlq string
	groupID   string
	filter    replayFilter
	dryRun    bool
	wait      receiptWait // for the receipts of the replayed events
	stdout    io.Writer
	stderr    io.Writer
	bars      bool
}

// parseReplay resolves the replay command's settings.
func parseReplay(p process, args []string) (*replayCmd, error) {
	s := p.settings("replay")
	k := addKafkaSettings(s, "")
	t := addTopicSettings(s, "the main topic to re-publish to", "the dead-letter topic to read")
	group := s.add("group", "REPLAY_GROUP_ID", "", "consumer group holding the replay's progress [default: derived from the filter]")
	reason := s.add("reason", "", "", "replay only these reasons, comma-separated (e.g. api_rejected,expired)")
	code := s.add("code", "", "", "replay only these API error codes, comma-separated")
	since := s.add("since", "", "", "replay only records that failed at or after this RFC 3339 time")
	until := s.add("until", "", "", "replay only records that failed before this RFC 3339 time")
	fromOff := s.add("from-offset", "", "", "first dead-letter offset to replay")
	toOff := s.add("to-offset", "", "", "last dead-letter offset to replay")
	dryRun := s.boolFlag("dry-run", "list what would be replayed; publish and commit nothing")
	toUrgent := s.boolFlag("urgent", "re-publish to the urgent topic (KAFKA_URGENT_TOPIC) instead of KAFKA_TOPIC")
	wait := addWaitSettings(s)
	if err := s.parse(args); err != nil {
		return nil, err
	}
	c := &replayCmd{dryRun: *dryRun, stdout: p.stdout, stderr: p.stderr, bars: p.terminal}
	var err error
	if c.kafkaAccess, err = k.access(p.logger); err != nil {
		return nil, err
	}
	if c.main, c.dlq, err = t.resolve(); err != nil {
		return nil, err
	}
	if *toUrgent {
		if c.main = t.urgent.String(); c.main == "" {
			return nil, t.urgent.errorf("is required with --urgent")
		}
	}
	if c.wait, err = wait.resolve(c.dryRun, c.main); err != nil {
		return nil, err
	}
	f := replayFilter{reasons: reason.list(), fromOff: -1, toOff: -1}
	for _, cd := range code.list() {
		n, err := strconv.Atoi(cd)
		if err != nil {
			return nil, code.errorf("%q is not an error code", cd)
		}
		f.codes = append(f.codes, n)
	}
	for _, t := range []struct {
		st  *setting
		dst *time.Time
	}{{since, &f.since}, {until, &f.until}} {
		if t.st.String() == "" {
			continue
		}
		if *t.dst, err = time.Parse(time.RFC3339, t.st.String()); err != nil {
			return nil, t.st.errorf("%q is not an RFC 3339 time", t.st.val)
		}
	}
	for _, o := range []struct {
		st  *setting
		dst *int64
	}{{fromOff, &f.fromOff}, {toOff, &f.toOff}} {
		if o.st.String() == "" {
			continue
		}
		if *o.dst, err = strconv.ParseInt(o.st.String(), 10, 64); err != nil || *o.dst < 0 {
			return nil, o.st.errorf("%q is not an offset", o.st.val)
		}
	}
	c.filter = f
	c.groupID = group.String()
	if c.groupID == "" {
		c.groupID = replayGroup(c.dlq, c.main, f)
	}
	return c, nil
}

// replayGroup is the default progress group of a replay: one per source,
// destination and filter, so the same replay resumes where it stopped.
func replayGroup(dlq, main string, f replayFilter) string {
	sum := sha256.Sum256([]byte(dlq + "\x00" + main + "\x00" + f.String()))
	return "timbroadcast-replay-" + hex.EncodeToString(sum[:6])
}

// Run replays.
func (c *replayCmd) Run(ctx context.Context) error {
	if err := c.check(ctx); err != nil {
		return err
	}
	dlqTopic, main, groupID, f := c.dlq, c.main, c.groupID, c.filter
	client := c.conn.Client()
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{dlqTopic, main}})
	if err != nil {
		return fmt.Errorf("read metadata: %w", err)
	}
	var parts []int
	for _, t := range md.Topics {
		if t.Error != nil {
			return fmt.Errorf("topic %s: %w", t.Name, t.Error)
		}
		if t.Name == dlqTopic {
			for _, p := range t.Partitions {
				parts = append(parts, p.ID)
			}
		}
	}
	sort.Ints(parts)
	starts, ends, err := replayRange(ctx, client, groupID, dlqTopic, parts)
	if err != nil {
		return err
	}
	total := int64(0)
	for _, p := range parts {
		total += max(ends[p]-starts[p], 0)
	}
	fmt.Fprintf(c.stdout, "replaying %s -> %s (group %s): %d dead-letter record(s) to examine\n", dlqTopic, main, groupID, total)

	var w *kafka.Writer
	var await *receiptAwait
	if !c.dryRun {
		w = c.conn.Writer(main)
		w.BatchSize = 1
		defer w.Close()
		if await, err = c.wait.start(ctx, c.conn, main, w); err != nil {
			return err
		}
	}
	bar := newBar(int(total), "replaying", c.stderr, c.bars)
	replayed, skipped := 0, 0
	for _, p := range parts {
		if starts[p] >= ends[p] {
			continue
		}
		fetch := c.conn.Fetcher(dlqTopic, p, starts[p], 250*time.Millisecond)
		for fetch.Next < ends[p] {
			res, err := fetch.Fetch(ctx)
			if err != nil {
				return fmt.Errorf("read %s/%d: %w (replayed %d so far; rerun to resume)", dlqTopic, p, err, replayed)
			}
			for _, o := range res.Oversized {
				if o.Offset < ends[p] {
					skipped++
					fmt.Fprintf(c.stderr, "  skipped %s/%d@%d..%d: %s (replay reads records up to the default limits)\n", dlqTopic, p, o.Offset, o.Last, o.Limit)
				}
			}
			for _, m := range res.Records {
				if m.Offset >= ends[p] {
					break
				}
				_ = bar.Add(1)
				switch {
				case !f.match(m):
					skipped++
				case c.dryRun:
					replayed++
					fmt.Fprintf(c.stdout, "  would replay %s/%d@%d key=%q reason=%s code=%s failed-at=%s source=%s/%s@%s\n",
						dlqTopic, p, m.Offset, m.Key, wire.Header(m, wire.HeaderDLQReason), wire.Header(m, wire.HeaderDLQCode),
						wire.Header(m, wire.HeaderDLQFailedAt), wire.Header(m, wire.HeaderSourceTopic),
						wire.Header(m, wire.HeaderSourcePartition), wire.Header(m, wire.HeaderSourceOffset))
					continue
				default:
					if err := w.WriteMessages(ctx, wire.ReplayMessage(m)); err != nil {
						return fmt.Errorf("publish to %s: %w (replayed %d so far; rerun to resume)", main, err, replayed)
					}
					replayed++
				}
				if !c.dryRun {
					// The record is final for the replay: remember it, so a
					// rerun never replays it again.
					if err := commitStandalone(ctx, client, groupID, dlqTopic, p, m.Offset+1); err != nil {
						return fmt.Errorf("commit replay progress: %w", err)
					}
				}
			}
		}
	}
	_ = bar.Finish()
	verb := "replayed"
	if c.dryRun {
		verb = "would replay"
	}
	fmt.Fprintf(c.stdout, "%s %d record(s), skipped %d not matching the filter\n", verb, replayed, skipped)
	return await.wait(ctx, c.stdout)
}

// replayRange returns, per partition, the replay group's committed offset
// (0 if none) and the high watermark now.
func replayRange(ctx context.Context, client *kafka.Client, group, topic string, parts []int) (map[int]int64, map[int]int64, error) {
	starts, ends := map[int]int64{}, map[int]int64{}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, p := range parts {
		req.Topics[topic] = append(req.Topics[topic], kafka.LastOffsetOf(p), kafka.FirstOffsetOf(p))
	}
	lo, err := client.ListOffsets(ctx, req)
	if err != nil {
		return nil, nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	first := map[int]int64{}
	for _, po := range lo.Topics[topic] {
		if po.Error != nil {
			return nil, nil, fmt.Errorf("list offsets of %s/%d: %w", topic, po.Partition, po.Error)
		}
		ends[po.Partition] = po.LastOffset
		first[po.Partition] = po.FirstOffset
	}
	of, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err == nil && of.Error != nil {
		err = of.Error
	}
	if errors.Is(err, kafka.GroupIdNotFound) {
		// A first run: the group has no progress yet.
		of, err = &kafka.OffsetFetchResponse{}, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read the replay's progress (group %s): %w", group, err)
	}
	for _, p := range parts {
		starts[p] = max(first[p], 0)
	}
	for _, po := range of.Topics[topic] {
		if po.Error == nil && po.CommittedOffset >= 0 {
			starts[po.Partition] = max(po.CommittedOffset, first[po.Partition])
		}
	}
	return starts, ends, nil
}

// commitStandalone commits an offset for a group without members (the
// replay is its group's only user, and needs no membership).
func commitStandalone(ctx context.Context, client *kafka.Client, group, topic string, partition int, next int64) error {
	resp, err := client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
		GroupID: group, GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{topic: {{Partition: partition, Offset: next}}},
	})
	if err != nil {
		return err
	}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return p.Error
		}
	}
	return nil
}
