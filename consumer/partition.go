package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/apps"
	"github.com/timbroadcast/timbroadcast/consumer/call"
	"github.com/timbroadcast/timbroadcast/consumer/group"
	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
	"github.com/timbroadcast/timbroadcast/consumer/lows"
	"github.com/timbroadcast/timbroadcast/consumer/offsets"
	"github.com/timbroadcast/timbroadcast/consumer/schedule"
	"github.com/timbroadcast/timbroadcast/consumer/sleep"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// Why a partition stopped taking records. Each is a normal end but
// offsets.ErrGenerationGone (offsets.go), which makes the member rejoin.
var (
	// errRevoked: the generation ended (a rebalance) while the partition
	// was taking records.
	errRevoked = errors.New("partition revoked")
	// errStopping: the worker is shutting down.
	errStopping = errors.New("worker stopping")
	// errAbandoned: a call or write was still going when the send grace
	// (RevokeGrace, DrainTimeout) ended; nothing of it was committed, and
	// the next owner resends it with the same Random and bytes.
	errAbandoned = errors.New("outcome not final when the send grace ended: left uncommitted for the next owner")
)

// item is what the pump hands the partition: a record, or (skipTo > 0) the
// position after offsets that hold nothing to deliver (transaction markers,
// aborted batches, a range deleted by retention). Offsets count through
// those, so the partition commits past them once everything before is
// final: commits stay contiguous and the group's lag reaches zero.
type item struct {
	rec    *call.Record
	skipTo int64
}

// partition is one owned partition for the life of one generation. It is
// built once, when the generation assigns it, and owns everything that
// reads, sends and commits for it; its goroutines (the pump, the grace
// watcher) are started and awaited by its sessions.
type partition struct {
	w       *Worker
	tp      topicPartition
	part    schedule.Partition // tp as the call schedule names it
	urgent  bool               // a partition of the urgent topic
	log     *zap.Logger
	offsets *offsets.Partition
	// stop ends when the worker stops; the generation's context ends when
	// the partition is revoked. Either ends taking.
	stop context.Context
	gen  context.Context

	// One session's state (a run from the committed offset).
	//
	// taking ends when the partition is revoked or the worker stops: no
	// record is taken and no call starts after that. sending outlives it
	// by RevokeGrace (DrainTimeout when stopping), so the calls in flight
	// can finish and be committed.
	taking, sending context.Context
	fetch           *kafkaconn.Stream
	held            *kafkaconn.Held // of the worker's BufferBytes
	records         <-chan item
	commits         *committer
	// committedAt is where the session started reading.
	committedAt int64
	// routerDone closes when the router stops handing records. running
	// are the streams' goroutines, fail ends the session with a stream's
	// error.
	routerDone chan struct{}
	running    sync.WaitGroup
	fail       func(error)
	// readSince is the least start of the delivered log's read the next
	// session needs; deliveredSince this session's.
	readSince, deliveredSince time.Time

	// Under mu: the streams by app (nil: records of no app), the offset
	// after the last item routed, the calls recorded in flight when the
	// session began that no stream has taken yet, and adv, closed when
	// routed moves while a stream resumes a call.
	mu      sync.Mutex
	streams map[*apps.App]*stream
	// lows orders the streams by low: the commit reads the lowest.
	lows     lows.Heap
	routed   int64
	pending  []wire.AppInFlight
	resuming int
	// packing counts the streams waiting for the router to catch up with
	// the pump (caughtUp).
	packing int
	adv     chan struct{}
	// fetched is the offset after the pump's last fetch: the router has
	// handed over everything in memory once routed reaches it.
	fetched atomic.Int64

	// The log's end as read once a session for its streams (logEnd).
	endMu    sync.Mutex
	end      int64
	endKnown bool
}

// newPartition builds the partition tp of generation gen.
func (w *Worker) newPartition(stop, genCtx context.Context, gen *group.Generation, tp topicPartition) *partition {
	return &partition{
		w:      w,
		tp:     tp,
		part:   tp.sched(),
		urgent: tp.topic == w.cfg.UrgentTopic,
		log:    w.log.With(zap.String("topic", tp.topic), zap.Int("partition", tp.partition), zap.Int32("generation", gen.ID)),
		offsets: &offsets.Partition{Client: w.client, Group: gen.Group, Generation: gen.ID, Member: gen.MemberID,
			Topic: tp.topic, Partition: tp.partition, Metrics: w.metrics},
		stop:      stop,
		gen:       genCtx,
		readSince: time.Now(),
	}
}

// run delivers the partition's records in offset order until the worker
// stops or the generation ends. It returns only then, or when a commit
// says the generation is gone (offsets.ErrGenerationGone: the member must rejoin).
// Any other failure restarts the partition in place, from its committed
// offset, with a backoff.
func (p *partition) run() error {
	defer p.w.holds.DoneAll(p.tp.samePartition)
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(200*time.Millisecond), backoff.WithMaxInterval(10*time.Second),
		backoff.WithMaxElapsedTime(0))
	for {
		err := p.session()
		switch {
		case errors.Is(err, offsets.ErrGenerationGone):
			p.log.Info("the generation is gone; rejoining the group", zap.Error(err))
			if errors.Is(err, kafka.FencedInstanceID) {
				return ErrFenced
			}
			return err
		case p.stop.Err() != nil || p.gen.Err() != nil:
			p.log.Info("partition released", zap.NamedError("last", err))
			return nil
		}
		wait := bo.NextBackOff()
		p.log.Error("partition failed; restarting it from its committed offset", zap.Error(err), zap.Duration("in", wait))
		select {
		case <-p.stop.Done():
		case <-p.gen.Done():
		case <-time.After(wait):
		}
	}
}

// session runs the partition from its committed offset until an error,
// revocation or stop: the partition reads and routes (route), each app's
// stream plans and settles its calls (stream.go), the committer commits.
// What is not committed stays for the next session or owner, who resends
// it with the same Random and bytes.
func (p *partition) session() error {
	taking, stopTaking := context.WithCancel(p.gen)
	unlink := context.AfterFunc(p.stop, stopTaking)
	sending, stopSending := context.WithCancel(context.Background())
	var pumpAndGrace sync.WaitGroup // the pump and the grace watcher
	defer func() {
		stopTaking()
		stopSending()
		unlink()
		pumpAndGrace.Wait()
		if p.fetch != nil {
			p.fetch.Close()
			p.fetch = nil
		}
		p.held.ReleaseAll()
		p.w.reads.OK(p.tp)
	}()
	p.taking, p.sending = taking, sending
	pumpAndGrace.Go(func() { p.graceWatch(stopSending) })

	committed, inflight, err := p.offsets.Read(taking, p.log)
	if err != nil {
		return p.ended(err)
	}
	start := committed
	if start < 0 {
		if start, err = p.startOffset(); err != nil {
			return err
		}
	}
	p.log.Debug("partition starting", zap.Int64("offset", start))
	inflight = p.inBounds(committed, inflight)

	// The pump fetches and decodes, handing records over a channel.
	records := make(chan item, 64)
	p.fetch = p.w.fetcher.Stream(p.tp.topic, p.tp.partition, start)
	p.held = kafkaconn.NewHeld(p.w.fetcher.Budget())
	p.records, p.committedAt = records, start
	p.commits = newCommitter(p, max(committed, start))
	p.streams, p.lows, p.routed, p.pending, p.resuming, p.adv = map[*apps.App]*stream{}, lows.Heap{}, start, inflight, 0, make(chan struct{})
	p.fetched.Store(start)
	p.routerDone = make(chan struct{})
	p.endMu.Lock()
	p.endKnown = false
	p.endMu.Unlock()
	p.deliveredSince, p.readSince = p.readSince, time.Now() // a later session reads what was written meanwhile
	pumpAndGrace.Go(func() { p.pump(records) })

	var errMu sync.Mutex
	var first error
	p.fail = func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		if first == nil || errors.Is(err, offsets.ErrGenerationGone) && !errors.Is(first, offsets.ErrGenerationGone) {
			first = err
		}
		stopTaking()
	}
	err = p.route()
	close(p.routerDone)
	if err != nil {
		p.fail(err)
	}
	p.running.Wait() // the streams, and the committer's run while it had something to commit
	for _, s := range p.streams {
		s.app.SetWaiting(p.w.metrics, s.obs.Label, s, time.Time{}) // what it held waits for the next session or owner
	}
	return first
}

// inBounds returns the calls recorded in flight that the partition may
// resume: a range out of bounds (not written by timbroadcast, or damaged)
// is ignored with a warning, so it cannot make a member buffer the log.
func (p *partition) inBounds(committed int64, fs []wire.AppInFlight) []wire.AppInFlight {
	var out []wire.AppInFlight
	for _, f := range fs {
		if f.Last < committed || f.Last-f.First >= maxInFlightSpan {
			p.log.Warn("ignoring an in-flight record in the group's committed-offset metadata: its range is out of bounds "+
				"(not written by timbroadcast, or damaged); the partition goes on from its committed offset",
				zap.String("group", p.w.cfg.GroupID), zap.Int64("committed", committed), zap.Int64("first_offset", f.First),
				zap.Int64("last_offset", f.Last), zap.Int64("max_span", maxInFlightSpan))
			continue
		}
		out = append(out, f)
	}
	return out
}

// maxInFlightSpan bounds the offsets an in-flight record may span: a
// merged call holds at most 12,000 bytes of events (a few hundred), and
// transaction markers between them; metadata claiming more is ignored, so
// it cannot make a member buffer the log.
const maxInFlightSpan = 10000

// startOffset resolves where a partition without a committed offset
// starts. With LastOffset the resolved offset is committed at once, so
// records produced after this moment are delivered by whoever owns the
// partition next, even if this member dies before its first delivery.
func (p *partition) startOffset() (int64, error) {
	first, last, err := p.offsets.Bounds(p.taking)
	if err != nil {
		return 0, p.ended(err)
	}
	if p.w.cfg.StartOffset != kafka.LastOffset {
		p.warnOld(first, last)
		return first, nil
	}
	if err := p.commit(nil, last, ""); err != nil {
		return 0, err
	}
	p.log.Info("no committed offset: starting at the log end (KAFKA_START_OFFSET=latest), committed", zap.Int64("offset", last))
	return last, nil
}

// warnOld warns when a partition without a committed offset (a new group,
// offsets expired or deleted) starts at its earliest offset and holds
// records older than a day: they will be read, and each is sent unless
// the delivered log knows it (or TIM_MAX_AGE expires it).
func (p *partition) warnOld(first, end int64) {
	if first >= end {
		return
	}
	dayAgo, err := p.offsets.OffsetAt(p.taking, p.w.cfg.Now().Add(-24*time.Hour))
	if err != nil || dayAgo <= first {
		return
	}
	if dayAgo < 0 || dayAgo > end {
		dayAgo = end // every record is older than a day
	}
	fields := []zap.Field{zap.String("group", p.w.cfg.GroupID), zap.Int64("from_offset", first), zap.Int64("older_than_a_day", dayAgo-first)}
	if p.w.delivered != nil {
		p.log.Warn("no committed offset (a new group, or its offsets expired): starting at the earliest offset "+
			"(KAFKA_START_OFFSET=earliest) of a partition holding records older than a day; what the delivered log "+
			"(KAFKA_DELIVERED_TOPIC) knows as delivered is skipped, the rest is sent (TIM_MAX_AGE bounds the age of what is sent)", fields...)
	} else {
		p.log.Warn("no committed offset (a new group, or its offsets expired): starting at the earliest offset "+
			"(KAFKA_START_OFFSET=earliest) of a partition holding records older than a day, with the delivered log off: "+
			"every one of them is sent again (set TIM_MAX_AGE, or KAFKA_START_OFFSET=latest)", fields...)
	}
}

// graceWatch ends sending RevokeGrace (DrainTimeout when stopping) after
// taking ended, unless the session ended first.
func (p *partition) graceWatch(stopSending context.CancelFunc) {
	select {
	case <-p.sending.Done():
		return
	case <-p.taking.Done():
	}
	grace := p.w.cfg.RevokeGrace
	if p.stop.Err() != nil {
		grace = p.w.cfg.DrainTimeout
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.sending.Done():
	case <-t.C:
		stopSending()
	}
}

// ended is the error to return when a wait ended with err: errStopping or
// errRevoked when taking ended (the normal end of a session), else err.
func (p *partition) ended(err error) error {
	switch {
	case p.stop.Err() != nil:
		return errStopping
	case p.taking.Err() != nil:
		return errRevoked
	}
	return err
}

// abandoned is the error of a call or write cut short because sending
// ended: errAbandoned, or why taking ended first.
func (p *partition) abandoned() error {
	if p.sending.Err() != nil {
		return errAbandoned
	}
	return p.ended(errAbandoned)
}

// pump fetches the partition into records until taking ends, decoding each
// record once. Offsets outside the log are handled here, loudly: below the
// log start (retention deleted records before they were delivered) it
// continues at the log start; beyond the log end (truncation after an
// unclean leader election, a manual reset) at the log end. Both show in an
// error log with the range, in timbroadcast_records_skipped_total and in
// /readyz.
func (p *partition) pump(records chan<- item) {
	defer close(records)
	w, f, ctx := p.w, p.fetch.Fetcher(), p.taking
	handed := f.Next // the offset after the last item handed over
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
		res, err := p.fetch.Fetch(ctx)
		if res != nil {
			p.held.Add(res.Records)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			var pe *kafkaconn.PartitionError
			if errors.As(err, &pe) && pe.Err == kafka.OffsetOutOfRange {
				if p.outOfRange() {
					if !send(item{skipTo: f.Next}) {
						return
					}
					handed = f.Next
				}
				continue
			}
			what := "request"
			if pe != nil {
				what = pe.Err.Title()
			}
			w.metrics.RecordFetchError(what)
			if !p.readFailed(ctx, bo, f.Next, "fetch failed; retrying", "", err) {
				return
			}
			continue
		}
		bo.Reset()
		p.fetched.Store(f.Next)
		w.reads.OK(p.tp)
		w.metrics.RecordSkipped("aborted_transaction", int64(res.Aborted))
		w.metrics.RecordSkipped("transaction_marker", int64(res.Markers))
		if res.Aborted > 0 {
			p.log.Debug("skipped records of aborted transactions", zap.Int("records", res.Aborted))
		}
		if !p.eachRecord(ctx, res, func(rec *call.Record) bool {
			handed = rec.Msg.Offset + 1
			return send(item{rec: rec})
		}) {
			return
		}
		if f.Next > handed {
			if !send(item{skipTo: f.Next}) {
				return
			}
			handed = f.Next
		}
		if res.BudgetFull {
			// The worker holds BufferBytes of records: fetch again once the
			// record that did not fit fits. A wait longer than StuckAfter
			// shows in /readyz and the stuck metric like any other.
			w.reads.Fail(p.tp, f.Next, w.cfg.Now(), fmt.Sprintf("waiting for room in TIM_BUFFER_BYTES (%d bytes) for a record of %d bytes",
				w.fetcher.Budget().Size(), res.BudgetNeed))
			if w.fetcher.Budget().Wait(ctx, res.BudgetNeed) != nil {
				return
			}
			w.reads.OK(p.tp)
			continue
		}
		if len(res.Records) == 0 && len(res.Oversized) == 0 && res.Batches > 0 && res.Aborted == 0 && res.Markers == 0 {
			// Batches with nothing at or after the fetch offset (a compacted
			// batch's tail): wait a little instead of asking again at once.
			if sleep.For(ctx, min(f.MaxWait(), 500*time.Millisecond)) != nil {
				return
			}
		}
	}
}

// eachRecord hands yield the records of a fetch in offset order, each
// decoded once, and a record for each run of them over a limit
// (oversized). It is false when yield or decoding stopped (ctx ended).
func (p *partition) eachRecord(ctx context.Context, res *kafkaconn.Fetched, yield func(*call.Record) bool) bool {
	fetched := time.Now()
	over := res.Oversized
	for i := 0; i < len(res.Records) || len(over) > 0; {
		var rec *call.Record
		if len(over) > 0 && (i == len(res.Records) || over[0].Offset < res.Records[i].Offset) {
			rec = p.oversized(over[0], fetched)
			over = over[1:]
		} else {
			if rec = p.decode(ctx, res.Records[i], fetched); rec == nil {
				return false
			}
			i++
		}
		if !yield(rec) {
			return false
		}
	}
	return true
}

// decode decodes a fetched record once (package decode). A failure
// that retrying may cure (the Schema Registry unreachable) is retried with
// a backoff while the partition waits, like a failing fetch (readFailed).
// It returns nil when ctx ended first.
func (p *partition) decode(ctx context.Context, m kafka.Message, at time.Time) *call.Record {
	w := p.w
	var bo backoff.BackOff // made at the first failure: most records decode at once
	for failing := false; ; failing = true {
		ev, filtered, err := w.decoder.Decode(ctx, m)
		r := &call.Record{Msg: m, At: at, Ev: ev, Filtered: filtered}
		if ev != nil && w.cfg.MaxAge > 0 && !m.Time.IsZero() {
			// Never stale: an event older than MaxAge by its record
			// timestamp when its turn comes is dead-lettered as expired,
			// like one past its own expiry header.
			if limit := m.Time.Add(w.cfg.MaxAge); ev.ExpiresAt.IsZero() || limit.Before(ev.ExpiresAt) {
				ev.ExpiresAt, r.Aged = limit, true
			}
		}
		var ie *wire.InvalidEventError
		switch {
		case err == nil:
		case errors.As(err, &ie):
			r.Invalid = ie
		case ctx.Err() != nil:
			return nil
		default:
			if bo == nil {
				bo = backoff.NewExponentialBackOff(backoff.WithInitialInterval(200*time.Millisecond), backoff.WithMaxInterval(10*time.Second),
					backoff.WithMaxElapsedTime(0))
			}
			if !p.readFailed(ctx, bo, m.Offset, "cannot decode the record yet; the partition waits and retries", "decode: ", err) {
				return nil
			}
			continue
		}
		if failing {
			w.reads.OK(p.tp)
			p.log.Info("decoding works again", zap.Int64("offset", m.Offset))
		}
		return r
	}
}

// oversized is the record for a record (or a run of them) the fetch did
// not keep because it is over a limit: it is dead-lettered too_large, a
// copy with nothing of the record but where it is (topic, partition,
// offsets) and its size, and the records after it flow on.
func (p *partition) oversized(o kafkaconn.Oversized, at time.Time) *call.Record {
	m := kafka.Message{Topic: p.tp.topic, Partition: p.tp.partition, Offset: o.Offset, Time: o.Time}
	where := fmt.Sprintf("offset %d", o.Offset)
	if o.Last > o.Offset {
		where = fmt.Sprintf("offsets %d to %d", o.Offset, o.Last)
	}
	msg := fmt.Sprintf("%s: not read; the record is at %s/%d %s", o.Limit, p.tp.topic, p.tp.partition, where)
	p.log.Warn("record over a limit: dead-lettering a copy that says where it is", zap.Int64("offset", o.Offset),
		zap.Int64("last_offset", o.Last), zap.Int64("bytes", o.Bytes), zap.String("limit", o.Limit))
	return &call.Record{Msg: m, At: at, Invalid: &wire.InvalidEventError{Reason: wire.ReasonTooLarge, Msg: msg}}
}

// readFailed records that reading the partition at offset keeps failing
// (a fetch, a decode): /readyz lists the partition once it has failed for
// StuckAfter, with the last error (prefixed by what). It logs msg and
// waits the backoff; false when ctx ended first.
func (p *partition) readFailed(ctx context.Context, bo backoff.BackOff, offset int64, msg, what string, err error) bool {
	p.w.reads.Fail(p.tp, offset, p.w.cfg.Now(), what+err.Error())
	wait := bo.NextBackOff()
	p.log.Warn(msg, zap.Int64("offset", offset), zap.Duration("in", wait), zap.Error(err))
	return sleep.For(ctx, wait) == nil
}

// outOfRange moves the fetcher back inside the log when its offset is
// outside; it reports whether it moved it.
func (p *partition) outOfRange() bool {
	w, f, log := p.w, p.fetch.Fetcher(), p.log
	first, last, err := p.offsets.Bounds(p.taking)
	if err != nil {
		log.Warn("offset out of range and the log's bounds cannot be read; retrying", zap.Error(err))
		_ = sleep.For(p.taking, time.Second)
		return false
	}
	var reason string
	var lost int64
	switch {
	case f.Next < first:
		reason, lost = "retention", first-f.Next
		log.Error("records deleted before they were delivered (retention or DeleteRecords): skipping to the log start",
			zap.Int64("from_offset", f.Next), zap.Int64("to_offset", first-1), zap.Int64("records", lost))
		w.notes.Add(w.cfg.Now(), fmt.Sprintf("%s: offsets %d..%d were deleted before delivery (retention); continued at %d",
			p.tp, f.Next, first-1, first))
		f.Next = first
	case f.Next > last:
		reason, lost = "log_truncated", f.Next-last
		log.Error("committed offset beyond the log end (truncation after an unclean leader election, or a manual reset): "+
			"continuing at the log end; records produced from there on are delivered",
			zap.Int64("committed_offset", f.Next), zap.Int64("log_end", last), zap.Int64("offsets_gone", lost))
		w.notes.Add(w.cfg.Now(), fmt.Sprintf("%s: committed offset %d was beyond the log end %d (log truncated); continued at %d",
			p.tp, f.Next, last, last))
		f.Next = last
	default:
		return false // the log moved meanwhile: fetch again
	}
	w.metrics.RecordSkipped(reason, lost)
	return true
}

// route takes the pump's items in offset order and hands each record to
// its app's stream (handOff). Positions without records let the commit
// move. It returns when taking ends or the pump stops.
func (p *partition) route() error {
	for {
		var it item
		select {
		case got, ok := <-p.records:
			if !ok || p.taking.Err() != nil {
				return p.ended(errors.New("the fetch loop stopped"))
			}
			it = got
		case <-p.taking.Done():
			return p.ended(nil)
		}
		if it.rec == nil {
			p.mu.Lock()
			p.routed = it.skipTo // the pump's position (moved back inside a truncated log, say)
			p.movedLocked()
			p.mu.Unlock()
			p.commits.advance()
			continue
		}
		m := it.rec.Msg
		p.w.metrics.RecordConsumed(m.Topic, m.Partition, m.Offset, m.HighWaterMark)
		if err := p.handOff(p.appOf(it.rec), it.rec); err != nil {
			return err
		}
	}
}

// appOf returns rec's app (nil: none), making rec a record to dead-letter
// when no app could be found for it; a record the mapping filtered out
// stays filtered whatever its app.
func (p *partition) appOf(rec *call.Record) *apps.App {
	a, ie := p.w.apps.Route(rec)
	if ie != nil && !rec.Filtered && rec.Invalid == nil { // a record invalid already keeps its own reason
		rec.Ev, rec.Invalid = nil, ie
	}
	return a
}
