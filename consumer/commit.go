package consumer

import (
	"cmp"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/call"
	"github.com/timbroadcast/timbroadcast/consumer/lows"
	"github.com/timbroadcast/timbroadcast/consumer/offsets"
	"github.com/timbroadcast/timbroadcast/consumer/sleep"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// committer is the one place that decides a partition's commit: the
// lowest offset any of its streams has not settled (or the router has not
// routed), with the calls the streams record in flight as its metadata.
// So a stream that waits (a paused app) holds the commit, never another
// stream: theirs go on, and what they settled above the commit is known
// again after a restart through the delivered log.
//
// Commits are coalesced: a settled call marks its stream's watermark for
// the delivered log and starts the committer's loop (run), which writes
// every stream's marked watermark in one request and then commits: at
// once, what settles meanwhile going into the next commit, or (with a
// Config.CommitInterval) when the partition's last commit is that old. No
// call waits for it. The delivered log is always written before the
// commit past it; a crash between an answer and its commit (a request or
// two, and the interval if set) resends within the server's dedupe
// window. A call recorded in flight commits at once (record), writing the
// marks first.
type committer struct {
	p *partition

	mu   sync.Mutex
	next int64 // the committed offset (-1: none yet)
	meta string
	// inflight are the calls streams recorded as in flight; slots bounds
	// them (wire.MaxInFlights) while several apps share the partition.
	inflight map[*stream]wire.AppInFlight
	slots    chan struct{}
	// marks are the watermarks streams settled and the delivered log has
	// not been given yet; ending are the members whose spans end at the
	// next commit.
	marks  map[*stream]mark
	ending []ending
	// err is why committing ended (the session ends): later commits fail
	// with it.
	err error
	// dirty says something settled since the last commit's start (last);
	// flushing that run is on its way to commit it.
	dirty, flushing bool
	last            time.Time
}

// mark is a stream's watermark for the delivered log: every record of the
// stream below next has its final outcome. Written before the commit past
// it when delivered is set (a delivery), else only while the commit stays
// below next (another app's record waits before them).
type mark struct {
	next      int64
	delivered bool
}

// ending is a call's members whose spans end at their commit.
type ending struct {
	obs     *call.Observer
	members []*call.Record
}

func newCommitter(p *partition, committed int64) *committer {
	return &committer{p: p, next: committed, inflight: map[*stream]wire.AppInFlight{}, slots: make(chan struct{}, wire.MaxInFlights),
		marks: map[*stream]mark{}}
}

// run commits what streams settle, at most once per
// Config.CommitInterval (at once when taking ended), until nothing more
// has settled: it runs only while there is something to commit, one at a
// time, among the session's goroutines (partition.running). A failed
// commit ends the session (partition.fail).
func (c *committer) run() {
	for {
		c.mu.Lock()
		if !c.dirty {
			c.flushing = false
			c.mu.Unlock()
			return
		}
		wait := time.Until(c.last.Add(c.p.w.cfg.CommitInterval))
		if c.err != nil {
			wait = 0 // what settled since ends its spans with the error
		}
		c.mu.Unlock()
		if wait > 0 {
			_ = sleep.For(c.p.taking, wait) // ended: what settled commits at once
		}
		c.flush()
	}
}

// flush writes the marks and commits as far as every stream allows; the
// spans of what it committed end.
func (c *committer) flush() {
	c.mu.Lock()
	c.dirty, c.last = false, time.Now()
	_, err := c.commitLocked(nil)
	if err != nil && c.err == nil {
		c.err = err
	}
	ended := c.ending
	c.ending = nil
	c.mu.Unlock()
	for _, e := range ended {
		e.obs.Committed(e.members, err)
	}
	if err != nil {
		c.p.fail(err)
	}
}

// dirtyLocked notes that something settled, starting run unless it is on
// its way.
func (c *committer) dirtyLocked() {
	c.dirty = true
	if !c.flushing {
		c.flushing = true
		c.p.running.Go(c.run)
	}
}

// advance makes the committer commit as far as every stream allows, for
// the router (positions without records).
func (c *committer) advance() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dirtyLocked()
}

func (c *committer) commitLocked(s *stream) (int64, error) {
	if c.err != nil {
		return c.next, c.err
	}
	p := c.p
	p.mu.Lock()
	next := min(p.routed, p.lows.Lowest())
	p.mu.Unlock()
	if err := c.writeMarksLocked(s, next); err != nil {
		return c.next, err
	}
	meta := c.metadata(next)
	if next == c.next && meta == c.meta {
		return c.next, nil
	}
	if err := p.commit(s, next, meta); err != nil {
		return c.next, err
	}
	c.next, c.meta = next, meta
	return next, nil
}

// writeMarksLocked gives the delivered log, in one write, the marks a
// commit at next needs (every delivery's, and those above next), so a
// restart knows them. A watermark keeps the call its stream recorded with an unknown outcome
// above it (recordUnknown). A refused write holds the committer (for s's
// log, when set).
func (c *committer) writeMarksLocked(s *stream, next int64) error {
	d := c.p.w.delivered
	if len(c.marks) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, 0, len(c.marks))
	es := make([]wire.Watermark, 0, len(c.marks))
	first := int64(-1)
	for ms, m := range c.marks {
		if !m.delivered && m.next <= next {
			continue
		}
		var pending *wire.Pending
		if old, ok := d.Entry(ms.app.Key, ms.tp.topic, ms.tp.partition); ok && old.Pending != nil && old.Pending.First >= m.next {
			pending = old.Pending
		}
		e := d.Watermark(ms.app.Key, ms.tp.topic, ms.tp.partition, ms.topicID, m.next, "", pending)
		es = append(es, e)
		msgs = append(msgs, d.Message(e))
		if first < 0 || m.next < first {
			first = m.next
		}
	}
	clear(c.marks)
	if len(msgs) == 0 {
		return nil
	}
	log := c.p.log
	if s != nil {
		log = s.log
	}
	// The committer's own hold: the stream's, if any, is its call's.
	if err := c.p.writeHeld(c.p.tp.committing(), log, "delivered log write", topicAppender{d.Appender(), d.Topic()}, first-1, msgs, nil, nil); err != nil {
		return err
	}
	for _, e := range es {
		d.Written(e)
	}
	return nil
}

// settled settles members of done, the stream s's records up to the last
// of them with their final outcome: s's mark moves past them (a delivery's
// for the delivered log, another outcome's for it only while the commit
// stays below), and the committer commits as far as every stream allows
// (run). Their spans end at the commit: an event's span runs from its
// fetch to its commit.
func (c *committer) settled(s *stream, done *call.Call, members []*call.Record) {
	p := c.p
	last := members[len(members)-1].Msg.Offset
	c.mu.Lock()
	c.clearLocked(s)
	s.settledTo = last + 1
	if s.app != nil && s.w.delivered != nil && done.Res != call.Already {
		m := c.marks[s]
		m.next = last + 1
		m.delivered = m.delivered || done.Res == call.Delivered
		c.marks[s] = m
		s.floor = max(s.floor, m.next)
	}
	p.mu.Lock()
	low, at := s.lowLocked()
	p.lows.Set(&s.place, low)
	p.mu.Unlock()
	for _, m := range members {
		if m.Span != nil {
			c.ending = append(c.ending, ending{done.Obs, members})
			break
		}
	}
	c.dirtyLocked()
	c.mu.Unlock()
	s.app.SetWaiting(s.w.metrics, s.obs.Label, s, at)
}

// lowLocked is the stream's first offset without an outcome, and that
// record's timestamp.
func (s *stream) lowLocked() (int64, time.Time) {
	for _, m := range s.open {
		if m.Msg.Offset >= s.settledTo {
			return m.Msg.Offset, m.Time()
		}
	}
	if c := s.cur; c != nil { // a merge call packed once its slot came
		for _, m := range c.Members {
			if m.Msg.Offset >= s.settledTo {
				return m.Msg.Offset, m.Time()
			}
		}
	}
	switch {
	case len(s.ahead) > 0:
		return s.ahead[0].Msg.Offset, s.ahead[0].Time()
	case len(s.queue) > 0:
		return s.queue[0].Msg.Offset, s.queue[0].Time()
	case s.gap >= 0:
		return s.gap, s.gapAt
	}
	return lows.None, time.Time{}
}

// record records s's call f in flight and commits it, waiting for room
// among the partition's calls in flight when several apps share it.
func (c *committer) record(s *stream, f wire.AppInFlight) error {
	c.mu.Lock()
	_, had := c.inflight[s]
	c.mu.Unlock()
	if !had && c.p.w.apps.Single == nil {
		select {
		case c.slots <- struct{}{}:
		case <-s.sending.Done():
			return s.abandoned()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight[s] = f
	_, err := c.commitLocked(s)
	return err
}

// clearLocked forgets s's call in flight (settled); the next commit drops
// it.
func (c *committer) clearLocked(s *stream) {
	if _, ok := c.inflight[s]; ok {
		delete(c.inflight, s)
		if c.p.w.apps.Single == nil {
			<-c.slots
		}
	}
}

// metadata is the commit's metadata at next: one app's call in flight
// as "tb1" (its first offset is next: everything before it is settled),
// several apps' as "tb2".
func (c *committer) metadata(next int64) string {
	if len(c.inflight) == 0 {
		return ""
	}
	if c.p.w.apps.Single != nil {
		for _, f := range c.inflight {
			if f.First == next {
				return f.InFlight.String()
			}
		}
		return ""
	}
	fs := make([]wire.AppInFlight, 0, len(c.inflight))
	for _, f := range c.inflight {
		fs = append(fs, f)
	}
	slices.SortFunc(fs, func(a, b wire.AppInFlight) int { return cmp.Compare(a.First, b.First) })
	return wire.InFlightsString(fs)
}

// commit commits next (with metadata) for the partition, holding s (nil:
// the partition) while the broker refuses: the refusal is logged (at
// error level with what to grant when an ACL refuses it), shows as the
// hold's failure (stuck in /readyz and the stuck metric after StuckAfter)
// and is retried with backoff. Only a lost generation ends the partition
// (offsets.ErrGenerationGone, then the member rejoins); a commit cut short by the
// end of sending returns errAbandoned (or why taking ended).
func (p *partition) commit(s *stream, next int64, metadata string) error {
	tp, log := p.tp.committing(), p.log
	if s != nil {
		tp, log = s.tp, s.log
	}
	failed := false
	err := p.offsets.Commit(p.sending, next, metadata, func(err error, attempt int) {
		if !failed {
			failed = true
			p.w.holds.Ensure(tp, next)
		}
		p.w.holds.Fail(tp, p.w.cfg.Now(), "offset commit refused: "+err.Error())
		fields := []zap.Field{zap.Int64("offset", next), zap.Int("attempt", attempt), zap.Error(err)}
		if hint := p.offsets.CommitHint(err); hint != "" {
			log.Error("offset commit refused; holding the partition and retrying (nothing moves on, nothing is sent twice): "+hint, fields...)
		} else {
			log.Warn("offset commit failed; holding the partition and retrying", fields...)
		}
	})
	switch {
	case err == nil:
		if failed {
			if s != nil {
				p.w.holds.Start(tp, next) // the stream's hold goes on, its failures over
			} else {
				p.w.holds.Done(tp)
			}
			log.Info("offset commit accepted again", zap.Int64("offset", next))
		}
		return nil
	case errors.Is(err, offsets.ErrGenerationGone):
		return err
	}
	return p.abandoned()
}
