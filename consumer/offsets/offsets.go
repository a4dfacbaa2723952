// Package offsets commits and reads one partition's offsets in the
// consumer group within one generation (Partition), and reads a
// partition's bounds. A commit refused because the generation is gone
// wraps ErrGenerationGone: the member must rejoin.
package offsets

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
	"github.com/timbroadcast/timbroadcast/consumer/sleep"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// Client is the part of *kafka.Client the worker calls directly: small
// enough that commits and resumes are testable without a broker.
type Client interface {
	Metadata(context.Context, *kafka.MetadataRequest) (*kafka.MetadataResponse, error)
	OffsetFetch(context.Context, *kafka.OffsetFetchRequest) (*kafka.OffsetFetchResponse, error)
	OffsetCommit(context.Context, *kafka.OffsetCommitRequest) (*kafka.OffsetCommitResponse, error)
	ListOffsets(context.Context, *kafka.ListOffsetsRequest) (*kafka.ListOffsetsResponse, error)
}

// ErrGenerationGone says the broker refused a commit because this member's
// generation has ended (a rebalance): the partition stops and the worker
// rejoins. It is the only commit error that makes the member rejoin.
var ErrGenerationGone = errors.New("the consumer-group generation has ended")

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

// Partition commits and reads back one partition's offsets within one
// generation: commits carry the generation and member id, so the broker
// refuses them once the partition has moved on.
type Partition struct {
	Client     Client
	Group      string
	Generation int32
	Member     string
	Topic      string
	Partition  int
	Metrics    *metrics.Metrics
	// RetryWait is the first wait between reads or commits that failed;
	// default 100ms, doubling to 5s.
	RetryWait time.Duration
}

// Commit stores the next offset to read, with metadata (an in-flight
// record, or ""). A refusal that says the generation is gone is final: it
// wraps ErrGenerationGone. Every other refusal (a timeout, a moving
// coordinator, an ACL that does not allow the commit) is retried with a
// capped backoff until ctx ends; refused, if set, sees each one first.
// Retrying is safe: nothing moves on until the commit is stored.
func (o *Partition) Commit(ctx context.Context, next int64, metadata string, refused func(err error, attempt int)) error {
	start := time.Now()
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(o.wait()), backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0))
	for attempt := 1; ; attempt++ {
		err := o.commitOnce(ctx, next, metadata)
		switch {
		case err == nil:
			o.Metrics.ObserveCommit(time.Since(start))
			return nil
		case generationGone(err):
			return fmt.Errorf("commit offset %d: %w (%w)", next, err, ErrGenerationGone)
		case ctx.Err() != nil:
			return fmt.Errorf("commit offset %d: %w", next, ctx.Err())
		}
		o.Metrics.RecordCommitFailure(commitErrorName(err))
		if refused != nil {
			refused(err, attempt)
		}
		if err := sleep.For(ctx, bo.NextBackOff()); err != nil {
			return fmt.Errorf("commit offset %d: %w", next, err)
		}
	}
}

// commitOnce makes one OffsetCommit request; the error is the request's
// or the partition's in the answer.
func (o *Partition) commitOnce(ctx context.Context, next int64, metadata string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := o.Client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
		GroupID:      o.Group,
		GenerationID: int(o.Generation),
		MemberID:     o.Member,
		Topics:       map[string][]kafka.OffsetCommit{o.Topic: {{Partition: o.Partition, Offset: next, Metadata: metadata}}},
	})
	if err != nil {
		return err
	}
	for _, p := range resp.Topics[o.Topic] {
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

// CommitHint says what an operator can do about a commit refused with
// err, or "" when retrying is all there is to do.
func (o *Partition) CommitHint(err error) string {
	switch {
	case errors.Is(err, kafka.GroupAuthorizationFailed):
		return fmt.Sprintf("the principal may not commit for consumer group %q: grant it READ on the group (kafka-acls --add --allow-principal User:<name> --operation Read --group %s)", o.Group, o.Group)
	case errors.Is(err, kafka.TopicAuthorizationFailed):
		return fmt.Sprintf("the principal may not commit offsets of topic %q: grant it READ on the topic (kafka-acls --add --allow-principal User:<name> --operation Read --topic %s)", o.Topic, o.Topic)
	case errors.Is(err, kafka.OffsetMetadataTooLarge):
		return "the broker's offset.metadata.max.bytes is below what timbroadcast records in flight (about 100 bytes): raise it"
	}
	return ""
}

// Read returns the committed offset (-1 for none) and the call recorded as
// in flight there, if any. Every error, a group-level one in the answer
// included (COORDINATOR_LOAD_IN_PROGRESS, say), is retried until ctx
// ends: an error is never taken as "nothing in flight".
func (o *Partition) Read(ctx context.Context, log *zap.Logger) (int64, []wire.AppInFlight, error) {
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(o.wait()), backoff.WithMaxInterval(5*time.Second), backoff.WithMaxElapsedTime(0))
	for attempt := 1; ; attempt++ {
		committed, f, err := o.readOnce(ctx)
		if err == nil {
			return committed, f, nil
		}
		log.Warn("cannot read the committed offset; retrying", zap.Int("attempt", attempt), zap.Error(err))
		if err := sleep.For(ctx, bo.NextBackOff()); err != nil {
			return 0, nil, err
		}
	}
}

func (o *Partition) wait() time.Duration {
	if o.RetryWait > 0 {
		return o.RetryWait
	}
	return 100 * time.Millisecond
}

func (o *Partition) readOnce(ctx context.Context) (int64, []wire.AppInFlight, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := o.Client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: o.Group, Topics: map[string][]int{o.Topic: {o.Partition}}})
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err != nil {
		return 0, nil, fmt.Errorf("read the committed offset of %s/%d: %w", o.Topic, o.Partition, err)
	}
	for _, po := range resp.Topics[o.Topic] {
		if po.Partition != o.Partition {
			continue
		}
		if po.Error != nil {
			return 0, nil, fmt.Errorf("read the committed offset of %s/%d: %w", o.Topic, o.Partition, po.Error)
		}
		if fs, ok := wire.ParseInFlights(po.Metadata, po.CommittedOffset); ok && po.CommittedOffset >= 0 {
			return po.CommittedOffset, fs, nil
		}
		return po.CommittedOffset, nil, nil
	}
	return -1, nil, nil
}

// Bounds returns the partition's log start offset and end offset (the high
// watermark).
func (o *Partition) Bounds(ctx context.Context) (start, end int64, err error) {
	return kafkaconn.Bounds(ctx, o.Client, o.Topic, o.Partition)
}

// OffsetAt returns the first offset whose record timestamp is at or after
// t (-1 when there is none: every record is older).
func (o *Partition) OffsetAt(ctx context.Context, t time.Time) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := o.Client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		o.Topic: {kafka.TimeOffsetOf(o.Partition, t)},
	}})
	if err != nil {
		return 0, fmt.Errorf("list offsets of %s/%d at %s: %w", o.Topic, o.Partition, t, err)
	}
	for _, po := range resp.Topics[o.Topic] {
		if po.Partition == o.Partition && po.Error == nil {
			for off := range po.Offsets {
				return off, nil
			}
			return -1, nil
		}
	}
	return 0, fmt.Errorf("list offsets of %s/%d at %s: partition missing from the answer", o.Topic, o.Partition, t)
}

// GroupClient is the worker's Client: metadata and log offsets from
// the admin client, group offsets from the member over its coordinator
// connection.
type GroupClient struct {
	*kafka.Client
	Member *group.Member
}

// OffsetCommit commits over the member's coordinator connection.
func (g GroupClient) OffsetCommit(ctx context.Context, r *kafka.OffsetCommitRequest) (*kafka.OffsetCommitResponse, error) {
	return g.Member.OffsetCommit(ctx, r)
}

// OffsetFetch reads over the member's coordinator connection.
func (g GroupClient) OffsetFetch(ctx context.Context, r *kafka.OffsetFetchRequest) (*kafka.OffsetFetchResponse, error) {
	return g.Member.OffsetFetch(ctx, r)
}
