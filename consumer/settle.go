package consumer

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/segmentio/kafka-go"
	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
	"github.com/timbroadcast/timbroadcast/consumer/schedule"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

// Settling: every call, plain, merged or resumed, goes one way, always in
// one order: the pause gate, a pacing slot, the send; then delivered,
// dead-lettered or split; the receipts; the commit. Spans, metrics, logs
// and receipts observe it at its named points (observe.go): an attempt, an
// outcome, a commit.

// result is how a call ended.
type result int

const (
	resultDelivered result = iota + 1
	resultInvalid          // a lone record that is not an event: never sent
	resultRejected         // the API rejected the call: *sender.Error in hand
	resultExpired          // a lone, never-sent event expired before its turn
	resultExhausted        // retried longer than RetryMaxElapsed: given up
	resultFiltered         // the mapping output nothing for it: never sent
	// resultUnknown: an attempt's outcome stayed unknown past the
	// server's dedupe window; resending could show it twice.
	resultUnknown
	// resultAlready: below the delivered log's watermark; never sent.
	resultAlready
	// resultRemoved: the apps file stopped naming the app before the call
	// was sent.
	resultRemoved
)

// call is one API call for one or more records (its members, in offset
// order), what the planner decided about it and, once settled, how it
// ended.
type call struct {
	// obs observes the call's life (observe.go).
	obs     *observer
	members []*record
	body    []byte
	random  uint32 // the call's Random
	log     *zap.Logger
	// attempted says an earlier attempt may have reached the server (a
	// resumed call): it is then never dead-lettered as expired.
	attempted bool
	// record says to record the call as in flight (committed-offset
	// metadata) before its first attempt.
	record bool
	// pack, if set, grows the call when its first slot comes (merge mode).
	pack func()
	// recorded says the delivery is already on record (a resumed call
	// recorded as delivered): only its receipts and commit remain.
	recorded bool
	// uncertain follows the call's attempts with an unknown outcome, from
	// this member's and, through the delivered log, an earlier owner's;
	// unknownChecked says the delivered log was asked, unknownRecorded
	// that this member recorded one there.
	uncertain                       sender.Uncertain
	unknownChecked, unknownRecorded bool

	res      result
	se       *sender.Error // for resultRejected and resultExhausted
	attempts int
	msgSeq   uint64
	// first is the first attempt's start, at the last attempt's start,
	// final the OK answer's arrival; zero without attempts.
	first, at, final time.Time
	// span is a merged call's own span, linked to its members'; nil for a
	// lone event (its attempts are children of the event's span).
	span trace.Span
}

// first and last are the offsets of the call's first and last records.
func (c *call) firstOffset() int64 { return c.members[0].msg.Offset }
func (c *call) lastOffset() int64  { return c.members[len(c.members)-1].msg.Offset }

// settle takes c to its final outcome and commits past its members. It
// returns an error only when the session must end: errRevoked, errStopping
// or errAbandoned (nothing of the call committed), or offsets.ErrGenerationGone.
func (s *stream) settle(c *call) error {
	if c.res == 0 {
		switch {
		case c.members[0].filtered:
			c.res = resultFiltered
		case c.members[0].ev == nil:
			c.res = resultInvalid
		default:
			if err := s.send(c); err != nil {
				return err
			}
		}
	}
	switch {
	case c.res == resultAlready:
		if err := s.alreadyDelivered(c); err != nil {
			return err
		}
		return s.commitPast(c, c.members...)
	case c.res == resultFiltered:
		if err := s.filtered(c); err != nil {
			return err
		}
		return s.commitPast(c, c.members...)
	case c.res == resultDelivered:
		if err := s.delivered(c); err != nil {
			return err
		}
		return s.commitPast(c, c.members...)
	case len(c.members) == 1 || c.res == resultExhausted || c.res == resultUnknown || c.res == resultRemoved:
		// A lone record invalid, rejected, expired or given up; or a
		// merged call given up as a whole or whose outcome is unknown
		// (sent one by one, its events would be shown again): each
		// member is dead-lettered.
		for _, m := range c.members {
			if err := s.deadLetter(c, m); err != nil {
				return err
			}
			if err := s.commitPast(c, m); err != nil {
				return err
			}
		}
		return nil
	}
	// A merged call the API rejects as a whole is split: each member is
	// sent alone (recorded in flight first), and only the ones rejected
	// alone are dead-lettered.
	c.log.Warn("merged call rejected; sending its events one by one to find the offending ones",
		zap.Int("code", c.se.Code), zap.String("info", c.se.Info))
	for _, m := range c.members {
		lc := s.lone(m)
		lc.record = true
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
func (s *stream) send(c *call) (err error) {
	w := s.w
	w.holds.Start(s.tp, c.firstOffset())
	defer func() {
		if c.span != nil {
			endCall(c.span, c, err)
		}
	}()
	// A retry inside a turn waits for a slot of the schedule, when it
	// keeps slots, and leaves at it.
	// turn is the call's current turn; the transport reports a request
	// written (Wrote) from its own goroutine.
	var turn atomic.Pointer[schedule.Turn]
	ctx := s.sending
	if s.app.sched.Paced() {
		ctx = sender.WithPacing(ctx, func(c context.Context) error {
			c, cancel := context.WithCancel(c)
			defer cancel()
			defer context.AfterFunc(s.taking, cancel)() // revoked: the next owner resends
			at, err := turn.Load().Retry(c)
			if err != nil {
				return err
			}
			return sleepCtx(c, w.untilTurn(at))
		})
	}
	ctx = sender.WithTrace(ctx, &sender.Trace{
		Leaving: func(at time.Time) { turn.Load().Left(w.onScheduleClock(at)) },
		Wrote:   func(at time.Time) { turn.Load().Left(w.onScheduleClock(at)) }, // a new connection's dial is not a period's
		Attempt: func(a sender.Attempt) {
			c.obs.attempt(c, a)
			s.answered(c, a)
		},
	})
	ctx = sender.WithUncertain(ctx, &c.uncertain)
	started := w.cfg.Now()
	mayBeDelivered := c.attempted // a failed attempt may still have reached the server
	for {
		if len(c.members) == 1 && !mayBeDelivered && s.expired(c.members[0].ev) {
			c.res = resultExpired
			return nil
		}
		if s.app.removed() {
			c.res = resultRemoved
			return nil
		}
		takeCtx, stopTake := s.app.whileServed(s.taking)
		t, err := s.app.sched.Take(takeCtx, s.tp.sched(), s.urgent)
		stopTake()
		if err != nil {
			if s.taking.Err() == nil && s.app.removed() { // while the call waited
				c.res = resultRemoved
				return nil
			}
			return s.ended(err)
		}
		turn.Store(t)
		if err := s.ready(c); err != nil {
			t.Released()
			return err
		}
		s.floor = w.delivered.Fresh(s.taking, s.appKey, s.tp.topic, s.tp.partition, s.topicID, c.members[0].msg.Time, w.cfg.Now(), s.floor)
		if c.lastOffset() < s.floor {
			// Delivered meanwhile by another deployment (the call waited
			// long, a pause say): not sent.
			t.Released()
			c.res = resultAlready
			return nil
		}
		if !c.unknownChecked {
			// An earlier owner's attempt whose outcome stayed unknown
			// counts: resend only while the server still dedupes it.
			c.unknownChecked = true
			if since := s.unknownSince(c); !since.IsZero() {
				c.uncertain.Mark(since)
				c.attempted, mayBeDelivered = true, true
				c.log.Info("an earlier attempt of this call had an unknown outcome (delivered log): resent only within the dedupe window",
					zap.Time("unknown_since", since))
			}
		}
		// Leave at the turn's time; later when another member's call left
		// late and its record moved the slot after it was handed over
		// (Recheck): a period after that call.
		var left time.Time
		for t.Leave.After(left) {
			left = t.Leave
			if err := sleepCtx(s.sending, w.untilTurn(t.Leave)); err != nil {
				t.Released()
				return s.abandoned()
			}
			t.Recheck()
		}
		var resp *sender.Response
		if ss, ok := s.app.sender().(SlotSender); ok {
			resp, err = ss.SendBodyReserved(ctx, c.body)
		} else {
			resp, err = s.app.sender().SendBody(ctx, c.body)
		}
		var se *sender.Error
		switch {
		case err == nil:
			c.attempts += resp.Attempts
			c.res, c.msgSeq, c.final = resultDelivered, resp.MsgSeq, w.cfg.Now()
			w.holds.Done(s.tp)
			if d := t.Sent(); d > 0 {
				c.log.Info("sending resumed", zap.Duration("paused_for", d))
			}
			return nil
		case !errors.As(err, &se):
			// Not the sender's error type: treat as transient.
			t.Released()
			c.log.Warn("send failed", zap.Error(err))
			mayBeDelivered = true
			if s.sending.Err() != nil || s.taking.Err() != nil {
				return s.abandoned()
			}
			continue
		}
		c.attempts += se.Attempts
		switch se.Class {
		case sender.ClassReject:
			t.Sent()
			c.res, c.se = resultRejected, se
			if se.Reason() == sender.ReasonOutcomeUnknown {
				c.res = resultUnknown
				c.log.Error("outcome unknown past the server's dedupe window: dead-lettering instead of resending (it may have been shown once)",
					zap.Time("unknown_since", se.UncertainSince), zap.Int("attempts", c.attempts))
			}
			return nil
		case sender.ClassPause:
			wait, started := t.Paused(se, se.RetryAfter)
			fields := []zap.Field{zap.Int("code", se.Code), zap.String("info", se.Info), zap.Duration("next_probe_in", wait)}
			if started {
				c.log.Error("sending paused: the API refuses every event this way; nothing is dead-lettered", fields...)
			} else if t.Probe() {
				c.log.Warn("still paused", fields...)
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
				c.log.Error("giving up: retried longer than TIM_RETRY_MAX_ELAPSED; dead-lettering", zap.Error(se),
					zap.Duration("retried_for", w.cfg.Now().Sub(started)))
				c.res, c.se = resultExhausted, se
				return nil
			}
			c.log.Warn("send still failing; holding the partition", zap.Error(se))
		}
	}
}

// answered follows an attempt of c for the call schedule (an answer,
// rate limited or not) and the delivered log (an unknown outcome, once).
func (s *stream) answered(c *call, a sender.Attempt) {
	if a.Code >= 0 {
		s.app.sched.Answered(sender.IsRateLimit(a.Code))
	}
	if a.Uncertain && !c.unknownRecorded {
		c.unknownRecorded = true
		s.recordUnknown(c, c.uncertain.Since())
	}
}

// ready finishes the call before its first attempt: packs a merge call and
// records the call as in flight, once each.
func (s *stream) ready(c *call) error {
	if c.pack != nil {
		c.pack()
		c.pack = nil
	}
	if c.record {
		c.record = false
		if err := s.recordInFlight(c, nil); err != nil {
			return err
		}
	}
	if c.span == nil && len(c.members) > 1 && s.w.tr != nil {
		c.span = s.w.tr.call(c.members, c.random)
		c.log = c.log.With(traceFields(c.span)...)
	}
	return nil
}

// delivered records the delivery of c's members: their outcome, the
// delivered log and, with a receipt topic, their receipts. Before writing
// them it records the delivery in the committed-offset metadata, so an
// owner that takes over after a crash writes the receipts instead of
// calling again.
func (s *stream) delivered(c *call) error {
	w := s.w
	if !c.recorded {
		c.obs.outcome(c, nil, nil)
		if w.receipts != nil {
			d := wire.Delivered{MsgSeq: c.msgSeq, Attempts: c.attempts, FirstAttempt: c.first, Call: c.at, Final: c.final}
			if err := s.recordInFlight(c, &d); err != nil {
				return err
			}
		}
	}
	// After the delivery's metadata (so an owner taking over after a crash
	// writes its receipts as delivered, not already_delivered), before the
	// commit.
	if err := s.recordDelivered(c); err != nil {
		return err
	}
	if w.receipts == nil {
		return nil
	}
	rs := make([]wire.Receipt, len(c.members))
	for i, m := range c.members {
		rs[i] = wire.ReceiptFor(m.msg, wire.OutcomeDelivered, c.final)
		rs[i].Random, rs[i].MsgSeq = m.ev.Message.Random, c.msgSeq
		rs[i].SetCall(c.random, len(c.members), c.attempts, c.first, c.at)
	}
	return s.writeReceipts(c.log, c.members, rs)
}

// alreadyDelivered records the members of c, below the delivered log's
// watermark: their outcome (metric, one log line, Config.OnOutcome) and,
// with a receipt topic, their receipts. They are never sent.
func (s *stream) alreadyDelivered(c *call) error {
	w := s.w
	c.obs.already(c, s.floor)
	if w.receipts == nil {
		return nil
	}
	now := w.cfg.Now()
	rs := make([]wire.Receipt, len(c.members))
	for i, m := range c.members {
		rs[i] = wire.ReceiptFor(m.msg, wire.OutcomeAlreadyDelivered, now)
		if m.ev != nil {
			rs[i].Random = m.ev.Message.Random
		}
	}
	return s.writeReceipts(c.log, c.members, rs)
}

// filtered records the lone record of c that the mapping filtered out:
// its outcome and, with a receipt topic, its receipt.
func (s *stream) filtered(c *call) error {
	m := c.members[0]
	c.obs.outcome(c, m, nil)
	if s.w.receipts == nil {
		return nil
	}
	r := wire.ReceiptFor(m.msg, wire.OutcomeFiltered, s.w.cfg.Now())
	return s.writeReceipts(c.log, c.members, []wire.Receipt{r})
}

// failure is the dead-letter failure of member m of c: not an event,
// expired before its turn, rejected by the API, or given up.
func (c *call) failure(m *record) wire.Failure {
	switch c.res {
	case resultInvalid:
		ie := m.invalid
		return wire.Failure{Reason: ie.Reason, Code: ie.Code, Info: ie.Msg, Field: ie.Field}
	case resultExpired:
		if m.aged {
			return wire.Failure{Reason: wire.ReasonExpired, Random: m.ev.Message.Random, Field: "TIM_MAX_AGE",
				Info: "event older than TIM_MAX_AGE by its record timestamp " + m.msg.Time.UTC().Format(time.RFC3339) +
					" when its turn came (" + m.ev.ExpiresAt.UTC().Format(time.RFC3339) + ")"}
		}
		return wire.Failure{Reason: wire.ReasonExpired, Random: m.ev.Message.Random,
			Info: "event expired at " + m.ev.ExpiresAt.UTC().Format(time.RFC3339) + " before its turn came"}
	case resultRemoved:
		f := wire.Failure{Reason: wire.ReasonUnknownApp, Field: "TIM_APPS_FILE",
			Info: "app " + wire.Printable(c.obs.label) + " was removed from the apps file before this event was sent"}
		if m.ev != nil {
			f.Random = m.ev.Message.Random
		}
		return f
	case resultUnknown:
		return wire.Failure{Reason: sender.ReasonOutcomeUnknown, Class: sender.ClassReject.String(), Code: c.se.Code,
			Info: c.se.Info, Attempts: c.attempts, Random: m.ev.Message.Random}
	case resultExhausted:
		return wire.Failure{Reason: sender.ReasonRetryExhausted, Class: sender.ClassRetry.String(), Code: c.se.Code,
			Info:     "gave up retrying after TIM_RETRY_MAX_ELAPSED (an attempt may have been delivered): " + c.se.Info,
			Attempts: c.attempts, Random: m.ev.Message.Random}
	}
	return wire.Failure{Reason: c.se.Reason(), Code: c.se.Code, Info: c.se.Info, Field: c.se.Field, Attempts: c.attempts,
		Random: m.ev.Message.Random}
}

// recordInFlight records c in flight (delivered, when d is set) in the
// partition's committed-offset metadata (committer.record).
func (s *stream) recordInFlight(c *call, d *wire.Delivered) error {
	f := wire.AppInFlight{First: c.firstOffset(), InFlight: wire.InFlight{Last: c.lastOffset(), Random: c.random, Delivered: d}}
	if s.app != nil {
		f.App = s.app.SDKAppID
	}
	return s.commits.record(s, f)
}

// recordDelivered records in the delivered log that every record up to
// c's last member has its outcome, before c is committed: written and
// acknowledged, or the partition holds.
func (s *stream) recordDelivered(c *call) error {
	d := s.w.delivered
	if d == nil || s.app == nil {
		return nil
	}
	e := d.Watermark(s.app.key, s.tp.topic, s.tp.partition, s.topicID, c.lastOffset()+1, "", nil)
	if err := s.writeHeld(c.log, "delivered log write", topicAppender{d.Appender(), d.Topic()}, c.firstOffset(), []kafka.Message{d.Message(e)}, nil, nil); err != nil {
		return err
	}
	d.Written(e)
	s.floor = max(s.floor, e.Next)
	return nil
}

// recordUnknown records in the delivered log that c's first attempt with
// an unknown outcome started at since, so whoever sends c next (this
// member after a restart, another after a crash, a new group) resends it
// only while the server still dedupes it. Best effort: a failed write is
// logged, and the call goes on.
func (s *stream) recordUnknown(c *call, since time.Time) {
	d := s.w.delivered
	if d == nil || s.app == nil {
		return
	}
	pending := &wire.Pending{First: c.firstOffset(), Last: c.lastOffset(), Random: c.random, UnknownSince: since.UnixMilli()}
	next := c.firstOffset()
	if e, ok := d.Entry(s.app.key, s.tp.topic, s.tp.partition); ok {
		next = e.Next
	}
	if err := d.Write(s.sending, d.Watermark(s.app.key, s.tp.topic, s.tp.partition, s.topicID, next, "", pending)); err != nil {
		c.log.Warn("cannot record the unknown outcome in the delivered log: after a crash the next owner resends the call "+
			"even past the dedupe window", zap.Error(err))
	}
}

// unknownSince returns when a call recorded as pending in the delivered
// log (same first offset, same Random) first had an unknown outcome; zero
// for none.
func (s *stream) unknownSince(c *call) time.Time {
	d := s.w.delivered
	if d == nil || s.app == nil {
		return time.Time{}
	}
	e, ok := d.Entry(s.app.key, s.tp.topic, s.tp.partition)
	if !ok || e.Pending == nil || e.Pending.First != c.firstOffset() || e.Pending.Random != c.random {
		return time.Time{}
	}
	return time.UnixMilli(e.Pending.UnknownSince)
}

// commitPast settles members of c (the stream's records up to the last
// of them): their bytes go back to the budget, and the committer commits
// past them as far as every stream allows (committer.settled).
func (s *stream) commitPast(c *call, members ...*record) error {
	for _, m := range members {
		s.held.Release(m.msg.Offset)
	}
	return s.commits.settled(s, c, members)
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
	w, ctx := s.w, s.sending
	endSpans := func(err error) {
		for _, s := range spans {
			end(s, err)
		}
	}
	w.holds.Ensure(s.tp, offset)
	for attempt := 1; ; attempt++ {
		err := out.WriteMessages(ctx, msgs...)
		switch {
		case err == nil:
			endSpans(nil)
			w.holds.Done(s.tp)
			return nil
		case ctx.Err() != nil:
			endSpans(err)
			return s.abandoned()
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
		w.holds.Fail(s.tp, w.cfg.Now(), what+": "+err.Error())
		log.Error(what+" failed; retrying (the offset is committed only after it succeeds)",
			zap.Int("attempt", attempt), zap.String("topic", out.topicName()), zap.Error(err))
		if sleepCtx(ctx, min(time.Duration(attempt)*200*time.Millisecond, 5*time.Second)) != nil {
			endSpans(err)
			return s.abandoned()
		}
	}
}
