package consumer

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/apps"
	"github.com/timbroadcast/timbroadcast/consumer/call"
	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
	"github.com/timbroadcast/timbroadcast/consumer/schedule"
	"github.com/timbroadcast/timbroadcast/consumer/sleep"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

// Settling: every call, plain, merged or resumed, goes one way, always in
// one order: the pause gate, a pacing slot, the send; then delivered,
// dead-lettered or split; the receipts; the commit. Spans, metrics, logs
// and receipts observe it at its named points (observe.go): an attempt, an
// outcome, a commit.

// settle takes c to its final outcome and commits past its members. It
// returns an error only when the session must end: errRevoked, errStopping
// or errAbandoned (nothing of the call committed), or offsets.ErrGenerationGone.
func (s *stream) settle(c *call.Call) error {
	if c.Res == 0 {
		switch {
		case c.Members[0].Filtered:
			c.Res = call.Filtered
		case c.Members[0].Ev == nil:
			c.Res = call.Invalid
		default:
			if err := s.send(c); err != nil {
				return err
			}
		}
	}
	switch {
	case c.Res == call.Already:
		if err := s.alreadyDelivered(c); err != nil {
			return err
		}
		s.commitPast(c, c.Members...)
		return nil
	case c.Res == call.Filtered:
		if err := s.filtered(c); err != nil {
			return err
		}
		s.commitPast(c, c.Members...)
		return nil
	case c.Res == call.Delivered:
		if err := s.delivered(c); err != nil {
			return err
		}
		s.commitPast(c, c.Members...)
		return nil
	case len(c.Members) == 1 || c.Res == call.Exhausted || c.Res == call.Unknown || c.Res == call.Removed:
		// A lone record invalid, rejected, expired or given up; or a
		// merged call given up as a whole or whose outcome is unknown
		// (sent one by one, its events would be shown again): each
		// member is dead-lettered.
		for _, m := range c.Members {
			if err := s.deadLetter(c, m); err != nil {
				return err
			}
			s.commitPast(c, m)
		}
		return nil
	}
	// A merged call the API rejects as a whole is split: each member is
	// sent alone (recorded in flight first), and only the ones rejected
	// alone are dead-lettered.
	c.Log.Warn("merged call rejected; sending its events one by one to find the offending ones",
		zap.Int("code", c.Err.Code), zap.String("info", c.Err.Info))
	for _, m := range c.Members {
		lc := s.lone(m)
		lc.InFlight = true
		if err := s.settle(lc); err != nil {
			return err
		}
	}
	return nil
}

// send makes the call's attempts until the API answers OK or rejects it,
// holding through retries and pauses; c.res says how it ended. Each round
// takes its turn (the gate, then a slot), so no attempt leaves off the
// schedule or during a pause. It returns an error when the session must
// end first.
func (s *stream) send(c *call.Call) (err error) {
	w := s.w
	w.holds.Start(s.tp, c.FirstOffset())
	defer func() {
		if c.Span != nil {
			call.EndCall(c.Span, c, err)
		}
	}()
	// A retry inside a turn waits for a slot of the schedule, when it
	// keeps slots, and leaves at it.
	// turn is the call's current turn; the transport reports a request
	// written (Wrote) from its own goroutine.
	var turn atomic.Pointer[schedule.Turn]
	ctx := s.sending
	if s.app.Sched.Paced() {
		ctx = sender.WithPacing(ctx, func(c context.Context) error {
			c, cancel := context.WithCancel(c)
			defer cancel()
			defer context.AfterFunc(s.taking, cancel)() // revoked: the next owner resends
			return turn.Load().RetryWait(c)
		})
	}
	ctx = sender.WithTrace(ctx, &sender.Trace{
		Leaving: func(at time.Time) { turn.Load().Departed(at) },
		Wrote:   func(at time.Time) { turn.Load().Departed(at) }, // a new connection's dial is not a period's
		Attempt: func(a sender.Attempt) {
			c.Obs.Attempt(c, a)
			s.answered(c, a)
		},
	})
	ctx = sender.WithUncertain(ctx, &c.Uncertain)
	started := w.cfg.Now()
	mayBeDelivered := c.Attempted // a failed attempt may still have reached the server
	for {
		if len(c.Members) == 1 && !mayBeDelivered && c.Members[0].Ev.Expired(w.cfg.Now()) {
			c.Res = call.Expired
			return nil
		}
		if s.app.Removed() {
			c.Res = call.Removed
			return nil
		}
		takeCtx, stopTake := s.app.WhileServed(s.taking)
		take := s.app.Sched.Take
		if s.packed(c) {
			take = s.app.Sched.TakePacked // granted when it may leave
		}
		t, err := take(takeCtx, s.part, s.urgent)
		stopTake()
		if err != nil {
			if s.taking.Err() == nil && s.app.Removed() { // while the call waited
				c.Res = call.Removed
				return nil
			}
			return s.ended(err)
		}
		turn.Store(t)
		if err := s.ready(c); err != nil {
			t.Released()
			return err
		}
		s.floor = w.delivered.Fresh(s.taking, s.app.DeliveredKey(), s.tp.topic, s.tp.partition, s.topicID, c.Members[0].Msg.Time, w.cfg.Now(), s.floor)
		if c.LastOffset() < s.floor {
			// Delivered meanwhile by another deployment (the call waited
			// long, a pause say): not sent.
			t.Released()
			c.Res = call.Already
			return nil
		}
		if !c.UnknownChecked {
			// An earlier owner's attempt whose outcome stayed unknown
			// counts: resend only while the server still dedupes it.
			c.UnknownChecked = true
			if since := s.unknownSince(c); !since.IsZero() {
				c.Uncertain.Mark(since)
				c.Attempted, mayBeDelivered = true, true
				c.Log.Info("an earlier attempt of this call had an unknown outcome (delivered log): resent only within the dedupe window",
					zap.Time("unknown_since", since))
			}
		}
		// Leave at the turn's time; later when another member's call left
		// late and its record moved the slot after it was handed over.
		if err := t.Wait(s.sending); err != nil {
			t.Released()
			return s.abandoned()
		}
		var resp *sender.Response
		if ss, ok := s.app.Current().(apps.SlotSender); ok {
			resp, err = ss.SendBodyReserved(ctx, c.Body)
		} else {
			resp, err = s.app.Current().SendBody(ctx, c.Body)
		}
		var se *sender.Error
		switch {
		case err == nil:
			c.Attempts += resp.Attempts
			c.Res, c.MsgSeq, c.Final = call.Delivered, resp.MsgSeq, w.cfg.Now()
			w.holds.Done(s.tp)
			if d := t.Sent(); d > 0 {
				c.Log.Info("sending resumed", zap.Duration("paused_for", d))
			}
			return nil
		case !errors.As(err, &se):
			// Not the sender's error type: treat as transient.
			t.Released()
			c.Log.Warn("send failed", zap.Error(err))
			mayBeDelivered = true
			if s.sending.Err() != nil || s.taking.Err() != nil {
				return s.abandoned()
			}
			continue
		}
		c.Attempts += se.Attempts
		switch se.Class {
		case sender.ClassReject:
			t.Sent()
			c.Res, c.Err = call.Rejected, se
			if se.Reason() == sender.ReasonOutcomeUnknown {
				c.Res = call.Unknown
				c.Log.Error("outcome unknown past the server's dedupe window: dead-lettering instead of resending (it may have been shown once)",
					zap.Time("unknown_since", se.UncertainSince), zap.Int("attempts", c.Attempts))
			}
			return nil
		case sender.ClassPause:
			wait, started := t.Paused(se, se.RetryAfter)
			fields := []zap.Field{zap.Int("code", se.Code), zap.String("info", se.Info), zap.Duration("next_probe_in", wait)}
			if started {
				c.Log.Error("sending paused: the API refuses every event this way; nothing is dead-lettered", fields...)
			} else if t.Probe() {
				c.Log.Warn("still paused", fields...)
			}
		default: // ClassRetry: the retry budget or ctx ran out; hold the record.
			mayBeDelivered = true
			// An answer other than a pause clears a probe; a probe cut short
			// by the context (revoked, stopping) proves nothing.
			if ctx.Err() == nil && se.Attempts > 0 {
				t.Sent()
			} else {
				t.Released()
			}
			if ctx.Err() != nil || s.taking.Err() != nil {
				// Stopping, or revoked: no more slots for this partition; the
				// next owner resends the call with the same bytes.
				return s.abandoned()
			}
			if w.cfg.RetryMaxElapsed > 0 && w.cfg.Now().Sub(started) >= w.cfg.RetryMaxElapsed {
				c.Log.Error("giving up: retried longer than TIM_RETRY_MAX_ELAPSED; dead-lettering", zap.Error(se),
					zap.Duration("retried_for", w.cfg.Now().Sub(started)))
				c.Res, c.Err = call.Exhausted, se
				return nil
			}
			c.Log.Warn("send still failing; holding the partition", zap.Error(se))
		}
	}
}

// answered follows an attempt of c for the call schedule (an answer,
// rate limited or not) and the delivered log (an unknown outcome, once).
func (s *stream) answered(c *call.Call, a sender.Attempt) {
	if a.Code >= 0 {
		s.app.Sched.Answered(sender.IsRateLimit(a.Code))
	}
	if a.Uncertain && !c.UnknownRecorded {
		c.UnknownRecorded = true
		s.recordUnknown(c, c.Uncertain.Since())
	}
}

// packed reports whether nothing stands between c's slot and its
// request: ready has nothing to do, and the delivered log is not read
// again for it (Fresh).
func (s *stream) packed(c *call.Call) bool {
	return c.Pack == nil && !c.InFlight && !s.w.delivered.MayRead(s.app.DeliveredKey(), c.Members[0].Msg.Time, s.w.cfg.Now())
}

// ready finishes the call before its first attempt: packs a merge call and
// records the call as in flight, once each.
func (s *stream) ready(c *call.Call) error {
	if c.Pack != nil {
		c.Pack()
		c.Pack = nil
	}
	if c.InFlight {
		c.InFlight = false
		if err := s.recordInFlight(c, nil); err != nil {
			return err
		}
	}
	if c.Span == nil && len(c.Members) > 1 && s.w.tr.On() {
		c.Span = s.w.tr.Call(c.Members, c.Random)
		c.Log = c.Log.WithLazy(call.TraceFields(c.Span)...)
	}
	return nil
}

// delivered records the delivery of c's members: their outcome, the
// delivered log and, with a receipt topic, their receipts. Before writing
// them it records the delivery in the committed-offset metadata, so an
// owner that takes over after a crash writes the receipts instead of
// calling again.
func (s *stream) delivered(c *call.Call) error {
	w := s.w
	if !c.Recorded {
		c.Obs.Outcome(c, nil, nil)
		if w.receipts != nil {
			d := wire.Delivered{MsgSeq: c.MsgSeq, Attempts: c.Attempts, FirstAttempt: c.First, Call: c.At, Final: c.Final}
			if err := s.recordInFlight(c, &d); err != nil {
				return err
			}
		}
	}
	if w.receipts == nil {
		return nil
	}
	rs := make([]wire.Receipt, len(c.Members))
	for i, m := range c.Members {
		rs[i] = wire.ReceiptFor(m.Msg, wire.OutcomeDelivered, c.Final)
		rs[i].Random, rs[i].MsgSeq = m.Ev.Message.Random, c.MsgSeq
		rs[i].SetCall(c.Random, len(c.Members), c.Attempts, c.First, c.At)
	}
	return s.writeReceipts(c.Log, c.Members, rs)
}

// alreadyDelivered records the members of c, below the delivered log's
// watermark: their outcome (metric, one log line, Config.OnOutcome) and,
// with a receipt topic, their receipts. They are never sent.
func (s *stream) alreadyDelivered(c *call.Call) error {
	w := s.w
	c.Obs.Already(c, s.floor)
	if w.receipts == nil {
		return nil
	}
	now := w.cfg.Now()
	rs := make([]wire.Receipt, len(c.Members))
	for i, m := range c.Members {
		rs[i] = wire.ReceiptFor(m.Msg, wire.OutcomeAlreadyDelivered, now)
		if m.Ev != nil {
			rs[i].Random = m.Ev.Message.Random
		}
	}
	return s.writeReceipts(c.Log, c.Members, rs)
}

// filtered records the lone record of c that the mapping filtered out:
// its outcome and, with a receipt topic, its receipt.
func (s *stream) filtered(c *call.Call) error {
	m := c.Members[0]
	c.Obs.Outcome(c, m, nil)
	if s.w.receipts == nil {
		return nil
	}
	r := wire.ReceiptFor(m.Msg, wire.OutcomeFiltered, s.w.cfg.Now())
	return s.writeReceipts(c.Log, c.Members, []wire.Receipt{r})
}

// recordInFlight records c in flight (delivered, when d is set) in the
// partition's committed-offset metadata (committer.record).
func (s *stream) recordInFlight(c *call.Call, d *wire.Delivered) error {
	f := wire.AppInFlight{First: c.FirstOffset(), InFlight: wire.InFlight{Last: c.LastOffset(), Random: c.Random, Delivered: d}}
	if s.app != nil {
		f.App = s.app.SDKAppID
	}
	return s.commits.record(s, f)
}

// recordUnknown records in the delivered log that c's first attempt with
// an unknown outcome started at since, so whoever sends c next (this
// member after a restart, another after a crash, a new group) resends it
// only while the server still dedupes it. Best effort: a failed write is
// logged, and the call goes on.
func (s *stream) recordUnknown(c *call.Call, since time.Time) {
	d := s.w.delivered
	if d == nil || s.app == nil {
		return
	}
	pending := &wire.Pending{First: c.FirstOffset(), Last: c.LastOffset(), Random: c.Random, UnknownSince: since.UnixMilli()}
	// Under the committer's lock: its next write of the stream's mark
	// keeps this pending call (writeMarksLocked).
	s.commits.mu.Lock()
	defer s.commits.mu.Unlock()
	next := c.FirstOffset()
	if e, ok := d.Entry(s.app.Key, s.tp.topic, s.tp.partition); ok {
		next = e.Next
	}
	if m, ok := s.commits.marks[s]; ok && m.delivered {
		next = max(next, m.next)
	}
	if err := d.Write(s.sending, d.Watermark(s.app.Key, s.tp.topic, s.tp.partition, s.topicID, next, "", pending)); err != nil {
		c.Log.Warn("cannot record the unknown outcome in the delivered log: after a crash the next owner resends the call "+
			"even past the dedupe window", zap.Error(err))
	}
}

// unknownSince returns when a call recorded as pending in the delivered
// log (same first offset, same Random) first had an unknown outcome; zero
// for none.
func (s *stream) unknownSince(c *call.Call) time.Time {
	d := s.w.delivered
	if d == nil || s.app == nil {
		return time.Time{}
	}
	e, ok := d.Entry(s.app.Key, s.tp.topic, s.tp.partition)
	if !ok || e.Pending == nil || e.Pending.First != c.FirstOffset() || e.Pending.Random != c.Random {
		return time.Time{}
	}
	return time.UnixMilli(e.Pending.UnknownSince)
}

// commitPast settles members of c (the stream's records up to the last
// of them): their bytes go back to the budget, and the committer commits
// past them as far as every stream allows (committer.settled), after the
// delivered log knows them.
func (s *stream) commitPast(c *call.Call, members ...*call.Record) {
	for _, m := range members {
		s.held.Release(m.Msg.Offset)
	}
	s.commits.settled(s, c, members)
}

// The one way the worker writes to Kafka before a commit (dead letters,
// receipts, the delivered log): acknowledged by all in-sync replicas,
// retried while the partition holds.

// writer is where writeHeld writes: a topic's kafka.Writer (dead letters,
// receipts) or the delivered log's appender.
type writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
	topicName() string
}

// topicWriter is a kafka.Writer as a writer.
type topicWriter struct{ *kafka.Writer }

func (w topicWriter) topicName() string { return w.Topic }

// topicAppender is an appender as a writer.
type topicAppender struct {
	*kafkaconn.Appender
	topic string
}

func (a topicAppender) topicName() string { return a.topic }

// writeHeld writes msgs with out and waits for the acknowledgement of all
// in-sync replicas. A refused write is retried with a capped backoff while
// the partition holds offset (it shows as stuck after StuckAfter, the
// hold's error starting with what); refused, if set, sees each refusal
// first and may return the records to write instead, at once. spans (nil
// ones included) record the refusals and end with the outcome. It returns
// errAbandoned (or why taking ended) if sending ended first.
func (s *stream) writeHeld(log *zap.Logger, what string, out writer, offset int64, msgs []kafka.Message,
	spans []trace.Span, refused func(error) []kafka.Message) error {
	return s.partition.writeHeld(s.tp, log, what, out, offset, msgs, spans, refused)
}

// writeHeld is stream.writeHeld for tp (a stream's, or the partition's).
func (p *partition) writeHeld(tp topicPartition, log *zap.Logger, what string, out writer, offset int64, msgs []kafka.Message,
	spans []trace.Span, refused func(error) []kafka.Message) error {
	w, ctx := p.w, p.sending
	endSpans := func(err error) {
		for _, s := range spans {
			call.End(s, err)
		}
	}
	w.holds.Ensure(tp, offset)
	for attempt := 1; ; attempt++ {
		err := out.WriteMessages(ctx, msgs...)
		switch {
		case err == nil:
			endSpans(nil)
			w.holds.Done(tp)
			return nil
		case ctx.Err() != nil:
			endSpans(err)
			return p.abandoned()
		}
		for _, s := range spans {
			if s != nil {
				s.RecordError(err)
			}
		}
		if refused != nil {
			if again := refused(err); again != nil {
				msgs = again
				continue
			}
		}
		w.holds.Fail(tp, w.cfg.Now(), what+": "+err.Error())
		log.Error(what+" failed; retrying (the offset is committed only after it succeeds)",
			zap.Int("attempt", attempt), zap.String("topic", out.topicName()), zap.Error(err))
		if sleep.For(ctx, min(time.Duration(attempt)*200*time.Millisecond, 5*time.Second)) != nil {
			endSpans(err)
			return p.abandoned()
		}
	}
}
