package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/dedupe"
	"github.com/timbroadcast/timbroadcast/sender"
)

// In-flight batches are recorded in the partition's committed-offset
// metadata before they are sent: "tb1 <last offset> <Random>", committed
// with the batch's first offset. A resumed partition (after a crash, a
// rebalance or a takeover) that finds it rebuilds exactly the records from
// the committed offset to <last offset> into the same merged message, so a
// resend is byte-identical and the server's dedupe holds.
const metaPrefix = "tb1 "

// inflight is the batch recorded in the metadata.
type inflight struct {
	last   int64
	random uint32
}

func (f inflight) String() string {
	return metaPrefix + strconv.FormatInt(f.last, 10) + " " + strconv.FormatUint(uint64(f.random), 10)
}

func parseInflight(s string) (inflight, bool) {
	if !strings.HasPrefix(s, metaPrefix) {
		return inflight{}, false
	}
	parts := strings.Fields(strings.TrimPrefix(s, metaPrefix))
	if len(parts) != 2 {
		return inflight{}, false
	}
	last, err1 := strconv.ParseInt(parts[0], 10, 64)
	r, err2 := strconv.ParseUint(parts[1], 10, 32)
	if err1 != nil || err2 != nil {
		return inflight{}, false
	}
	return inflight{last: last, random: uint32(r)}, true
}

// errStopped says the partition's fetch context ended (revoked or
// stopping).
var errStopped = errors.New("partition revoked or worker stopping")

// partition is one owned partition in one generation.
type partition struct {
	w        *Worker
	gen      *kafka.Generation
	id       int
	log      *zap.Logger
	records  <-chan kafka.Message
	carry    *kafka.Message // a record taken from records but not yet used
	fetchCtx context.Context
	sendCtx  context.Context
}

// next returns the next record, waiting for it.
func (p *partition) next() (kafka.Message, error) {
	if p.carry != nil {
		m := *p.carry
		p.carry = nil
		return m, nil
	}
	select {
	case m, ok := <-p.records:
		if !ok || p.fetchCtx.Err() != nil {
			return kafka.Message{}, errStopped
		}
		p.w.metrics.recordConsumed(m.Partition, m.Offset, m.HighWaterMark)
		return m, nil
	case <-p.fetchCtx.Done():
		return kafka.Message{}, errStopped
	}
}

// peek returns the next record if one is already waiting, without taking
// it.
func (p *partition) peek() (kafka.Message, bool) {
	if p.carry != nil {
		return *p.carry, true
	}
	select {
	case m, ok := <-p.records:
		if !ok || p.fetchCtx.Err() != nil {
			return kafka.Message{}, false
		}
		p.w.metrics.recordConsumed(m.Partition, m.Offset, m.HighWaterMark)
		p.carry = &m
		return m, true
	default:
		return kafka.Message{}, false
	}
}

func (p *partition) commit(next int64, meta string) error {
	if err := p.w.commit(p.gen, p.id, next, meta); err != nil {
		return fmt.Errorf("commit offset %d: %w", next, err)
	}
	return nil
}

// plainNext takes the next record alone to its final outcome and commits.
func (p *partition) plainNext() error {
	m, err := p.next()
	if err != nil {
		return err
	}
	if !p.w.handle(p.sendCtx, p.log, m) {
		return fmt.Errorf("record at offset %d abandoned uncommitted: %w", m.Offset, errStopped)
	}
	return p.commit(m.Offset+1, "")
}

// resume finishes a batch recorded as in flight by an earlier owner: the
// same records, the same merged bytes.
func (p *partition) resume(offset int64) error {
	ctx, cancel := context.WithTimeout(p.fetchCtx, 10*time.Second)
	defer cancel()
	resp, err := p.w.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: p.gen.GroupID, Topics: map[string][]int{p.w.cfg.Topic: {p.id}}})
	if err != nil {
		return fmt.Errorf("read the in-flight batch record: %w", err)
	}
	var f inflight
	found := false
	for _, po := range resp.Topics[p.w.cfg.Topic] {
		if po.Partition == p.id && po.CommittedOffset == offset {
			f, found = parseInflight(po.Metadata)
		}
	}
	if !found || f.last < offset {
		return nil
	}
	log := p.log.With(zap.Int64("first_offset", offset), zap.Int64("last_offset", f.last), zap.Uint32("random", f.random))
	log.Info("resuming the in-flight batch of the previous owner")
	var members []member
	for {
		m, err := p.next()
		if err != nil {
			return err
		}
		ev, derr := decodeMessage(m)
		if derr != nil {
			// Never part of a batch: the record must have changed meaning
			// (another timbroadcast version). Handle it alone.
			log.Error("in-flight batch cannot be rebuilt; sending its records one by one", zap.Error(derr))
			p.carry = &m
			for _, mm := range members {
				if !p.w.handle(p.sendCtx, p.log, mm.msg) {
					return errStopped
				}
				if err := p.commit(mm.msg.Offset+1, ""); err != nil {
					return err
				}
			}
			return nil
		}
		members = append(members, member{m, ev})
		if m.Offset >= f.last {
			break
		}
	}
	body, random, err := p.build(members)
	if err != nil {
		return err
	}
	if random != f.random {
		log.Warn("rebuilt batch has another Random than recorded (merge rules changed?); the server may show it twice",
			zap.Uint32("rebuilt_random", random))
	}
	return p.finish(log, members, body, false)
}

// build returns the request body and Random of a call for members: a lone
// event's own bytes, or the merge of several.
func (p *partition) build(members []member) ([]byte, uint32, error) {
	if len(members) == 1 {
		return members[0].ev.Body, members[0].ev.Message.Random, nil
	}
	parts := make([]sender.MergePart, len(members))
	randoms := make([]uint32, len(members))
	for i, m := range members {
		parts[i] = sender.MergePart{Key: string(m.msg.Key), Message: &m.ev.Message}
		randoms[i] = m.ev.Message.Random
	}
	msg, err := sender.Merge(parts)
	if err != nil {
		return nil, 0, err
	}
	msg.Random = dedupe.BatchRandom(randoms)
	body, err := msg.Encode()
	if err != nil {
		return nil, 0, err
	}
	return body, msg.Random, nil
}

// mergeNext waits for a record, then for a pacing slot, then packs what
// waits behind the record into one call, records the batch as in flight,
// sends it and commits.
func (p *partition) mergeNext() error {
	m, err := p.next()
	if err != nil {
		return err
	}
	ev, derr := decodeMessage(m)
	if derr != nil || p.expired(ev) {
		// Dead-lettered alone (handle decodes and checks again).
		if !p.w.handle(p.sendCtx, p.log, m) {
			return errStopped
		}
		return p.commit(m.Offset+1, "")
	}
	// The slot first: what arrives while we wait joins this call.
	if err := p.w.send.(SlotSender).Reserve(p.fetchCtx); err != nil {
		p.carry = &m
		return errStopped
	}
	members := []member{{m, ev}}
	body := ev.Body
	for {
		nx, ok := p.peek()
		if !ok {
			break
		}
		nev, derr := decodeMessage(nx)
		if derr != nil || p.expired(nev) || !sender.Mergeable(&ev.Message, &nev.Message) {
			break
		}
		cand := append(members[:len(members):len(members)], member{nx, nev})
		b, _, err := p.build(cand)
		if err != nil || len(b) > p.w.cfg.MergeMaxBytes {
			break
		}
		members, body = cand, b
		p.carry = nil
	}
	_, random, _ := p.build(members)
	log := p.log.With(zap.Int64("offset", m.Offset), zap.Int("events", len(members)), zap.Uint32("random", random))
	last := members[len(members)-1].msg.Offset
	if err := p.commit(m.Offset, inflight{last: last, random: random}.String()); err != nil {
		// Nothing sent: the records stay for the next owner.
		return err
	}
	return p.finish(log, members, body, true)
}

func (p *partition) expired(ev *Event) bool {
	return !ev.ExpiresAt.IsZero() && !p.w.cfg.Now().Before(ev.ExpiresAt)
}

// finish sends the call for members and commits past them. A merged call
// the API rejects as a whole is split: each member is sent alone (each
// recorded in flight first), and only the ones rejected alone are
// dead-lettered.
func (p *partition) finish(log *zap.Logger, members []member, body []byte, reserved bool) error {
	last := members[len(members)-1].msg.Offset
	res, se, attempts := p.w.deliver(p.sendCtx, log, members, body, reserved)
	switch {
	case res == resultAbandoned:
		return errStopped
	case res == resultDelivered:
		return p.commit(last+1, "")
	case len(members) == 1:
		// A lone event rejected or expired: dead-letter it (handle's path).
		m := members[0]
		if !p.w.deadLetter(p.sendCtx, log, m.msg, m.ev, loneFailure(res, se, attempts, m.ev)) {
			return errStopped
		}
		return p.commit(last+1, "")
	}
	log.Warn("merged call rejected; sending its events one by one to find the offending ones",
		zap.Int("code", se.Code), zap.String("info", se.Info))
	for _, m := range members {
		if err := p.commit(m.msg.Offset, inflight{last: m.msg.Offset, random: m.ev.Message.Random}.String()); err != nil {
			return err
		}
		if err := p.finish(p.log.With(zap.Int64("offset", m.msg.Offset)), []member{m}, m.ev.Body, false); err != nil {
			return err
		}
	}
	return nil
}
