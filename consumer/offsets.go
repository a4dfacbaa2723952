package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

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
	metrics    *Metrics
}

// commit stores the next offset to read, with metadata (an in-flight
// record, or ""). Transient errors are retried a few times; an error that
// says the generation is gone is returned at once.
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
			break // the generation is gone: IllegalGeneration, UnknownMemberId, ...
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
	return fmt.Errorf("commit offset %d: %w", next, err)
}

// inFlight reads the call recorded as in flight at the committed offset,
// if any.
func (o *offsets) inFlight(ctx context.Context, committed int64) (wire.InFlight, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := o.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: o.group, Topics: map[string][]int{o.topic: {o.partition}}})
	if err != nil {
		return wire.InFlight{}, false, fmt.Errorf("read the in-flight record: %w", err)
	}
	for _, po := range resp.Topics[o.topic] {
		if po.Partition == o.partition && po.CommittedOffset == committed {
			f, ok := wire.ParseInFlight(po.Metadata)
			if ok && f.Last >= committed {
				return f, true, nil
			}
		}
	}
	return wire.InFlight{}, false, nil
}

// resume finishes a call recorded as in flight by an earlier owner: the
// same records, the same merged bytes.
func (p *partition) resume(offset int64) error {
	f, found, err := p.offsets.inFlight(p.fetchCtx, offset)
	if err != nil || !found {
		return err
	}
	log := p.log.With(zap.Int64("first_offset", offset), zap.Int64("last_offset", f.Last), zap.Uint32("random", f.Random))
	log.Info("resuming the in-flight batch of the previous owner")
	var members []member
	for {
		m, err := p.next()
		if err != nil {
			return err
		}
		ev, derr := wire.DecodeEvent(wire.RecordOf(m))
		if derr != nil {
			// Never part of a batch: the record must have changed meaning
			// (another timbroadcast version). Handle it alone.
			log.Error("in-flight batch cannot be rebuilt; sending its records one by one", zap.Error(derr))
			p.carry = &m
			for _, mm := range members {
				if !p.handle(mm.msg) {
					return errStopped
				}
				if err := p.offsets.commit(mm.msg.Offset+1, ""); err != nil {
					return err
				}
			}
			return nil
		}
		members = append(members, member{m, ev})
		if m.Offset >= f.Last {
			break
		}
	}
	body, random, err := build(members)
	if err != nil {
		return err
	}
	if random != f.Random {
		log.Warn("rebuilt batch has another Random than recorded (merge rules changed?); the server may show it twice",
			zap.Uint32("rebuilt_random", random))
	}
	return p.finish(log, members, body, false)
}
