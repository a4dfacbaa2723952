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
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// committer is the one place that decides a partition's commit: the
// lowest offset any of its streams has not settled (or the router has not
// routed), with the calls the streams record in flight as its metadata.
// So a stream that waits (a paused app) holds the commit, never another
// stream: theirs go on, and what they settled above the commit is known
// again after a restart through the delivered log.
type committer struct {
	p *partition

	mu   sync.Mutex
	next int64 // the committed offset (-1: none yet)
	meta string
	// inflight are the calls streams recorded as in flight; slots bounds
	// them (wire.MaxInFlights) while several apps share the partition.
	inflight map[*stream]wire.AppInFlight
	slots    chan struct{}
}

func newCommitter(p *partition, committed int64) *committer {
	return &committer{p: p, next: committed, inflight: map[*stream]wire.AppInFlight{}, slots: make(chan struct{}, wire.MaxInFlights)}
}

// advance commits as far as every stream allows, for s (nil: the
// router): the commit's refusals hold s. It returns the committed offset.
func (c *committer) advance(s *stream) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.commitLocked(s)
}

func (c *committer) commitLocked(s *stream) (int64, error) {
	p := c.p
	p.mu.Lock()
	next := min(p.routed, p.lows.Lowest())
	p.mu.Unlock()
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

// settled commits past members of done, the stream s's records up to the
// last of them with their final outcome: the partition commits as far as
// every stream allows. When the commit stays below them (another app's
// record waits before them) and done did not deliver them (a delivery is on
// record already), the delivered log records them too, so a restart
// knows them. Their spans end: an event's span runs from its fetch to its
// commit.
func (c *committer) settled(s *stream, done *call.Call, members []*call.Record) error {
	c.clear(s)
	p := c.p
	last := members[len(members)-1].Msg.Offset
	s.settledTo = last + 1
	p.mu.Lock()
	low, at := s.lowLocked()
	p.lows.Set(&s.place, low)
	p.mu.Unlock()
	s.app.SetWaiting(s.w.metrics, s.obs.Label, s, at)
	committed, err := c.advance(s)
	if err == nil && committed <= last && done.Res != call.Delivered && done.Res != call.Already {
		err = s.recordSettled(last)
	}
	done.Obs.Committed(members, err)
	return err
}

// recordSettled records in the delivered log that every record of the
// stream's app up to offset last has its final outcome (several apps: the
// commit waits below them for another app's record).
func (s *stream) recordSettled(last int64) error {
	d := s.w.delivered
	if d == nil || s.app == nil {
		return nil
	}
	e := d.Watermark(s.app.Key, s.tp.topic, s.tp.partition, s.topicID, last+1, "", nil)
	if err := s.writeHeld(s.log, "delivered log write", topicAppender{d.Appender(), d.Topic()}, last, []kafka.Message{d.Message(e)}, nil, nil); err != nil {
		return err
	}
	d.Written(e)
	s.floor = max(s.floor, e.Next)
	return nil
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

// clear forgets s's call in flight (settled); the next commit drops it.
func (c *committer) clear(s *stream) {
	c.mu.Lock()
	defer c.mu.Unlock()
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
	tp, log := p.tp, p.log
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
			p.w.holds.Start(tp, next) // the hold goes on, its failures over
			log.Info("offset commit accepted again", zap.Int64("offset", next))
		}
		return nil
	case errors.Is(err, offsets.ErrGenerationGone):
		return err
	}
	return p.abandoned()
}
