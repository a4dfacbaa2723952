package consumer

import (
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

// Observing the settle path at its named points: a record joins a call
// (startSpan), an API attempt (attempt), a final outcome (outcome), a
// commit (committed). Spans, metrics, the outcome callback and the log
// lines of outcomes live here, not in the delivery logic.

// startSpan starts rec's span, from its fetch, when it joins a call; a
// record's span is started once.
func (p *partition) startSpan(rec *record) {
	if rec.span == nil {
		rec.span = p.w.eventSpan(rec.msg, rec.at)
	}
}

// memberLog is the partition's logger for one record: its offset, Random
// (once decoded), trace_id and span_id (see eventTraceFields).
func (p *partition) memberLog(rec *record) *zap.Logger {
	log := p.log.With(zap.Int64("offset", rec.msg.Offset))
	if rec.ev != nil {
		log = log.With(zap.Uint32("random", rec.ev.Message.Random))
	}
	return log.With(p.w.eventTraceFields(rec)...)
}

// attempt observes one API attempt of c.
func (p *partition) attempt(c *call, a sender.Attempt) {
	w := p.w
	if c.first.IsZero() {
		c.first = a.Start
	}
	c.at = a.Start
	parent := c.span
	if parent == nil {
		parent = c.members[0].span
	}
	w.tr.attempt(parent, a, c.random)
	if a.Code != sender.CodeOK {
		w.holds.fail(p.tp, a.Start, attemptError(a))
	}
	if a.Code >= 0 {
		w.sched.Answered(sender.IsRateLimit(a.Code))
	}
	if a.Uncertain && !c.unknownRecorded {
		c.unknownRecorded = true
		p.recordUnknown(c, c.uncertain.Since())
	}
}

// outcome observes a final outcome: member m filtered out by the
// mapping, every member of c delivered (f nil), or member m dead-lettered
// with f.
func (p *partition) outcome(c *call, m *record, f *wire.Failure) {
	w := p.w
	if c.res == resultFiltered {
		w.metrics.recordSkipped("filtered", 1)
		c.log.Debug("record filtered out by the mapping (TIM_MAP): committed, not sent")
		if m.span != nil {
			m.span.SetAttributes(AttrOutcome.String(wire.OutcomeFiltered))
		}
		p.report(m, Outcome{Filtered: true})
		return
	}
	if f == nil {
		for _, m := range c.members {
			w.metrics.recordDelivered(1)
			w.metrics.recordLane(m.msg.Topic, "delivered")
			if p.urgent && !m.msg.Time.IsZero() && !c.at.IsZero() {
				w.metrics.observeUrgentDelay(c.at.Sub(m.msg.Time))
			}
			if m.span != nil {
				m.span.SetAttributes(AttrOutcome.String(wire.OutcomeDelivered), AttrMsgSeq.Int64(int64(c.msgSeq)),
					AttrAttempts.Int(c.attempts), AttrRandom.Int64(int64(m.ev.Message.Random)), AttrCallEvents.Int(len(c.members)))
			}
			p.report(m, Outcome{Delivered: true, MsgSeq: c.msgSeq, Attempts: c.attempts})
		}
		w.metrics.recordRetries(c.attempts)
		c.log.Debug("delivered", zap.Uint64("msg_seq", c.msgSeq), zap.Int("attempts", c.attempts), zap.Int("events", len(c.members)))
		return
	}
	w.metrics.recordDeadLettered(f.Reason)
	w.metrics.recordLane(m.msg.Topic, "dead_lettered")
	p.memberLog(m).Warn("record dead-lettered", zap.String("reason", f.Reason), zap.Int("code", f.Code),
		zap.String("info", f.Info), zap.String("dlq_topic", w.cfg.DLQTopic))
	if m.span != nil {
		m.span.SetAttributes(AttrOutcome.String(wire.OutcomeDeadLettered), AttrReason.String(f.Reason),
			AttrErrorCode.Int(f.Code), AttrAttempts.Int(c.attempts))
		if f.Random != 0 {
			m.span.SetAttributes(AttrRandom.Int64(int64(f.Random)))
		}
	}
	p.report(m, Outcome{DeadLetter: f, Attempts: f.Attempts})
}

// committed observes the commit past members: their spans end, with err
// when they end uncommitted. An ended span ignores a second end.
func (p *partition) committed(members []*record, err error) {
	for _, m := range members {
		end(m.span, err)
	}
}

// endCall ends a merged call's span with its outcome; err is why the
// session ended first, if it did.
func endCall(span trace.Span, c *call, err error) {
	if err == nil && c.res != resultDelivered && c.se != nil {
		err = c.se
	}
	if c.res == resultDelivered {
		span.SetAttributes(AttrMsgSeq.Int64(int64(c.msgSeq)))
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

// report passes a final outcome to Config.OnOutcome.
func (p *partition) report(rec *record, o Outcome) {
	if p.w.cfg.OnOutcome == nil {
		return
	}
	m := rec.msg
	o.Topic, o.Partition, o.Offset, o.Key, o.Produced = m.Topic, m.Partition, m.Offset, m.Key, m.Time
	if rec.ev != nil {
		o.Random = rec.ev.Message.Random
		o.Message = &rec.ev.Message
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
	// Filtered is true when the mapping (TIM_MAP) output nothing for the
	// record: committed, never sent.
	Filtered bool
	// AlreadyDelivered is true when the delivered log says the record was
	// delivered before (another group, offsets reset or expired):
	// committed, not sent again.
	AlreadyDelivered bool
}
