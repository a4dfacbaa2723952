package consumer

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

// member is one record of a call: the record and its decoded event.
type member struct {
	msg kafka.Message
	ev  *wire.Event
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

// decode turns a record into an event (the failure is an
// *wire.InvalidEventError).
func decode(m kafka.Message) (*wire.Event, error) { return wire.DecodeEvent(wire.RecordOf(m)) }

// handle takes one record alone to its final outcome, given what decode
// made of it. It returns false when the send context ended first (the
// record stays uncommitted). attempted says an earlier attempt may have
// reached the server.
func (p *partition) handle(m kafka.Message, ev *wire.Event, err error, attempted bool) bool {
	log := p.log.With(zap.Int64("offset", m.Offset))
	if err != nil {
		var ie *wire.InvalidEventError
		errors.As(err, &ie)
		return p.deadLetter(log, m, nil, wire.Failure{Reason: ie.Reason, Code: ie.Code, Info: ie.Msg, Field: ie.Field})
	}
	log = log.With(zap.Uint32("random", ev.Message.Random))
	res, se, attempts := p.deliver(log, []member{{m, ev}}, ev.Body, false, attempted)
	switch res {
	case resultDelivered:
		return true
	case resultExpired, resultRejected, resultExhausted:
		return p.deadLetter(log, m, ev, loneFailure(res, se, attempts, ev))
	}
	return false
}

// deliver sends body (the call for members) until the API answers OK or
// rejects it, holding through retries and pauses, and reports delivered
// members. reserved says the first attempt already holds a pacing slot;
// attempted that an earlier attempt may have reached the server.
func (p *partition) deliver(log *zap.Logger, members []member, body []byte, reserved, attempted bool) (result, *sender.Error, int) {
	w := p.w
	w.holds.start(p.tp, members[0].msg.Offset)
	var lastStart time.Time
	ctx := sender.WithTrace(p.pacing(p.sendCtx), &sender.Trace{Attempt: func(a sender.Attempt) {
		lastStart = a.Start
		if a.Code != sender.CodeOK {
			w.holds.fail(p.tp, a.Start, attemptError(a))
		}
		if w.sched != nil && a.Code >= 0 {
			w.sched.answered(sender.IsRateLimit(a.Code))
		}
	}})
	first := w.cfg.Now()
	attempts := 0
	mayBeDelivered := attempted // a failed attempt may still have reached the server
	lone := members[0].ev
	for {
		if len(members) == 1 && p.expired(lone) && !mayBeDelivered {
			return resultExpired, nil, attempts
		}
		probe, err := w.gate.acquire(ctx)
		if err != nil {
			return resultAbandoned, nil, attempts
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
			attempts += resp.Attempts
			w.holds.done(p.tp)
			if probe {
				if d := w.gate.probeDone(true); d > 0 {
					log.Info("sending resumed", zap.Duration("paused_for", d))
				}
			}
			for _, m := range members {
				w.metrics.recordDelivered(1)
				w.metrics.recordLane(m.msg.Topic, "delivered")
				if p.urgent && !m.msg.Time.IsZero() && !lastStart.IsZero() {
					w.metrics.observeUrgentDelay(lastStart.Sub(m.msg.Time))
				}
				p.report(m.msg, m.ev, Outcome{Delivered: true, MsgSeq: resp.MsgSeq, Attempts: attempts})
			}
			w.metrics.recordRetries(attempts)
			log.Debug("delivered", zap.Uint64("msg_seq", resp.MsgSeq), zap.Int("attempts", attempts), zap.Int("events", len(members)))
			return resultDelivered, nil, attempts
		case !errors.As(err, &se):
			// Not the sender's error type: treat as transient.
			if probe {
				w.gate.probeDone(false)
			}
			log.Warn("send failed", zap.Error(err))
			if ctx.Err() != nil || p.fetchCtx.Err() != nil {
				return resultAbandoned, nil, attempts
			}
			continue
		}
		attempts += se.Attempts
		switch se.Class {
		case sender.ClassReject:
			if probe {
				w.gate.probeDone(true)
			}
			return resultRejected, se, attempts
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
				return resultAbandoned, nil, attempts
			}
			if w.cfg.RetryMaxElapsed > 0 && w.cfg.Now().Sub(first) >= w.cfg.RetryMaxElapsed {
				log.Error("giving up: retried longer than TIM_RETRY_MAX_ELAPSED; dead-lettering", zap.Error(se),
					zap.Duration("retried_for", w.cfg.Now().Sub(first)))
				return resultExhausted, se, attempts
			}
			log.Warn("send still failing; holding the partition", zap.Error(se))
		}
	}
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
func loneFailure(res result, se *sender.Error, attempts int, ev *wire.Event) wire.Failure {
	switch res {
	case resultExpired:
		return wire.Failure{Reason: wire.ReasonExpired, Random: ev.Message.Random,
			Info: "event expired at " + ev.ExpiresAt.UTC().Format(time.RFC3339) + " before its turn came"}
	case resultExhausted:
		return wire.Failure{Reason: sender.ReasonRetryExhausted, Class: sender.ClassRetry.String(), Code: se.Code,
			Info:     "gave up retrying after TIM_RETRY_MAX_ELAPSED (an attempt may have been delivered): " + se.Info,
			Attempts: attempts, Random: ev.Message.Random}
	}
	return wire.Failure{Reason: se.Reason(), Code: se.Code, Info: se.Info, Field: se.Field, Attempts: attempts, Random: ev.Message.Random}
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
