package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/dedupe"
)

// errStopped says the partition's fetch context ended (revoked or
// stopping).
var errStopped = errors.New("partition revoked or worker stopping")

// partition is one owned partition in one generation.
type partition struct {
	w        *Worker
	id       int
	log      *zap.Logger
	offsets  *offsets
	records  <-chan kafka.Message
	carry    *kafka.Message // a record taken from records but not yet used
	fetchCtx context.Context
	sendCtx  context.Context
}

// consumePartition delivers one partition's records in offset order for
// the life of a generation, or until stop ends.
func (w *Worker) consumePartition(stop, genCtx context.Context, gen *kafka.Generation, a kafka.PartitionAssignment) {
	log := w.log.With(zap.String("topic", w.cfg.Topic), zap.Int("partition", a.ID), zap.Int32("generation", gen.ID))

	// fetchCtx ends when the partition is revoked or the worker stops: no
	// record is taken after that. sendCtx outlives it by RevokeGrace or
	// DrainTimeout, so the in-flight send can finish and be committed.
	fetchCtx, cancelFetch := context.WithCancel(genCtx)
	defer cancelFetch()
	stopWatch := context.AfterFunc(stop, cancelFetch)
	defer stopWatch()
	sendCtx, cancelSend := context.WithCancel(context.Background())
	defer cancelSend()
	var watcher sync.WaitGroup
	watcher.Go(func() {
		select {
		case <-sendCtx.Done():
			return
		case <-fetchCtx.Done():
		}
		grace := w.cfg.RevokeGrace
		if stop.Err() != nil {
			grace = w.cfg.DrainTimeout
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-sendCtx.Done():
		case <-t.C:
			cancelSend()
		}
	})
	defer watcher.Wait()
	defer cancelSend()

	r := w.conn.Reader(kafka.ReaderConfig{
		Topic:            w.cfg.Topic,
		Partition:        a.ID,
		MinBytes:         1,
		MaxBytes:         10 << 20,
		MaxWait:          w.cfg.MaxWait,
		ReadBatchTimeout: w.cfg.MaxWait + 5*time.Second,
		ErrorLogger:      kafka.LoggerFunc(w.log.Sugar().Named("kafka").Debugf),
	})
	defer r.Close()
	if err := r.SetOffset(a.Offset); err != nil {
		log.Error("cannot set the start offset", zap.Int64("offset", a.Offset), zap.Error(err))
		return
	}
	log.Debug("partition assigned", zap.Int64("offset", a.Offset))

	// The pump hands fetched records over a channel, so merge mode can see
	// what is waiting without blocking. It stops with fetchCtx.
	records := make(chan kafka.Message, 64)
	var pump sync.WaitGroup
	pump.Go(func() {
		defer close(records)
		for {
			m, err := r.FetchMessage(fetchCtx)
			if fetchCtx.Err() != nil {
				return
			}
			if err != nil {
				log.Warn("fetch failed", zap.Error(err))
				continue
			}
			select {
			case records <- m:
			case <-fetchCtx.Done():
				return
			}
		}
	})
	defer pump.Wait()
	defer cancelFetch()
	defer w.holds.done(a.ID)

	p := &partition{
		w: w, id: a.ID, log: log, records: records, fetchCtx: fetchCtx, sendCtx: sendCtx,
		offsets: &offsets{client: w.client, group: gen.GroupID, generation: gen.ID, member: gen.MemberID,
			topic: w.cfg.Topic, partition: a.ID, metrics: w.metrics},
	}
	if err := p.resume(a.Offset); err != nil {
		log.Info("stopping the partition", zap.Error(err))
		return
	}
	for {
		var err error
		if w.cfg.Merge {
			err = p.mergeNext()
		} else {
			err = p.plainNext()
		}
		if err != nil {
			// Revoked, stopping, or the commit was refused: whatever is
			// not committed stays for the next owner, who resends it with
			// the same Random and bytes.
			log.Info("stopping the partition", zap.Error(err))
			return
		}
	}
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

// plainNext takes the next record alone to its final outcome and commits.
func (p *partition) plainNext() error {
	m, err := p.next()
	if err != nil {
		return err
	}
	if !p.handle(m) {
		return fmt.Errorf("record at offset %d abandoned uncommitted: %w", m.Offset, errStopped)
	}
	return p.offsets.commit(m.Offset+1, "")
}

// mergeNext waits for a record, then for a pacing slot, then packs what
// waits behind the record into one call, records the call as in flight,
// sends it and commits.
func (p *partition) mergeNext() error {
	m, err := p.next()
	if err != nil {
		return err
	}
	ev, derr := wire.DecodeEvent(wire.RecordOf(m))
	if derr != nil || p.expired(ev) {
		// Dead-lettered alone (handle decodes and checks again).
		if !p.handle(m) {
			return errStopped
		}
		return p.offsets.commit(m.Offset+1, "")
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
		nev, derr := wire.DecodeEvent(wire.RecordOf(nx))
		if derr != nil || p.expired(nev) || !wire.Mergeable(&ev.Message, &nev.Message) {
			break
		}
		cand := append(members[:len(members):len(members)], member{nx, nev})
		b, _, err := build(cand)
		if err != nil || len(b) > p.w.cfg.MergeMaxBytes {
			break
		}
		members, body = cand, b
		p.carry = nil
	}
	_, random, _ := build(members)
	log := p.log.With(zap.Int64("offset", m.Offset), zap.Int("events", len(members)), zap.Uint32("random", random))
	last := members[len(members)-1].msg.Offset
	if err := p.offsets.commit(m.Offset, wire.InFlight{Last: last, Random: random}.String()); err != nil {
		// Nothing sent: the records stay for the next owner.
		return err
	}
	return p.finish(log, members, body, true)
}

func (p *partition) expired(ev *wire.Event) bool {
	return !ev.ExpiresAt.IsZero() && !p.w.cfg.Now().Before(ev.ExpiresAt)
}

// build returns the request body and Random of a call for members: a lone
// event's own bytes, or the merge of several.
func build(members []member) ([]byte, uint32, error) {
	if len(members) == 1 {
		return members[0].ev.Body, members[0].ev.Message.Random, nil
	}
	parts := make([]wire.MergePart, len(members))
	randoms := make([]uint32, len(members))
	for i, m := range members {
		parts[i] = wire.MergePart{Key: string(m.msg.Key), Message: &m.ev.Message}
		randoms[i] = m.ev.Message.Random
	}
	msg, err := wire.Merge(parts)
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

// finish sends the call for members and commits past them. A merged call
// the API rejects as a whole is split: each member is sent alone (each
// recorded in flight first), and only the ones rejected alone are
// dead-lettered.
func (p *partition) finish(log *zap.Logger, members []member, body []byte, reserved bool) error {
	last := members[len(members)-1].msg.Offset
	res, se, attempts := p.deliver(log, members, body, reserved)
	switch {
	case res == resultAbandoned:
		return errStopped
	case res == resultDelivered:
		return p.offsets.commit(last+1, "")
	case len(members) == 1:
		// A lone event rejected, expired or given up: dead-letter it.
		m := members[0]
		if !p.deadLetter(log, m.msg, m.ev, loneFailure(res, se, attempts, m.ev)) {
			return errStopped
		}
		return p.offsets.commit(last+1, "")
	case res == resultExhausted:
		// The call as a whole was given up: every member is dead-lettered.
		for _, m := range members {
			if !p.deadLetter(log, m.msg, m.ev, loneFailure(res, se, attempts, m.ev)) {
				return errStopped
			}
			if err := p.offsets.commit(m.msg.Offset+1, ""); err != nil {
				return err
			}
		}
		return nil
	}
	log.Warn("merged call rejected; sending its events one by one to find the offending ones",
		zap.Int("code", se.Code), zap.String("info", se.Info))
	for _, m := range members {
		if err := p.offsets.commit(m.msg.Offset, wire.InFlight{Last: m.msg.Offset, Random: m.ev.Message.Random}.String()); err != nil {
			return err
		}
		if err := p.finish(p.log.With(zap.Int64("offset", m.msg.Offset)), []member{m}, m.ev.Body, false); err != nil {
			return err
		}
	}
	return nil
}
