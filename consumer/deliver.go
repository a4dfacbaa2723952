package consumer

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

// member is one record of a call: the record, its decoded event, when it
// was fetched and its span (nil without tracing).
type member struct {
	msg  kafka.Message
	ev   *wire.Event
	at   time.Time
	span trace.Span
}

// result is how a call for one or more members ended.
type result int

const (
	resultDelivered result = iota + 1
	resultRejected         // the API rejected the call: *sender.Error in hand
	resultExpired          // a lone, never-sent event expired before its turn
	resultExhausted        // retried longer than RetryMaxElapsed: given up
	resultAbandoned        // sendCtx ended first; nothing committed
)

// call is how a call for one or more members ended, and what its receipts
// and spans tell.
type call struct {
	res      result
	se       *sender.Error // for resultRejected and resultExhausted
	random   uint32        // the call's Random
	events   int           // members sharing the call
	attempts int
	msgSeq   uint64
	// first is the first attempt's start, at the last attempt's start,
	// final the OK answer's arrival; zero without attempts.
	first, at, final time.Time
}

// decode turns a record into an event (the failure is an
// *wire.InvalidEventError).
func decode(m kafka.Message) (*wire.Event, error) { return wire.DecodeEvent(wire.RecordOf(m)) }

// handle takes one record alone to its final outcome, given what decode
// made of it: delivered or dead-lettered, with its receipt written. It
// returns errStopped when the send context ended first (the record stays
// uncommitted). attempted says an earlier attempt may have reached the
// server.
func (p *partition) handle(mb member, derr error, attempted bool) error {
	log := p.memberLog(mb)
	if derr != nil {
		var ie *wire.InvalidEventError
		errors.As(derr, &ie)
		return p.deadLetter(log, mb, wire.Failure{Reason: ie.Reason, Code: ie.Code, Info: ie.Msg, Field: ie.Field}, call{})
	}
	c := p.deliver(log, []member{mb}, mb.ev.Body, mb.ev.Message.Random, false, attempted)
	switch c.res {
	case resultDelivered:
		return p.delivered(log, []member{mb}, c)
	case resultExpired, resultRejected, resultExhausted:
		return p.deadLetter(log, mb, loneFailure(c, mb.ev), c)
	}
	return errStopped
}

// deliver sends body (the call for members, whose Random is random) until
// the API answers OK or rejects it, holding through retries and pauses.
// reserved says the first attempt already holds a pacing slot; attempted
// that an earlier attempt may have reached the server.
func (p *partition) deliver(log *zap.Logger, members []member, body []byte, random uint32, reserved, attempted bool) (c call) {
	w := p.w
	c = call{random: random, events: len(members)}
	w.holds.start(p.tp, members[0].msg.Offset)
	parent := members[0].span
	if len(members) > 1 && w.tr != nil {
		parent = w.tr.call(members, random)
		log = log.With(traceFields(parent)...)
		defer func() { endCall(parent, c) }()
	}
	ctx := sender.WithTrace(p.pacing(p.sendCtx), &sender.Trace{Attempt: func(a sender.Attempt) {
		if c.first.IsZero() {
			c.first = a.Start
		}
		c.at = a.Start
		w.tr.attempt(parent, a, random)
		if a.Code != sender.CodeOK {
			w.holds.fail(p.tp, a.Start, attemptError(a))
		}
		if w.sched != nil && a.Code >= 0 {
			w.sched.answered(sender.IsRateLimit(a.Code))
		}
	}})
	started := w.cfg.Now()
	mayBeDelivered := attempted // a failed attempt may still have reached the server
	lone := members[0].ev
	for {
		if len(members) == 1 && p.expired(lone) && !mayBeDelivered {
			c.res = resultExpired
			return c
		}
		probe, err := w.gate.acquire(ctx)
		if err != nil {
			c.res = resultAbandoned
			return c
		}
		var resp *sender.Response
		if ss, ok := w.send.(SlotSender); ok && reserved {
			reserved = false
			resp, err = ss.SendBodyReserved(ctx, body)
		} else {
			resp, err = w.send.SendBody(ctx, body)
		}
		var se *sender.Error
		switch {
		case err == nil:
			c.attempts += resp.Attempts
			c.res, c.msgSeq, c.final = resultDelivered, resp.MsgSeq, w.cfg.Now()
			w.holds.done(p.tp)
			if probe {
				if d := w.gate.probeDone(true); d > 0 {
					log.Info("sending resumed", zap.Duration("paused_for", d))
				}
			}
			return c
		case !errors.As(err, &se):
			// Not the sender's error type: treat as transient.
			if probe {
				w.gate.probeDone(false)
			}
			log.Warn("send failed", zap.Error(err))
			if ctx.Err() != nil || p.fetchCtx.Err() != nil {
				c.res = resultAbandoned
				return c
			}
			continue
		}
		c.attempts += se.Attempts
		switch se.Class {
		case sender.ClassReject:
			if probe {
				w.gate.probeDone(true)
			}
			c.res, c.se = resultRejected, se
			return c
		case sender.ClassPause:
			wait, started := w.gate.pause(se, se.RetryAfter)
			fields := []zap.Field{zap.Int("code", se.Code), zap.String("info", se.Info), zap.Duration("next_probe_in", wait)}
			if started {
				log.Error("sending paused: the API refuses every event this way; nothing is dead-lettered", fields...)
			} else if probe {
				log.Warn("still paused", fields...)
			}
		default: // ClassRetry: the retry budget or ctx ran out; hold the record.
			mayBeDelivered = true
			if probe {
				// An answer other than a pause clears it; a probe cut short
				// by the context (revoked, stopping) proves nothing.
				w.gate.probeDone(ctx.Err() == nil && se.Attempts > 0)
			}
			if ctx.Err() != nil || p.fetchCtx.Err() != nil {
				// Stopping, or revoked: no more slots for this partition; the
				// next owner resends the call with the same bytes.
				c.res = resultAbandoned
				return c
			}
			if w.cfg.RetryMaxElapsed > 0 && w.cfg.Now().Sub(started) >= w.cfg.RetryMaxElapsed {
				log.Error("giving up: retried longer than TIM_RETRY_MAX_ELAPSED; dead-lettering", zap.Error(se),
					zap.Duration("retried_for", w.cfg.Now().Sub(started)))
				c.res, c.se = resultExhausted, se
				return c
			}
			log.Warn("send still failing; holding the partition", zap.Error(se))
		}
	}
}

// delivered records the delivery of members by call c: metrics, spans
// and, with a receipt topic, the receipts. Before writing them it records
// the delivery in the committed-offset metadata, so an owner that takes
// over after a crash writes the receipts instead of calling again.
func (p *partition) delivered(log *zap.Logger, members []member, c call) error {
	w := p.w
	for _, m := range members {
		w.metrics.recordDelivered(1)
		w.metrics.recordLane(m.msg.Topic, "delivered")
		if p.urgent && !m.msg.Time.IsZero() && !c.at.IsZero() {
			w.metrics.observeUrgentDelay(c.at.Sub(m.msg.Time))
		}
		if m.span != nil {
			m.span.SetAttributes(AttrOutcome.String(wire.OutcomeDelivered), AttrMsgSeq.Int64(int64(c.msgSeq)),
				AttrAttempts.Int(c.attempts), AttrRandom.Int64(int64(m.ev.Message.Random)), AttrCallEvents.Int(c.events))
		}
	}
	w.metrics.recordRetries(c.attempts)
	log.Debug("delivered", zap.Uint64("msg_seq", c.msgSeq), zap.Int("attempts", c.attempts), zap.Int("events", len(members)))
	if w.receipts != nil {
		d := wire.Delivered{MsgSeq: c.msgSeq, Attempts: c.attempts, FirstAttempt: c.first, Call: c.at, Final: c.final}
		last := members[len(members)-1].msg.Offset
		if err := p.offsets.commit(members[0].msg.Offset, wire.InFlight{Last: last, Random: c.random, Delivered: &d}.String()); err != nil {
			return err
		}
		if err := p.writeReceipts(log, members, deliveredReceipts(members, c)); err != nil {
			return err
		}
	}
	for _, m := range members {
		p.report(m.msg, m.ev, Outcome{Delivered: true, MsgSeq: c.msgSeq, Attempts: c.attempts})
	}
	return nil
}

// deliveredReceipts returns the receipts of members delivered by c.
func deliveredReceipts(members []member, c call) []wire.Receipt {
	rs := make([]wire.Receipt, len(members))
	for i, m := range members {
		rs[i] = wire.ReceiptFor(m.msg, wire.OutcomeDelivered, c.final)
		rs[i].Random, rs[i].MsgSeq = m.ev.Message.Random, c.msgSeq
		rs[i].SetCall(c.random, c.events, c.attempts, c.first, c.at)
	}
	return rs
}

// endCall ends a merged call's span with its outcome.
func endCall(span trace.Span, c call) {
	var err error
	switch c.res {
	case resultDelivered:
		span.SetAttributes(AttrMsgSeq.Int64(int64(c.msgSeq)))
	case resultAbandoned:
		err = errStopped
	default:
		if c.se != nil {
			err = c.se
		}
	}
	end(span, err, AttrAttempts.Int(c.attempts))
}

// attemptError describes a failed attempt for the stuck report.
func attemptError(a sender.Attempt) string {
	switch {
	case a.Err != nil:
		return a.Err.Error()
	case a.HTTPStatus != 0 && a.HTTPStatus != 200:
		return "HTTP " + strconv.Itoa(a.HTTPStatus)
	}
	return "code " + strconv.Itoa(a.Code) + " " + a.Info
}

// pacing returns ctx with the call schedule as the sender's pacing, when
// the worker keeps one: every attempt waits for its slot and leaves at the
// slot's middle.
func (p *partition) pacing(ctx context.Context) context.Context {
	if p.w.sched == nil {
		return ctx
	}
	return sender.WithPacing(ctx, func(c context.Context) error {
		at, err := p.slot(c)
		if err != nil {
			return err
		}
		return sleepCtx(c, time.Until(at))
	})
}

// slot waits for this partition's next slot and returns when the call
// should leave. A slot is worth waiting for only while the partition is
// ours: once it is revoked (or the worker stops) the wait ends at once, so
// the member rejoins in time; the next owner resends the call.
func (p *partition) slot(c context.Context) (time.Time, error) {
	c, cancel := context.WithCancel(c)
	defer cancel()
	stop := context.AfterFunc(p.fetchCtx, cancel)
	defer stop()
	return p.w.sched.wait(c, p.tp, p.urgent)
}

// loneFailure is the dead-letter failure of an event that expired before
// its turn, that the API rejected, or whose retries were given up.
func loneFailure(c call, ev *wire.Event) wire.Failure {
	switch c.res {
	case resultExpired:
		return wire.Failure{Reason: wire.ReasonExpired, Random: ev.Message.Random,
			Info: "event expired at " + ev.ExpiresAt.UTC().Format(time.RFC3339) + " before its turn came"}
	case resultExhausted:
		return wire.Failure{Reason: sender.ReasonRetryExhausted, Class: sender.ClassRetry.String(), Code: c.se.Code,
			Info:     "gave up retrying after TIM_RETRY_MAX_ELAPSED (an attempt may have been delivered): " + c.se.Info,
			Attempts: c.attempts, Random: ev.Message.Random}
	}
	return wire.Failure{Reason: c.se.Reason(), Code: c.se.Code, Info: c.se.Info, Field: c.se.Field, Attempts: c.attempts, Random: ev.Message.Random}
}

// report passes a final outcome to Config.OnOutcome.
func (p *partition) report(m kafka.Message, ev *wire.Event, o Outcome) {
	if p.w.cfg.OnOutcome == nil {
		return
	}
	o.Topic, o.Partition, o.Offset, o.Key, o.Produced = m.Topic, m.Partition, m.Offset, m.Key, m.Time
	if ev != nil {
		o.Random = ev.Message.Random
		o.Message = &ev.Message
	}
	p.w.cfg.OnOutcome(o)
}

// Outcome is the final outcome of one record.
type Outcome struct {
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	// Produced is the record's timestamp.
	Produced time.Time
	// Random is the message identity sent (0 if the record never decoded).
	Random uint32
	// Message is the decoded message; nil if the record never decoded.
	Message *sender.Message
	// Delivered is true when the API answered OK.
	Delivered bool
	// MsgSeq is the API's MsgSeq for a delivered message.
	MsgSeq uint64
	// Attempts is the number of API requests made.
	Attempts int
	// DeadLetter is the failure for a dead-lettered record.
	DeadLetter *wire.Failure
}
