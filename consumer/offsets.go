package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// kafkaClient is the part of *kafka.Client the worker calls directly: small
// enough that commits and resumes are testable without a broker.
type kafkaClient interface {
	Metadata(context.Context, *kafka.MetadataRequest) (*kafka.MetadataResponse, error)
	OffsetFetch(context.Context, *kafka.OffsetFetchRequest) (*kafka.OffsetFetchResponse, error)
	OffsetCommit(context.Context, *kafka.OffsetCommitRequest) (*kafka.OffsetCommitResponse, error)
	ListOffsets(context.Context, *kafka.ListOffsetsRequest) (*kafka.ListOffsetsResponse, error)
}

// errGenerationGone says the broker refused a commit because this member's
// generation has ended (a rebalance): the partition stops and the worker
// rejoins.
var errGenerationGone = errors.New("the consumer-group generation has ended")

// offsets commits and reads back one partition's offsets within one
// generation: commits carry the generation and member id, so the broker
// refuses them once the partition has moved on.
type offsets struct {
	client     kafkaClient
	group      string
	generation int32
	member     string
	topic      string
	partition  int
	metrics    *Metrics
	// retryWait is the first wait between reads that failed; default
	// 100ms, doubling to 5s.
	retryWait time.Duration
}

// commit stores the next offset to read, with metadata (an in-flight
// record, or ""). Transient errors are retried a few times; an error that
// says the generation is gone wraps errGenerationGone.
func (o *offsets) commit(next int64, metadata string) error {
	start := time.Now()
	var err error
	for attempt := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var resp *kafka.OffsetCommitResponse
		resp, err = o.client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
			GroupID:      o.group,
			GenerationID: int(o.generation),
			MemberID:     o.member,
			Topics:       map[string][]kafka.OffsetCommit{o.topic: {{Partition: o.partition, Offset: next, Metadata: metadata}}},
		})
		cancel()
		if err == nil {
			for _, p := range resp.Topics[o.topic] {
				if p.Error != nil {
					err = p.Error
				}
			}
		}
		if err == nil {
			o.metrics.observeCommit(time.Since(start))
			return nil
		}
		var kerr kafka.Error
		if errors.As(err, &kerr) && !kerr.Temporary() {
			return fmt.Errorf("commit offset %d: %w (%w)", next, err, errGenerationGone)
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
	return fmt.Errorf("commit offset %d: %w", next, err)
}

// read returns the committed offset (-1 for none) and the call recorded as
// in flight there, if any. Every error, a group-level one in the answer
// included (COORDINATOR_LOAD_IN_PROGRESS, say), is retried until ctx
// ends: an error is never taken as "nothing in flight".
func (o *offsets) read(ctx context.Context, log *zap.Logger) (int64, *wire.InFlight, error) {
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(o.wait()), backoff.WithMaxInterval(5*time.Second), backoff.WithMaxElapsedTime(0))
	for attempt := 1; ; attempt++ {
		committed, f, err := o.readOnce(ctx)
		if err == nil {
			return committed, f, nil
		}
		log.Warn("cannot read the committed offset; retrying", zap.Int("attempt", attempt), zap.Error(err))
		if err := sleepCtx(ctx, bo.NextBackOff()); err != nil {
			return 0, nil, err
		}
	}
}

func (o *offsets) wait() time.Duration {
	if o.retryWait > 0 {
		return o.retryWait
	}
	return 100 * time.Millisecond
}

func (o *offsets) readOnce(ctx context.Context) (int64, *wire.InFlight, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := o.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: o.group, Topics: map[string][]int{o.topic: {o.partition}}})
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err != nil {
		return 0, nil, fmt.Errorf("read the committed offset of %s/%d: %w", o.topic, o.partition, err)
	}
	for _, po := range resp.Topics[o.topic] {
		if po.Partition != o.partition {
			continue
		}
		if po.Error != nil {
			return 0, nil, fmt.Errorf("read the committed offset of %s/%d: %w", o.topic, o.partition, po.Error)
		}
		if f, ok := wire.ParseInFlight(po.Metadata); ok && po.CommittedOffset >= 0 && f.Last >= po.CommittedOffset {
			return po.CommittedOffset, &f, nil
		}
		return po.CommittedOffset, nil, nil
	}
	return -1, nil, nil
}

// bounds returns the partition's log start offset and end offset (the high
// watermark).
func (o *offsets) bounds(ctx context.Context) (start, end int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := o.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		o.topic: {kafka.FirstOffsetOf(o.partition), kafka.LastOffsetOf(o.partition)},
	}})
	if err != nil {
		return 0, 0, fmt.Errorf("list offsets of %s/%d: %w", o.topic, o.partition, err)
	}
	for _, po := range resp.Topics[o.topic] {
		if po.Partition != o.partition {
			continue
		}
		if po.Error != nil {
			return 0, 0, fmt.Errorf("list offsets of %s/%d: %w", o.topic, o.partition, po.Error)
		}
		return po.FirstOffset, po.LastOffset, nil
	}
	return 0, 0, fmt.Errorf("list offsets of %s/%d: partition missing from the answer", o.topic, o.partition)
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// resume finishes a call recorded as in flight by an earlier owner (or by
// this one before a restart): the same records, the same bytes, so the
// server's dedupe discards a resend. A call recorded as delivered is not
// sent again: its receipts are written and it is committed. A call that
// cannot be rebuilt byte for byte (its records were compacted away or
// changed) is sent record by record, with a warning: never a reason to stop
// the partition.
func (p *partition) resume(offset int64, f wire.InFlight) (err error) {
	log := p.log.With(zap.Int64("first_offset", offset), zap.Int64("last_offset", f.Last), zap.Uint32("random", f.Random))
	log.Info("resuming the call recorded as in flight", zap.Bool("delivered", f.Delivered != nil))
	_, end, err := p.offsets.bounds(p.fetchCtx)
	if err != nil {
		return err
	}
	var got []item
	for offset < end {
		it, err := p.nextItem()
		if err != nil {
			return err
		}
		if it.skipTo != 0 {
			// Positions without records: inside the call's range they are
			// passed over; past it, or at the log end, the call ends here.
			if it.skipTo > f.Last || it.skipTo >= end {
				p.unread(it)
				break
			}
			continue
		}
		m := it.msg
		if m.Offset > f.Last {
			p.unread(it) // the call's last records are gone (compaction)
			break
		}
		got = append(got, it)
		if m.Offset == f.Last || m.Offset+1 >= end {
			break
		}
	}
	members := make([]member, len(got))
	errs := make([]error, len(got))
	decoded := true
	for i, it := range got {
		var ev *wire.Event
		ev, errs[i] = decode(it.msg)
		members[i] = p.member(it, ev)
		decoded = decoded && errs[i] == nil
	}
	defer func() { endMembers(err, members...) }()
	if d := f.Delivered; d != nil && decoded && len(members) > 0 {
		c := call{res: resultDelivered, random: f.Random, events: len(members), attempts: d.Attempts, msgSeq: d.MsgSeq,
			first: d.FirstAttempt, at: d.Call, final: d.Final}
		if err := p.writeReceipts(log, members, deliveredReceipts(members, c)); err != nil {
			return err
		}
		return p.offsets.commit(f.Last+1, "")
	}
	if decoded && len(got) > 0 && got[0].msg.Offset == offset && got[len(got)-1].msg.Offset == f.Last {
		body, random, err := p.w.build(members)
		if err == nil && random == f.Random {
			return p.finish(log, members, body, random, false, true)
		}
	}
	log.Warn("the call recorded as in flight cannot be rebuilt byte for byte (records compacted away or changed); "+
		"sending its surviving records one by one: if the earlier call reached the server, these events may be shown twice",
		zap.Int("surviving_records", len(got)))
	for i, m := range members {
		if err := p.handle(m, errs[i], true); err != nil {
			return err
		}
		if err := p.commitPast(m); err != nil {
			return err
		}
	}
	return nil
}
