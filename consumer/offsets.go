package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/group"
	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
	"github.com/timbroadcast/timbroadcast/consumer/metrics"
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
// rejoins. It is the only commit error that makes the member rejoin.
var errGenerationGone = errors.New("the consumer-group generation has ended")

// generationGone reports whether a commit error says the generation is
// over: the member must rejoin to get a new one.
func generationGone(err error) bool {
	for _, e := range []kafka.Error{kafka.IllegalGeneration, kafka.UnknownMemberId, kafka.RebalanceInProgress, kafka.FencedInstanceID} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

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
	metrics    *metrics.Metrics
	// retryWait is the first wait between reads or commits that failed;
	// default 100ms, doubling to 5s.
	retryWait time.Duration
}

// commit stores the next offset to read, with metadata (an in-flight
// record, or ""). A refusal that says the generation is gone is final: it
// wraps errGenerationGone. Every other refusal (a timeout, a moving
// coordinator, an ACL that does not allow the commit) is retried with a
// capped backoff until ctx ends; refused, if set, sees each one first.
// Retrying is safe: nothing moves on until the commit is stored.
func (o *offsets) commit(ctx context.Context, next int64, metadata string, refused func(err error, attempt int)) error {
	start := time.Now()
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(o.wait()), backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0))
	for attempt := 1; ; attempt++ {
		err := o.commitOnce(ctx, next, metadata)
		switch {
		case err == nil:
			o.metrics.ObserveCommit(time.Since(start))
			return nil
		case generationGone(err):
			return fmt.Errorf("commit offset %d: %w (%w)", next, err, errGenerationGone)
		case ctx.Err() != nil:
			return fmt.Errorf("commit offset %d: %w", next, ctx.Err())
		}
		o.metrics.RecordCommitFailure(commitErrorName(err))
		if refused != nil {
			refused(err, attempt)
		}
		if err := sleepCtx(ctx, bo.NextBackOff()); err != nil {
			return fmt.Errorf("commit offset %d: %w", next, err)
		}
	}
}

// commitOnce makes one OffsetCommit request; the error is the request's
// or the partition's in the answer.
func (o *offsets) commitOnce(ctx context.Context, next int64, metadata string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := o.client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
		GroupID:      o.group,
		GenerationID: int(o.generation),
		MemberID:     o.member,
		Topics:       map[string][]kafka.OffsetCommit{o.topic: {{Partition: o.partition, Offset: next, Metadata: metadata}}},
	})
	if err != nil {
		return err
	}
	for _, p := range resp.Topics[o.topic] {
		if p.Error != nil {
			return p.Error
		}
	}
	return nil
}

// commitErrorName names a commit error for the metric: the Kafka error's
// name, or "request".
func commitErrorName(err error) string {
	var kerr kafka.Error
	if errors.As(err, &kerr) {
		return kerr.Title()
	}
	return "request"
}

// commitHint says what an operator can do about a commit refused with
// err, or "" when retrying is all there is to do.
func (o *offsets) commitHint(err error) string {
	switch {
	case errors.Is(err, kafka.GroupAuthorizationFailed):
		return fmt.Sprintf("the principal may not commit for consumer group %q: grant it READ on the group (kafka-acls --add --allow-principal User:<name> --operation Read --group %s)", o.group, o.group)
	case errors.Is(err, kafka.TopicAuthorizationFailed):
		return fmt.Sprintf("the principal may not commit offsets of topic %q: grant it READ on the topic (kafka-acls --add --allow-principal User:<name> --operation Read --topic %s)", o.topic, o.topic)
	case errors.Is(err, kafka.OffsetMetadataTooLarge):
		return "the broker's offset.metadata.max.bytes is below what timbroadcast records in flight (about 100 bytes): raise it"
	}
	return ""
}

// read returns the committed offset (-1 for none) and the call recorded as
// in flight there, if any. Every error, a group-level one in the answer
// included (COORDINATOR_LOAD_IN_PROGRESS, say), is retried until ctx
// ends: an error is never taken as "nothing in flight".
func (o *offsets) read(ctx context.Context, log *zap.Logger) (int64, []wire.AppInFlight, error) {
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

func (o *offsets) readOnce(ctx context.Context) (int64, []wire.AppInFlight, error) {
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
		if fs, ok := wire.ParseInFlights(po.Metadata, po.CommittedOffset); ok && po.CommittedOffset >= 0 {
			return po.CommittedOffset, fs, nil
		}
		return po.CommittedOffset, nil, nil
	}
	return -1, nil, nil
}

// bounds returns the partition's log start offset and end offset (the high
// watermark).
func (o *offsets) bounds(ctx context.Context) (start, end int64, err error) {
	return kafkaconn.Bounds(ctx, o.client, o.topic, o.partition)
}

// offsetAt returns the first offset whose record timestamp is at or after
// t (-1 when there is none: every record is older).
func (o *offsets) offsetAt(ctx context.Context, t time.Time) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := o.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		o.topic: {kafka.TimeOffsetOf(o.partition, t)},
	}})
	if err != nil {
		return 0, fmt.Errorf("list offsets of %s/%d at %s: %w", o.topic, o.partition, t, err)
	}
	for _, po := range resp.Topics[o.topic] {
		if po.Partition == o.partition && po.Error == nil {
			for off := range po.Offsets {
				return off, nil
			}
			return -1, nil
		}
	}
	return 0, fmt.Errorf("list offsets of %s/%d at %s: partition missing from the answer", o.topic, o.partition, t)
}

// groupClient is the worker's kafkaClient: metadata and log offsets from
// the admin client, group offsets from the member over its coordinator
// connection.
type groupClient struct {
	*kafka.Client
	m *group.Member
}

func (g groupClient) OffsetCommit(ctx context.Context, r *kafka.OffsetCommitRequest) (*kafka.OffsetCommitResponse, error) {
	return g.m.OffsetCommit(ctx, r)
}

func (g groupClient) OffsetFetch(ctx context.Context, r *kafka.OffsetFetchRequest) (*kafka.OffsetFetchResponse, error) {
	return g.m.OffsetFetch(ctx, r)
}
