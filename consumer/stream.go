package consumer

import (
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/apps"
	"github.com/timbroadcast/timbroadcast/consumer/call"
	"github.com/timbroadcast/timbroadcast/consumer/delivered"
	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
	"github.com/timbroadcast/timbroadcast/consumer/lows"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/dedupe"
	"github.com/timbroadcast/timbroadcast/sender"
)

// A stream is one app's share of one partition session: the records the
// partition routed to the app, in offset order, which the stream plans
// into calls (plan.go) and settles (settle.go) one call at a time. Each
// app's stream has its own call schedule turn, pause and holds, so a
// paused app waits in its own stream while the others' streams deliver
// from the same partition. Without an apps file a partition has one
// stream, and everything happens as it did before streams.
//
// What a stream keeps is bounded (Config.StreamMaxRecords and
// StreamMaxBytes): a stream over its bound keeps no more of its records (a gap) and, once it
// has settled what it kept, reads them again from the partition itself
// (reread), until it is back at the partition's position.
type stream struct {
	*partition
	app *apps.App // nil: the records no app could be found for (dead-lettered)
	tp  topicPartition
	log *zap.Logger
	obs *call.Observer // observes each of its calls

	// Shared with the partition's router, under partition.mu.
	queue  []*call.Record
	qbytes int64
	// place holds the stream's low, its first offset without its final
	// outcome (lows.None: none), in partition.lows: the partition
	// commits below every stream's low.
	place lows.Item
	// gap >= 0: the stream's records from gap on were not kept; it reads
	// them again. skipBelow: the router drops the stream's records below
	// it (read again already).
	gap, skipBelow int64
	// gapAt is the timestamp of the record at gap.
	gapAt time.Time
	wake  chan struct{}
	// room is closed when the stream takes its queued records, for a
	// router waiting for room (one app: roomWait).
	room     chan struct{}
	roomWait bool
	// aheadLen is how many records the stream held taken from the queue
	// at its last fill (one app: with the queue, bounded by oneAppKeep).
	aheadLen int
	// resume is the call recorded as in flight for the stream's app
	// when the session began, until the stream has rebuilt it.
	resume *wire.AppInFlight

	// The stream's own.
	ahead     []*call.Record // taken from the queue (or read again), not yet in a call
	cur       *call.Call     // the call being settled (a split's outer call)
	open      []*call.Record // the members of the calls being settled, in order
	settledTo int64          // every record of the stream below it has its outcome
	reader    *kafkaconn.Fetcher
	// The delivered log (package delivered): records below floor were
	// delivered already; topicID is the source topic's id as the stream
	// began.
	floor   int64
	topicID string
}

// handOff hands rec, routed to app a (nil: none), to a's stream in the
// partition, starting the stream when a first has a record in the
// session; the stream resumes the call recorded in flight for a, if any.
// With one app it waits while the stream holds its bound (waitRoom).
func (p *partition) handOff(a *apps.App, rec *call.Record) error {
	p.mu.Lock()
	s, known := p.streams[a]
	if !known {
		s = p.newStream(a)
		p.streams[a] = s
		p.lows.Add(&s.place)
	}
	if a != nil && s.resume == nil {
		for i := range p.pending {
			if f := p.pending[i]; f.App == a.SDKAppID || f.App == 0 && rec.Msg.Offset >= f.First {
				s.resume = &f
				p.resuming++
				p.pending = append(p.pending[:i], p.pending[i+1:]...)
				break
			}
		}
	}
	s.pushLocked(rec)
	p.routed = rec.Msg.Offset + 1
	p.movedLocked()
	p.mu.Unlock()
	if !known {
		p.running.Go(func() { p.fail(s.run()) }) // it returns only when the session must end
	}
	if p.w.apps.Single != nil {
		return s.waitRoom()
	}
	return nil
}

// movedLocked wakes the streams resuming a call or packing one: the
// router moved.
func (p *partition) movedLocked() {
	if p.resuming > 0 || p.packing > 0 {
		close(p.adv)
		p.adv = make(chan struct{})
	}
}

// advanced is closed when the router next moves.
func (p *partition) advanced() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.adv
}

// maxCatchUp bounds how long a merge call waits for the router to hand
// over what the pump has fetched (caughtUp): decoding what is in memory,
// never a fetch.
const maxCatchUp = 50 * time.Millisecond

// routedNow is the offset after the last item routed.
func (p *partition) routedNow() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.routed
}

// newStream returns the stream of a (nil: no app) in p.
func (p *partition) newStream(a *apps.App) *stream {
	s := &stream{partition: p, app: a, tp: p.tp, log: p.log, gap: -1, skipBelow: -1, wake: make(chan struct{}, 1),
		room: make(chan struct{})}
	if p.w.apps.Single == nil {
		name := "none"
		if a != nil {
			name = a.Name
		}
		s.tp.app = name
		s.log = p.log.With(zap.String("app", name))
		if a != nil {
			s.log = s.log.With(zap.Uint64("sdkappid", a.SDKAppID))
		}
	}
	s.obs = &call.Observer{Tracing: p.w.tr, Metrics: p.w.metrics, Log: s.log, Urgent: p.urgent, DLQTopic: p.w.cfg.DLQTopic,
		OnOutcome: p.w.cfg.OnOutcome, Failing: func(at time.Time, what string) { p.w.holds.Fail(s.tp, at, what) }}
	if p.w.apps.Single == nil {
		s.obs.Label = s.tp.app
		if a != nil {
			s.obs.App, s.obs.SDKAppID = a.Name, a.SDKAppID
		}
	}
	return s
}

// pushLocked hands rec to the stream (partition.mu held). Over the
// stream's bound (several apps only) the record is not kept: the stream
// reads it again later.
func (s *stream) pushLocked(rec *call.Record) {
	off := rec.Msg.Offset
	if off < s.skipBelow {
		s.held.Release(off)
		return
	}
	if s.place.Low() == lows.None {
		s.lows.Set(&s.place, off)
		s.app.SetWaiting(s.w.metrics, s.obs.Label, s, rec.Time())
	}
	if s.gap < 0 && s.w.apps.Single == nil && s.full() {
		s.gap, s.gapAt = off, rec.Time()
		s.log.Info("the stream holds its bound of records: it reads the rest again from the partition once it has settled these",
			zap.Int64("from_offset", off), zap.Int("records", len(s.queue)), zap.Int64("bytes", s.qbytes))
	}
	if s.gap >= 0 {
		s.held.Release(off)
		return
	}
	s.queue = append(s.queue, rec)
	s.qbytes += rec.Bytes()
	s.poke()
}

// pausedKeep is how many records a stream keeps while its app is paused
// (an error every event meets, or an operator's pause): however many apps
// are paused, they hold little of the worker's budget (Config.BufferBytes),
// so none can fill it and stop the others' reading.
const pausedKeep = 64

// full reports whether the stream keeps its bound of records (partition.mu
// held): Config.StreamMaxRecords and StreamMaxBytes, pausedKeep while its
// app is paused.
func (s *stream) full() bool {
	if len(s.queue) >= s.w.cfg.StreamMaxRecords || s.qbytes >= s.w.cfg.StreamMaxBytes {
		return true
	}
	if len(s.queue) < pausedKeep || s.app == nil {
		return false
	}
	if paused, _, _ := s.app.Sched.Paused(); paused {
		return true
	}
	_, held := s.app.Sched.Held()
	return held
}

// caughtUp waits, at most maxCatchUp, until the router has handed the
// stream every record the pump has fetched. A merge call packs when its
// slot comes; without this, the first call of a backlog leaves with the
// few records the router had reached when the stream woke, while the rest
// of the fetch sits decoded in memory. The stream takes what is queued as
// it waits; a router waiting for room (waitRoom) means the stream holds
// its bound already.
func (s *stream) caughtUp() {
	p := s.partition
	deadline := time.NewTimer(maxCatchUp)
	defer deadline.Stop()
	for {
		if s.fill(false) != nil {
			return
		}
		p.mu.Lock()
		if p.routed >= p.fetched.Load() || s.roomWait { // everything routed, or the stream holds its bound
			p.mu.Unlock()
			return
		}
		p.packing++
		adv := p.adv
		p.mu.Unlock()
		var done bool
		select {
		case <-adv:
		case <-deadline.C:
			done = true
		case <-p.routerDone:
			done = true
		case <-p.taking.Done():
			done = true
		}
		p.mu.Lock()
		p.packing--
		p.mu.Unlock()
		if done {
			return
		}
	}
}

// oneAppKeep bounds the records a stream holds, queued and taken, when
// it serves the worker's one app: the router waits past it (waitRoom). A
// merge call packs at most 36 KB of events, a few hundred.
const oneAppKeep = 1024

// movable is how many queued records fill moves to ahead (partition.mu
// held): all of them with several apps (their bound is the queue's), up to
// oneAppKeep held with one app, at least one when none is held.
func (s *stream) movable() int {
	n := len(s.queue)
	if s.w.apps.Single != nil {
		n = min(n, max(oneAppKeep-len(s.ahead), 0))
		if n == 0 && len(s.ahead) == 0 && len(s.queue) > 0 {
			n = 1
		}
	}
	return n
}

// roomless reports whether the router waits before handing the stream
// of the one app another record (partition.mu held).
func (s *stream) roomless() bool {
	return len(s.queue)+s.aheadLen >= oneAppKeep || s.qbytes >= s.w.cfg.StreamMaxBytes || s.full()
}

// waitRoom waits, with one app, until the stream keeps less than its
// bound (full), so the router stops handing it records and the pump stops
// fetching: a backlog is held up to the bound, not up to the worker's
// whole budget (Config.BufferBytes). With several apps a stream over its
// bound reads its records again instead (pushLocked): a router never
// waits for one app.
func (s *stream) waitRoom() error {
	p := s.partition
	for {
		p.mu.Lock()
		if !s.roomless() {
			p.mu.Unlock()
			return nil
		}
		s.roomWait = true
		room := s.room
		p.mu.Unlock()
		select {
		case <-room:
		case <-p.taking.Done():
			return p.ended(nil)
		}
	}
}

// poke wakes the stream if it waits.
func (s *stream) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run plans and settles the stream's calls until the session ends; the
// error says why (never nil).
func (s *stream) run() error {
	if err := s.start(); err != nil {
		return err
	}
	for {
		calls, err := s.resumed()
		if err != nil {
			return err
		}
		if calls == nil {
			c, err := s.plan()
			if err != nil {
				return err
			}
			calls = []*call.Call{c}
		}
		s.open = s.open[:0]
		for _, c := range calls {
			s.open = append(s.open, c.Members...)
		}
		for _, c := range calls {
			s.cur = c
			err := s.settle(c)
			s.cur = nil
			if err != nil {
				return err
			}
		}
		s.open = s.open[:0]
	}
}

// start reads what the delivered log knows of the stream's app in the
// partition.
func (s *stream) start() error {
	first := s.committedAt
	s.partition.mu.Lock()
	if low := s.place.Low(); low != lows.None {
		first = low
	}
	s.partition.mu.Unlock()
	var err error
	s.floor, err = s.deliveredFloor(first)
	return err
}

// deliveredFloor reads the delivered log for the partition at the start
// of a session that starts at offset start, and returns the offset below
// which its records were delivered already (-1 for none). It checks the
// entry first: an entry of an earlier topic of the same name (another id)
// does not apply, and one above the log's end is lowered to it, each with
// an error log, a metric and a note in /readyz.
func (s *stream) deliveredFloor(start int64) (int64, error) {
	d := s.w.delivered
	if d == nil || s.app == nil {
		return -1, nil
	}
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(200*time.Millisecond), backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0))
	since := s.deliveredSince
	for {
		err := d.Refresh(s.taking, since)
		if err == nil {
			break
		}
		if !s.readFailed(s.taking, bo, start, "cannot read the delivered log (KAFKA_DELIVERED_TOPIC); the partition waits and retries",
			"delivered log: ", err) {
			return 0, s.ended(err)
		}
	}
	s.topicID = d.TopicID(s.taking, s.tp.topic)
	e, ok := d.Entry(s.app.Key, s.tp.topic, s.tp.partition)
	if !ok || e.Next <= 0 {
		return -1, nil
	}
	if !e.SameTopic(s.topicID) {
		s.log.Warn("the source topic was deleted and created again under its name (its id changed): what the delivered log "+
			"remembers of the old topic does not apply, and every record of the new one is delivered",
			zap.String("remembered_topic_id", e.TopicID), zap.String("topic_id", s.topicID), zap.Int64("old_watermark", e.Next))
		s.w.notes.Add(s.w.cfg.Now(), fmt.Sprintf("%s: the topic was created again (id %s, was %s); the delivered log starts over for it",
			s.tp, s.topicID, e.TopicID))
		s.w.metrics.RecordWatermarkReset("topic_recreated")
		return -1, nil
	}
	end, err := s.logEnd(false)
	if err == nil && end < e.Next {
		end, err = s.logEnd(true) // the end read at the session's start may be behind
	}
	if err != nil {
		return 0, s.ended(err)
	}
	if end < e.Next {
		// What the log holds now was delivered, unless it was produced
		// after the entry was written (a topic created again on a broker
		// without topic ids): those records are new.
		floor := end
		if newer, err := s.offsets.OffsetAt(s.taking, time.UnixMilli(e.At).Add(delivered.TruncationSkew)); err == nil && newer >= 0 && newer < floor {
			floor = newer
		}
		s.log.Error("the partition's log ends below what the delivered log says was delivered: records were lost (an unclean "+
			"leader election, or the topic created again on a broker without topic ids); the records it holds from before the "+
			"last delivery recorded are taken as delivered, those after are delivered", zap.Int64("log_end", end),
			zap.Int64("delivered_watermark", e.Next), zap.Int64("lowered_to", floor), zap.Time("last_recorded_at", time.UnixMilli(e.At)))
		s.w.notes.Add(s.w.cfg.Now(), fmt.Sprintf("%s: the log ends at %d, below the delivered watermark %d (truncated); lowered to %d",
			s.tp, end, e.Next, floor))
		s.w.metrics.RecordWatermarkReset(wire.ResetLogTruncated)
		lowered := d.Watermark(s.app.Key, s.tp.topic, s.tp.partition, s.topicID, floor, wire.ResetLogTruncated, nil)
		if err := s.writeHeld(s.log, "delivered log write", topicAppender{d.Appender(), d.Topic()}, start, []kafka.Message{d.Message(lowered)}, nil, nil); err != nil {
			return 0, err
		}
		d.Written(lowered)
		return floor, nil
	}
	if start < e.Next {
		s.log.Info("records from the start offset on were delivered already (delivered log): they are committed as "+
			"already_delivered, not sent", zap.Int64("from_offset", start), zap.Int64("to_offset", e.Next-1),
			zap.String("delivered_log", d.Topic()), zap.String("written_by", wire.Printable(wire.Cut(e.By, 128))))
	}
	return e.Next, nil
}

// logEnd returns the partition's log end, read once a session for all its
// streams (a partition shared by a thousand apps starts a thousand
// streams at once); fresh reads it again.
func (p *partition) logEnd(fresh bool) (int64, error) {
	p.endMu.Lock()
	defer p.endMu.Unlock()
	if p.endKnown && !fresh {
		return p.end, nil
	}
	_, end, err := p.offsets.Bounds(p.taking)
	if err != nil {
		return 0, err
	}
	p.end, p.endKnown = end, true
	return end, nil
}

// take returns the next record, waiting for it (or reading it again).
func (s *stream) take() (*call.Record, error) {
	for len(s.ahead) == 0 {
		if err := s.fill(true); err != nil {
			return nil, err
		}
	}
	rec := s.ahead[0]
	s.ahead = s.ahead[1:]
	return rec, nil
}

// fill moves records to ahead: the queued ones, or those read again in a
// gap; with wait, it waits until there is one.
func (s *stream) fill(wait bool) error {
	for {
		p := s.partition
		p.mu.Lock()
		n := s.movable()
		if n > 0 {
			s.ahead = append(s.ahead, s.queue[:n]...)
			for _, r := range s.queue[:n] {
				s.qbytes -= r.Bytes()
			}
			rest := copy(s.queue, s.queue[n:])
			clear(s.queue[rest:])
			s.queue = s.queue[:rest]
		}
		s.aheadLen = len(s.ahead)
		if s.roomWait && !s.roomless() {
			close(s.room)
			s.room, s.roomWait = make(chan struct{}), false
		}
		if n > 0 {
			p.mu.Unlock()
			return nil
		}
		gap := s.gap
		p.mu.Unlock()
		if gap >= 0 {
			n := len(s.ahead)
			if err := s.reread(gap); err != nil {
				return err
			}
			if len(s.ahead) > n || !wait {
				return nil
			}
			continue
		}
		if !wait {
			return nil
		}
		select {
		case <-s.wake:
		case <-p.routerDone:
			return p.ended(errors.New("the partition stopped routing"))
		case <-s.taking.Done():
			return p.ended(nil)
		}
	}
}

// peekAt returns the i-th record waiting behind what was taken (from 0),
// if it has already arrived.
func (s *stream) peekAt(i int) (*call.Record, bool) {
	if len(s.ahead) <= i {
		_ = s.fill(false)
	}
	if len(s.ahead) <= i {
		return nil, false
	}
	return s.ahead[i], true
}

// reread reads the stream's records again from offset from (a gap), one
// fetch at a time into ahead, until it is back at the partition's
// position: then the gap closes and the router hands it records again.
func (s *stream) reread(from int64) error {
	p := s.partition
	if s.reader == nil || s.reader.Next < from {
		s.reader = p.w.conn.Fetcher(s.tp.topic, s.tp.partition, from, p.w.cfg.MaxWait)
	}
	for {
		p.mu.Lock()
		if s.reader.Next >= p.routed {
			s.gap, s.skipBelow = -1, s.reader.Next
			p.mu.Unlock()
			s.log.Info("the stream is back at the partition's position", zap.Int64("offset", s.reader.Next))
			s.reader = nil
			return nil
		}
		p.mu.Unlock()
		res, err := s.reader.Fetch(s.taking)
		if err != nil {
			if s.taking.Err() != nil {
				return p.ended(err)
			}
			return fmt.Errorf("read the app's records again from offset %d: %w", s.reader.Next, err)
		}
		kept := 0
		// Every record of the app read is kept, past the router's position
		// too: the router drops those once the gap closes (skipBelow).
		if !p.eachRecord(s.taking, res, func(rec *call.Record) bool {
			if p.appOf(rec) == s.app {
				s.ahead = append(s.ahead, rec)
				kept++
			}
			return true
		}) {
			return p.ended(errors.New("decoding stopped"))
		}
		p.mu.Lock()
		s.gap = s.reader.Next
		p.mu.Unlock()
		if kept > 0 {
			return nil
		}
	}
}

// resumed returns the calls that finish the call recorded in flight for
// the stream's app, once the stream's next record is at or past its
// first offset; nil otherwise.
func (s *stream) resumed() ([]*call.Call, error) {
	p := s.partition
	p.mu.Lock()
	f := s.resume
	p.mu.Unlock()
	if f == nil {
		return nil, nil
	}
	if len(s.ahead) == 0 {
		if err := s.fill(true); err != nil {
			return nil, err
		}
	}
	if s.ahead[0].Msg.Offset < f.First {
		return nil, nil
	}
	p.mu.Lock()
	s.resume = nil
	p.resuming--
	p.mu.Unlock()
	if f.Delivered == nil && f.Last < s.floor {
		s.log.Info("the call recorded as in flight was delivered (delivered log): committed without sending",
			zap.Int64("last_offset", f.Last), zap.Uint32("random", f.Random))
		return nil, nil
	}
	return s.resumeCall(f.First, f.InFlight)
}

// through returns the stream's records up to offset last: those waiting,
// and those still to come until the partition has routed past last or
// reached end.
func (s *stream) through(last, end int64) ([]*call.Record, error) {
	var got []*call.Record
	for {
		for len(s.ahead) > 0 && s.ahead[0].Msg.Offset <= last {
			got = append(got, s.ahead[0])
			s.ahead = s.ahead[1:]
		}
		if len(s.ahead) > 0 || (len(got) > 0 && got[len(got)-1].Msg.Offset == last) {
			return got, nil
		}
		p := s.partition
		if r := p.routedNow(); r > last || r >= end {
			if err := s.fill(false); err != nil || len(s.ahead) == 0 {
				return got, err
			}
			continue
		}
		if err := s.fill(false); err != nil {
			return nil, err
		}
		if len(s.ahead) == 0 {
			select {
			case <-s.wake:
			case <-p.advanced():
			case <-p.routerDone:
				return nil, p.ended(errors.New("the partition stopped routing"))
			case <-s.taking.Done():
				return nil, p.ended(nil)
			}
		}
	}
}

// Planning: the partition's loops only decide what the next call is (its
// members, body and Random, whether it records itself as in flight, whether
// an earlier attempt may have reached the server); settle.go takes every
// call to its outcome and commits.

// plan waits for the next record and returns the call that delivers it:
// the record alone (plain mode), or in merge mode the record with whatever
// waits behind it when its slot comes.
func (s *stream) plan() (*call.Call, error) {
	rec, err := s.take()
	if err != nil {
		return nil, err
	}
	s.floor = s.w.delivered.Fresh(s.taking, s.app.DeliveredKey(), s.tp.topic, s.tp.partition, s.topicID, rec.Msg.Time, s.w.cfg.Now(), s.floor)
	if rec.Msg.Offset < s.floor {
		return s.already(rec), nil
	}
	c := s.lone(rec)
	switch {
	case rec.Ev == nil:
		// Never sent: dead-lettered as invalid.
	case s.w.cfg.Merge && !rec.Ev.Expired(s.w.cfg.Now()):
		// What arrives while the call waits for its slot joins it; the
		// call is recorded in flight once packed.
		c.InFlight = true
		c.Pack = func() { s.pack(c) }
	case !s.w.cfg.Merge && !rec.Ev.ExpiresAt.IsZero() && !rec.Ev.Expired(s.w.cfg.Now()):
		// Recorded in flight before its first attempt: after a crash, an
		// event that may have reached the server is resent (and deduped),
		// not dead-lettered as expired.
		c.InFlight = true
	}
	return c, nil
}

// maxAlready is how many records below the delivered log's watermark are
// committed at once.
const maxAlready = 500

// already returns the "call" of rec and of the records waiting behind it
// that are below the delivered log's watermark too: never sent, committed
// together as already delivered.
func (s *stream) already(rec *call.Record) *call.Call {
	members := []*call.Record{rec}
	for i := 0; len(members) < maxAlready; i++ {
		nx, ok := s.peekAt(i)
		if !ok || nx.Msg.Offset >= s.floor {
			break
		}
		members = append(members, nx)
	}
	s.ahead = s.ahead[len(members)-1:]
	for _, m := range members {
		s.obs.Joined(m)
	}
	log := s.log.WithLazy(zap.Int64("offset", rec.Msg.Offset))
	return &call.Call{Obs: s.obs, Members: members, Res: call.Already, Log: log}
}

// lone returns the call for rec alone, its span started.
func (s *stream) lone(rec *call.Record) *call.Call {
	s.obs.Joined(rec)
	c := &call.Call{Obs: s.obs, Members: []*call.Record{rec}, Log: s.obs.MemberLog(rec)}
	if rec.Ev != nil {
		c.Body, c.Random = rec.Ev.Body, rec.Ev.Message.Random
	}
	return c
}

// pack grows a merge call, once its slot has come, by the longest run of
// waiting events that may join it, and of that run by the longest prefix
// that fits (a binary search: a few encodings however many events wait, so
// packing barely delays the call).
func (s *stream) pack(c *call.Call) {
	s.caughtUp()
	head := c.Members[0]
	members := []*call.Record{head}
	limit := s.w.cfg.MergeMaxBytes
	join := wire.NewJoiner(s.w.mergeMode())
	join.Add(&head.Ev.Message)
	for i, estimate := 0, len(head.Ev.Body); estimate <= 3*limit; i++ {
		nx, ok := s.peekAt(i)
		if !ok || nx.Ev == nil || nx.Ev.Expired(s.w.cfg.Now()) || !join.Add(&nx.Ev.Message) {
			break
		}
		members = append(members, nx)
		estimate += len(nx.Ev.Body)
	}
	type packed struct {
		body   []byte
		random uint32
	}
	// The largest prefix within the limit, found by size alone (encoding
	// without validating: every member was validated when decoded), then
	// validated once; should that fail, the search runs again validating
	// every candidate.
	search := func(validate bool) (int, packed) {
		build := func(n int) (packed, bool) {
			b, r, err := s.w.build(members[:n], validate)
			return packed{b, r}, err == nil && len(b) <= limit
		}
		best, _ := build(1) // a lone event always goes, with its own bytes
		lo, hi := 1, len(members)
		for lo < hi {
			mid := (lo + hi + 1) / 2
			if b, ok := build(mid); ok {
				lo, best = mid, b
			} else {
				hi = mid - 1
			}
		}
		return lo, best
	}
	lo, best := search(false)
	if lo > 1 {
		if b, r, err := s.w.build(members[:lo], true); err == nil && len(b) <= limit {
			best = packed{b, r}
		} else {
			lo, best = search(true)
		}
	}
	s.ahead = s.ahead[lo-1:]
	c.Members, c.Body, c.Random = members[:lo], best.body, best.random
	for _, m := range c.Members[1:] {
		s.obs.Joined(m)
	}
	fields := []zap.Field{zap.Int64("offset", head.Msg.Offset), zap.Int("events", lo), zap.Uint32("random", c.Random)}
	if lo == 1 {
		fields = append(fields, s.w.tr.EventTraceFields(head)...)
	}
	c.Log = s.log.WithLazy(fields...) // encoded only if the call logs something
}

// resumeCall returns the calls that finish a call recorded as in flight
// by an earlier owner (or by this one before a restart): the same
// records, the same bytes, so the server's dedupe discards a resend. A
// call recorded as delivered is not sent again: its receipts are written
// and it is committed. A call that cannot be rebuilt byte for byte (its
// records were compacted away or changed) is sent record by record, with
// a warning: never a reason to stop the partition.
func (s *stream) resumeCall(first int64, f wire.InFlight) ([]*call.Call, error) {
	log := s.log.With(zap.Int64("first_offset", first), zap.Int64("last_offset", f.Last), zap.Uint32("random", f.Random))
	log.Info("resuming the call recorded as in flight", zap.Bool("delivered", f.Delivered != nil))
	_, end, err := s.offsets.Bounds(s.taking)
	if err != nil {
		return nil, s.ended(err)
	}
	got, err := s.through(f.Last, end)
	if err != nil {
		return nil, err
	}
	decoded := true
	for _, r := range got {
		s.obs.Joined(r)
		decoded = decoded && r.Ev != nil
	}
	whole := &call.Call{Obs: s.obs, Members: got, Random: f.Random, Attempted: true, Log: log}
	if len(got) == 0 {
		return nil, nil
	}
	if d := f.Delivered; d != nil && decoded {
		whole.Res, whole.MsgSeq, whole.Attempts = call.Delivered, d.MsgSeq, d.Attempts
		whole.First, whole.At, whole.Final = d.FirstAttempt, d.Call, d.Final
		whole.Recorded = true // receipts are written, the delivery is on record
		return []*call.Call{whole}, nil
	}
	if decoded && got[0].Msg.Offset == first && got[len(got)-1].Msg.Offset == f.Last {
		body, random, err := s.w.build(got, true)
		if err == nil && random == f.Random {
			whole.Body = body
			return []*call.Call{whole}, nil
		}
	}
	log.Warn("the call recorded as in flight cannot be rebuilt byte for byte (records compacted away or changed); "+
		"sending its surviving records one by one: if the earlier call reached the server, these events may be shown twice",
		zap.Int("surviving_records", len(got)))
	calls := make([]*call.Call, len(got))
	for i, r := range got {
		calls[i] = s.lone(r)
		calls[i].Attempted = true
	}
	return calls, nil
}

// mergeMode is the configured way events share a call.
func (w *Worker) mergeMode() wire.MergeMode {
	if w.cfg.MergeEnvelope {
		return wire.MergeEnvelope
	}
	return wire.MergeNative
}

// build returns the request body and Random of a call for members: a lone
// event's own bytes, or the merge of several (validated as a message when
// validate is set; the bytes are the same either way).
func (w *Worker) build(members []*call.Record, validate bool) ([]byte, uint32, error) {
	if len(members) == 1 {
		return members[0].Ev.Body, members[0].Ev.Message.Random, nil
	}
	randoms := make([]uint32, len(members))
	parts := make([]wire.MergePart, len(members))
	for i, m := range members {
		randoms[i] = m.Ev.Message.Random
		parts[i] = wire.MergePart{Key: string(m.Msg.Key), Message: &m.Ev.Message}
	}
	msg, err := wire.Merge(w.mergeMode(), parts)
	if err != nil {
		return nil, 0, err
	}
	msg.Random = dedupe.BatchRandom(randoms)
	encode := msg.Encode
	if !validate {
		encode = func() ([]byte, error) { return sender.Marshal(msg) }
	}
	body, err := encode()
	if err != nil {
		return nil, 0, err
	}
	return body, msg.Random, nil
}
