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

	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/dedupe"
)

// item is what the pump hands the partition loop: a record, or (skipTo >
// 0) the position after offsets that hold nothing to deliver (transaction
// markers, aborted batches, a range deleted by retention). Offsets count
// through those, so the loop commits past them once everything before is
// final: commits stay contiguous and the group's lag reaches zero.
type item struct {
	msg    kafka.Message
	skipTo int64
	at     time.Time // when the record was fetched
}

// errStopped says the partition's fetch context ended (revoked or
// stopping).
var errStopped = errors.New("partition revoked or worker stopping")

// partition is one owned partition in one generation.
type partition struct {
	w        *Worker
	tp       topicPartition
	urgent   bool // a partition of the urgent topic
	log      *zap.Logger
	offsets  *offsets
	records  <-chan item
	ahead    []item // items taken from records but not yet used, in order
	fetchCtx context.Context
	sendCtx  context.Context
}

// consumePartition delivers one partition's records in offset order for
// the life of a generation, or until stop ends. It returns only then, or
// when a commit says the generation is gone: kafka-go ends the generation
// for the whole group as soon as one of its functions returns. Any other
// failure restarts the partition in place, from its committed offset, with
// a backoff.
func (w *Worker) consumePartition(stop, genCtx context.Context, gen *kafka.Generation, topic string, a kafka.PartitionAssignment) {
	log := w.log.With(zap.String("topic", topic), zap.Int("partition", a.ID), zap.Int32("generation", gen.ID))
	defer w.holds.done(topicPartition{topic, a.ID})
	off := &offsets{client: w.client, group: gen.GroupID, generation: gen.ID, member: gen.MemberID,
		topic: topic, partition: a.ID, metrics: w.metrics}
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(200*time.Millisecond), backoff.WithMaxInterval(10*time.Second),
		backoff.WithMaxElapsedTime(0))
	for {
		err := w.runPartition(stop, genCtx, log, off)
		switch {
		case stop.Err() != nil || genCtx.Err() != nil:
			log.Info("partition released", zap.NamedError("last", err))
			return
		case errors.Is(err, errGenerationGone):
			log.Info("the generation is gone; rejoining the group", zap.Error(err))
			return
		}
		wait := bo.NextBackOff()
		log.Error("partition failed; restarting it from its committed offset", zap.Error(err), zap.Duration("in", wait))
		select {
		case <-stop.Done():
		case <-genCtx.Done():
		case <-time.After(wait):
		}
	}
}

// runPartition runs one partition from its committed offset until an
// error, revocation or stop. What is not committed stays for the next run
// or owner, who resends it with the same Random and bytes.
func (w *Worker) runPartition(stop, genCtx context.Context, log *zap.Logger, off *offsets) error {
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

	committed, inflight, err := off.read(fetchCtx, log)
	if err != nil {
		return err
	}
	start := committed
	if start < 0 {
		if start, err = w.startOffset(fetchCtx, log, off); err != nil {
			return err
		}
	}
	log.Debug("partition starting", zap.Int64("offset", start))

	// The pump fetches and hands records over a channel, so merge mode can
	// see what is waiting without blocking. It stops with fetchCtx.
	records := make(chan item, 64)
	tp := topicPartition{off.topic, off.partition}
	f := &fetcher{rt: w.conn.Transport(), addr: kafka.TCP(w.cfg.Brokers...), topic: off.topic, partition: off.partition,
		maxWait: w.cfg.MaxWait, maxBytes: 10 << 20, next: start}
	var pump sync.WaitGroup
	pump.Go(func() { w.pump(fetchCtx, log, f, off, records) })
	defer pump.Wait()
	defer cancelFetch()
	defer w.fetches.done(tp)

	p := &partition{w: w, tp: tp, urgent: off.topic == w.cfg.UrgentTopic, log: log, offsets: off, records: records, fetchCtx: fetchCtx, sendCtx: sendCtx}
	if inflight != nil {
		if err := p.resume(committed, *inflight); err != nil {
			return err
		}
	}
	for {
		var err error
		if w.cfg.Merge {
			err = p.mergeNext()
		} else {
			err = p.plainNext()
		}
		if err != nil {
			return err
		}
	}
}

// startOffset resolves where a partition without a committed offset
// starts. With LastOffset the resolved offset is committed at once, so
// records produced after this moment are delivered by whoever owns the
// partition next, even if this member dies before its first delivery.
func (w *Worker) startOffset(ctx context.Context, log *zap.Logger, off *offsets) (int64, error) {
	first, last, err := off.bounds(ctx)
	if err != nil {
		return 0, err
	}
	if w.cfg.StartOffset != kafka.LastOffset {
		return first, nil
	}
	if err := off.commit(last, ""); err != nil {
		return 0, err
	}
	log.Info("no committed offset: starting at the log end (KAFKA_START_OFFSET=latest), committed", zap.Int64("offset", last))
	return last, nil
}

// pump fetches the partition into records until ctx ends. Offsets outside
// the log are handled here, loudly: below the log start (retention deleted
// records before they were delivered) it continues at the log start; beyond
// the log end (truncation after an unclean leader election, a manual reset)
// at the log end. Both show in an error log with the range, in
// timbroadcast_records_skipped_total and in /readyz.
func (w *Worker) pump(ctx context.Context, log *zap.Logger, f *fetcher, off *offsets, records chan<- item) {
	defer close(records)
	tp := topicPartition{f.topic, f.partition}
	handed := f.next // the offset after the last item handed over
	send := func(it item) bool {
		select {
		case records <- it:
			return true
		case <-ctx.Done():
			return false
		}
	}
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(100*time.Millisecond), backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0))
	for {
		res, err := f.fetch(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			var pe *partitionError
			if errors.As(err, &pe) && pe.err == kafka.OffsetOutOfRange {
				if w.outOfRange(ctx, log, f, off) {
					if !send(item{skipTo: f.next}) {
						return
					}
					handed = f.next
				}
				continue
			}
			what := "request"
			if pe != nil {
				what = pe.err.Title()
			}
			w.metrics.recordFetchError(what)
			w.fetches.ensure(tp, f.next)
			w.fetches.fail(tp, w.cfg.Now(), err.Error())
			wait := bo.NextBackOff()
			log.Warn("fetch failed; retrying", zap.Int64("offset", f.next), zap.Duration("in", wait), zap.Error(err))
			if sleepCtx(ctx, wait) != nil {
				return
			}
			continue
		}
		bo.Reset()
		w.fetches.done(tp)
		w.metrics.recordSkipped("aborted_transaction", int64(res.aborted))
		w.metrics.recordSkipped("transaction_marker", int64(res.markers))
		if res.aborted > 0 {
			log.Debug("skipped records of aborted transactions", zap.Int("records", res.aborted))
		}
		fetched := time.Now()
		for _, m := range res.records {
			if !send(item{msg: m, at: fetched}) {
				return
			}
			handed = m.Offset + 1
		}
		if f.next > handed {
			if !send(item{skipTo: f.next}) {
				return
			}
			handed = f.next
		}
		if len(res.records) == 0 && res.batches > 0 && res.aborted == 0 && res.markers == 0 {
			// Batches with nothing at or after the fetch offset (a compacted
			// batch's tail): wait instead of asking again at once.
			if sleepCtx(ctx, f.maxWait) != nil {
				return
			}
		}
	}
}

// outOfRange moves a fetcher whose offset is outside the log back inside;
// it reports whether it moved it.
func (w *Worker) outOfRange(ctx context.Context, log *zap.Logger, f *fetcher, off *offsets) bool {
	first, last, err := off.bounds(ctx)
	if err != nil {
		log.Warn("offset out of range and the log's bounds cannot be read; retrying", zap.Error(err))
		_ = sleepCtx(ctx, time.Second)
		return false
	}
	var reason string
	var lost int64
	switch {
	case f.next < first:
		reason, lost = "retention", first-f.next
		log.Error("records deleted before they were delivered (retention or DeleteRecords): skipping to the log start",
			zap.Int64("from_offset", f.next), zap.Int64("to_offset", first-1), zap.Int64("records", lost))
		w.notes.add(w.cfg.Now(), fmt.Sprintf("%s/%d: offsets %d..%d were deleted before delivery (retention); continued at %d",
			f.topic, f.partition, f.next, first-1, first))
		f.next = first
	case f.next > last:
		reason, lost = "log_truncated", f.next-last
		log.Error("committed offset beyond the log end (truncation after an unclean leader election, or a manual reset): "+
			"continuing at the log end; records produced from there on are delivered",
			zap.Int64("committed_offset", f.next), zap.Int64("log_end", last), zap.Int64("offsets_gone", lost))
		w.notes.add(w.cfg.Now(), fmt.Sprintf("%s/%d: committed offset %d was beyond the log end %d (log truncated); continued at %d",
			f.topic, f.partition, f.next, last, last))
		f.next = last
	default:
		return false // the log moved meanwhile: fetch again
	}
	w.metrics.recordSkipped(reason, lost)
	return true
}

// nextItem returns the next item, waiting for it.
func (p *partition) nextItem() (item, error) {
	if len(p.ahead) == 0 {
		select {
		case it, ok := <-p.records:
			if !p.take(it, ok) {
				return item{}, errStopped
			}
		case <-p.fetchCtx.Done():
			return item{}, errStopped
		}
	}
	it := p.ahead[0]
	p.ahead = p.ahead[1:]
	return it, nil
}

// take appends an item received from the pump to what is waiting and
// counts a record as consumed. It is false when the pump has stopped or
// the partition is revoked.
func (p *partition) take(it item, ok bool) bool {
	if !ok || p.fetchCtx.Err() != nil {
		return false
	}
	if it.skipTo == 0 {
		p.w.metrics.recordConsumed(it.msg.Topic, it.msg.Partition, it.msg.Offset, it.msg.HighWaterMark)
	}
	p.ahead = append(p.ahead, it)
	return true
}

// next returns the next record's item, waiting for it. Everything before
// it is final, so it commits past positions without records on the way.
func (p *partition) next() (item, error) {
	for {
		it, err := p.nextItem()
		if err != nil {
			return item{}, err
		}
		if it.skipTo == 0 {
			return it, nil
		}
		if err := p.offsets.commit(it.skipTo, ""); err != nil {
			return item{}, err
		}
	}
}

// unread puts an item back in front of what is waiting.
func (p *partition) unread(it item) {
	p.ahead = append([]item{it}, p.ahead...)
}

// peekAt returns the i-th record waiting behind what was taken (from 0),
// without taking it, if it has already arrived. A position item ends what
// can be peeked.
func (p *partition) peekAt(i int) (item, bool) {
	for len(p.ahead) <= i {
		select {
		case it, ok := <-p.records:
			if !p.take(it, ok) {
				return item{}, false
			}
		default:
			return item{}, false
		}
	}
	if p.ahead[i].skipTo != 0 {
		return item{}, false
	}
	return p.ahead[i], true
}

// plainNext takes the next record alone to its final outcome and commits.
// An event with an expiry is recorded as in flight before its first
// attempt: after a crash, an event that may have reached the server is
// resent (and deduped), not dead-lettered as expired.
func (p *partition) plainNext() (err error) {
	it, err := p.next()
	if err != nil {
		return err
	}
	m := it.msg
	ev, derr := decode(m)
	mb := p.member(it, ev)
	defer func() { endMembers(err, mb) }()
	if derr == nil && !ev.ExpiresAt.IsZero() && !p.expired(ev) {
		if err := p.offsets.commit(m.Offset, wire.InFlight{Last: m.Offset, Random: ev.Message.Random}.String()); err != nil {
			return err
		}
	}
	if err := p.handle(mb, derr, false); err != nil {
		return fmt.Errorf("record at offset %d not committed: %w", m.Offset, err)
	}
	return p.commitPast(mb)
}

// mergeNext waits for a record, then for a pacing slot, then packs what
// waits behind the record into one call, records the call as in flight,
// sends it and commits.
func (p *partition) mergeNext() (err error) {
	it, err := p.next()
	if err != nil {
		return err
	}
	m := it.msg
	ev, derr := decode(m)
	if derr != nil || p.expired(ev) {
		// Dead-lettered alone.
		mb := p.member(it, ev)
		defer func() { endMembers(err, mb) }()
		if err := p.handle(mb, derr, false); err != nil {
			return err
		}
		return p.commitPast(mb)
	}
	// The slot first: what arrives while we wait joins this call. With the
	// call schedule the slot is granted a little early: pack and record the
	// call, then leave at the slot's middle.
	var leave time.Time
	var reserve error
	if p.w.sched != nil {
		leave, reserve = p.slot(p.fetchCtx)
	} else {
		reserve = p.w.send.(SlotSender).Reserve(p.fetchCtx)
	}
	if reserve != nil {
		p.unread(it)
		return errStopped
	}
	// Then the longest run of waiting events that may join, and of it the
	// longest prefix that fits (a binary search: a few encodings however
	// many events wait, so packing barely delays the call).
	members := []member{{msg: m, ev: ev, at: it.at}}
	limit := p.w.cfg.MergeMaxBytes
	join := wire.NewJoiner(p.w.mergeMode())
	join.Add(&ev.Message)
	for i, estimate := 0, len(ev.Body); estimate <= 3*limit; i++ {
		nx, ok := p.peekAt(i)
		if !ok {
			break
		}
		nev, derr := decode(nx.msg)
		if derr != nil || p.expired(nev) || !join.Add(&nev.Message) {
			break
		}
		members = append(members, member{msg: nx.msg, ev: nev, at: nx.at})
		estimate += len(nev.Body)
	}
	type packed struct {
		body   []byte
		random uint32
	}
	build := func(n int) (packed, bool) {
		b, r, err := p.w.build(members[:n])
		return packed{b, r}, err == nil && len(b) <= limit
	}
	best, _ := build(1) // a lone event always goes, with its own bytes
	lo, hi := 1, len(members)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if c, ok := build(mid); ok {
			lo, best = mid, c
		} else {
			hi = mid - 1
		}
	}
	members = members[:lo]
	body, random := best.body, best.random
	p.ahead = p.ahead[lo-1:]
	for i := range members {
		members[i].span = p.w.eventSpan(members[i].msg, members[i].at)
	}
	defer func() { endMembers(err, members...) }()
	log := p.log.With(zap.Int64("offset", m.Offset), zap.Int("events", len(members)), zap.Uint32("random", random))
	if len(members) == 1 {
		log = log.With(p.w.eventTraceFields(members[0])...)
	}
	last := members[len(members)-1].msg.Offset
	if err := p.offsets.commit(m.Offset, wire.InFlight{Last: last, Random: random}.String()); err != nil {
		// Nothing sent: the records stay for the next owner.
		return err
	}
	if err := sleepCtx(p.sendCtx, time.Until(leave)); err != nil {
		return errStopped
	}
	return p.finish(log, members, body, random, true, false)
}

// member returns the member of a fetched record, its span started at the
// fetch.
func (p *partition) member(it item, ev *wire.Event) member {
	return member{msg: it.msg, ev: ev, at: it.at, span: p.w.eventSpan(it.msg, it.at)}
}

// memberLog is the partition's logger for one member: its offset, Random
// (once decoded), trace_id and span_id (see eventTraceFields).
func (p *partition) memberLog(m member) *zap.Logger {
	log := p.log.With(zap.Int64("offset", m.msg.Offset))
	if m.ev != nil {
		log = log.With(zap.Uint32("random", m.ev.Message.Random))
	}
	return log.With(p.w.eventTraceFields(m)...)
}

// commitPast commits past the members (the last of them) and ends their
// spans: an event's span runs from its fetch to its commit.
func (p *partition) commitPast(members ...member) error {
	err := p.offsets.commit(members[len(members)-1].msg.Offset+1, "")
	endMembers(err, members...)
	return err
}

// endMembers ends the spans of members still open: with err when they end
// uncommitted. An ended span ignores a second end.
func endMembers(err error, members ...member) {
	for _, m := range members {
		end(m.span, err)
	}
}

func (p *partition) expired(ev *wire.Event) bool {
	return !ev.ExpiresAt.IsZero() && !p.w.cfg.Now().Before(ev.ExpiresAt)
}

// mergeMode is the configured way events share a call.
func (w *Worker) mergeMode() wire.MergeMode {
	if w.cfg.MergeEnvelope {
		return wire.MergeEnvelope
	}
	return wire.MergeNative
}

// parts returns members as merge parts.
func parts(members []member) []wire.MergePart {
	out := make([]wire.MergePart, len(members))
	for i, m := range members {
		out[i] = wire.MergePart{Key: string(m.msg.Key), Message: &m.ev.Message}
	}
	return out
}

// build returns the request body and Random of a call for members: a lone
// event's own bytes, or the merge of several.
func (w *Worker) build(members []member) ([]byte, uint32, error) {
	if len(members) == 1 {
		return members[0].ev.Body, members[0].ev.Message.Random, nil
	}
	randoms := make([]uint32, len(members))
	for i, m := range members {
		randoms[i] = m.ev.Message.Random
	}
	msg, err := wire.Merge(w.mergeMode(), parts(members))
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

// finish sends the call for members (body, whose Random is random) and
// commits past them. A merged call the API rejects as a whole is split:
// each member is sent alone (each recorded in flight first), and only the
// ones rejected alone are dead-lettered. attempted says an earlier attempt
// may have reached the server (a resumed call): it is then never
// dead-lettered as expired.
func (p *partition) finish(log *zap.Logger, members []member, body []byte, random uint32, reserved, attempted bool) error {
	c := p.deliver(log, members, body, random, reserved, attempted)
	switch {
	case c.res == resultAbandoned:
		return errStopped
	case c.res == resultDelivered:
		if err := p.delivered(log, members, c); err != nil {
			return err
		}
		return p.commitPast(members...)
	case len(members) == 1:
		// A lone event rejected, expired or given up: dead-letter it.
		if err := p.deadLetter(log, members[0], loneFailure(c, members[0].ev), c); err != nil {
			return err
		}
		return p.commitPast(members[0])
	case c.res == resultExhausted:
		// The call as a whole was given up: every member is dead-lettered.
		for _, m := range members {
			if err := p.deadLetter(p.memberLog(m), m, loneFailure(c, m.ev), c); err != nil {
				return err
			}
			if err := p.commitPast(m); err != nil {
				return err
			}
		}
		return nil
	}
	log.Warn("merged call rejected; sending its events one by one to find the offending ones",
		zap.Int("code", c.se.Code), zap.String("info", c.se.Info))
	for _, m := range members {
		if err := p.offsets.commit(m.msg.Offset, wire.InFlight{Last: m.msg.Offset, Random: m.ev.Message.Random}.String()); err != nil {
			return err
		}
		if err := p.finish(p.memberLog(m), []member{m}, m.ev.Body, m.ev.Message.Random, false, false); err != nil {
			return err
		}
	}
	return nil
}
