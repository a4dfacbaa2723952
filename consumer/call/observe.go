package call

import (
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/metrics"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

// Observing a call's life: one observer per stream, carried by each of
// its calls (call.obs), sees a record join a call (joined), every API
// Attempt (attempt), the final outcome (outcome, already), the receipts
// (receipts) and the commit (committed). Spans, metrics, the outcome
// callback and the log lines of outcomes live here, not in the delivery
// logic.

// Observer observes the calls of one stream (one app's share of one
// partition). Its fields are set once, before its first call.
type Observer struct {
	Tracing *Tracing
	Metrics *metrics.Metrics
	Log     *zap.Logger
	// Label is the app in per-app metrics: its name with an apps file
	// ("none" for records of no app), "" without; App and SDKAppID name
	// the app in spans and outcomes with an apps file ("" and 0 without,
	// or for records of no app).
	Label    string
	App      string
	SDKAppID uint64
	// Urgent says the stream is of the urgent topic.
	Urgent bool
	// DLQTopic is the dead-letter topic, named in a dead letter's log.
	DLQTopic string
	// OnOutcome, if set, sees every final outcome (Config.OnOutcome).
	OnOutcome func(Outcome)
	// Failing, if set, sees every failed attempt: when, and what failed
	// (the stream's hold).
	Failing func(at time.Time, what string)
}

// Joined starts rec's span, from its fetch, when it joins a call; a
// record's span is started once.
func (o *Observer) Joined(rec *Record) {
	if rec.Span == nil {
		rec.Span = o.Tracing.eventSpan(rec.Msg, rec.At)
		if rec.Span != nil && o.App != "" {
			rec.Span.SetAttributes(AttrApp.String(o.App), AttrSDKAppID.Int64(int64(o.SDKAppID)))
		}
	}
}

// MemberLog is the stream's logger for one record: its offset, Random
// (once decoded), trace_id and span_id (see eventTraceFields). Its fields
// are encoded only if something is logged with it: a call that goes well
// logs nothing at the default level, and costs no encoding.
func (o *Observer) MemberLog(rec *Record) *zap.Logger {
	fields := make([]zap.Field, 0, 4)
	fields = append(fields, zap.Int64("offset", rec.Msg.Offset))
	if rec.Ev != nil {
		fields = append(fields, zap.Uint32("random", rec.Ev.Message.Random))
	}
	return o.Log.WithLazy(append(fields, o.Tracing.EventTraceFields(rec)...)...)
}

// Attempt observes one API attempt of c: its times, its span, and a
// failure as the stream's hold's.
func (o *Observer) Attempt(c *Call, a sender.Attempt) {
	if c.First.IsZero() {
		c.First = a.Start
	}
	c.At = a.Start
	parent := c.Span
	if parent == nil {
		parent = c.Members[0].Span
	}
	o.Tracing.attempt(parent, a, c.Random)
	if a.Code != sender.CodeOK && o.Failing != nil {
		o.Failing(a.Start, attemptError(a))
	}
}

// Outcome observes a final outcome: member m filtered out by the
// mapping, every member of c delivered (f nil), or member m dead-lettered
// with f.
func (o *Observer) Outcome(c *Call, m *Record, f *wire.Failure) {
	if c.Res == Filtered {
		o.Metrics.RecordSkipped("filtered", 1)
		c.Log.Debug("record filtered out by the mapping (TIM_MAP): committed, not sent")
		if m.Span != nil {
			m.Span.SetAttributes(AttrOutcome.String(wire.OutcomeFiltered))
		}
		o.report(m, Outcome{Filtered: true})
		o.Metrics.RecordAppEvents(o.Label, wire.OutcomeFiltered, 1)
		return
	}
	if f == nil {
		for _, m := range c.Members {
			o.Metrics.RecordDelivered(1)
			o.Metrics.RecordLane(m.Msg.Topic, "delivered")
			if o.Urgent && !m.Msg.Time.IsZero() && !c.At.IsZero() {
				o.Metrics.ObserveUrgentDelay(c.At.Sub(m.Msg.Time))
			}
			if m.Span != nil {
				m.Span.SetAttributes(AttrOutcome.String(wire.OutcomeDelivered), AttrMsgSeq.Int64(int64(c.MsgSeq)),
					AttrAttempts.Int(c.Attempts), AttrRandom.Int64(int64(m.Ev.Message.Random)), AttrCallEvents.Int(len(c.Members)))
			}
			o.report(m, Outcome{Delivered: true, MsgSeq: c.MsgSeq, Attempts: c.Attempts})
		}
		o.Metrics.RecordRetries(c.Attempts)
		o.Metrics.RecordAppEvents(o.Label, wire.OutcomeDelivered, len(c.Members))
		o.Metrics.SetAppLastCall(o.Label, c.Final)
		c.Log.Debug("delivered", zap.Uint64("msg_seq", c.MsgSeq), zap.Int("attempts", c.Attempts), zap.Int("events", len(c.Members)))
		return
	}
	o.Metrics.RecordDeadLettered(f.Reason)
	o.Metrics.RecordAppEvents(o.Label, wire.OutcomeDeadLettered, 1)
	o.Metrics.RecordLane(m.Msg.Topic, "dead_lettered")
	o.MemberLog(m).Warn("record dead-lettered", zap.String("reason", f.Reason), zap.Int("code", f.Code),
		zap.String("info", f.Info), zap.String("dlq_topic", o.DLQTopic))
	if m.Span != nil {
		m.Span.SetAttributes(AttrOutcome.String(wire.OutcomeDeadLettered), AttrReason.String(f.Reason),
			AttrErrorCode.Int(f.Code), AttrAttempts.Int(c.Attempts))
		if f.Random != 0 {
			m.Span.SetAttributes(AttrRandom.Int64(int64(f.Random)))
		}
	}
	o.report(m, Outcome{DeadLetter: f, Attempts: f.Attempts})
}

// Committed observes the commit past members: their spans end, with err
// when they end uncommitted. An ended span ignores a second end.
func (o *Observer) Committed(members []*Record, err error) {
	for _, m := range members {
		End(m.Span, err)
	}
}

// EndCall ends a merged call's span with its outcome; err is why the
// session ended first, if it did.
func EndCall(span trace.Span, c *Call, err error) {
	if err == nil && c.Res != Delivered && c.Err != nil {
		err = c.Err
	}
	if c.Res == Delivered {
		span.SetAttributes(AttrMsgSeq.Int64(int64(c.MsgSeq)))
	}
	End(span, err, AttrAttempts.Int(c.Attempts))
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

// Already observes the members of c, below the delivered log's
// watermark floor: never sent, their outcome already_delivered.
func (o *Observer) Already(c *Call, floor int64) {
	o.Metrics.RecordSkipped("already_delivered", int64(len(c.Members)))
	o.Metrics.RecordAppEvents(o.Label, wire.OutcomeAlreadyDelivered, len(c.Members))
	c.Log.Info("already delivered (delivered log): committed without sending", zap.Int("records", len(c.Members)),
		zap.Int64("last_offset", c.LastOffset()), zap.Int64("delivered_watermark", floor))
	for _, m := range c.Members {
		o.Metrics.RecordLane(m.Msg.Topic, wire.OutcomeAlreadyDelivered)
		if m.Span != nil {
			m.Span.SetAttributes(AttrOutcome.String(wire.OutcomeAlreadyDelivered))
		}
		o.report(m, Outcome{AlreadyDelivered: true})
	}
}

// Receipts observes receipts rs written, the write taking took.
func (o *Observer) Receipts(rs []wire.Receipt, took time.Duration) {
	o.Metrics.ObserveReceiptWrite(took)
	for _, r := range rs {
		o.Metrics.RecordReceipt(r.Outcome)
	}
}

// report passes a final outcome to OnOutcome.
func (o *Observer) report(rec *Record, out Outcome) {
	if o.OnOutcome == nil {
		return
	}
	m := rec.Msg
	out.Topic, out.Partition, out.Offset, out.Key, out.Produced = m.Topic, m.Partition, m.Offset, m.Key, m.Time
	out.App = o.App
	if rec.Ev != nil {
		out.Random = rec.Ev.Message.Random
		out.Message = &rec.Ev.Message
	}
	o.OnOutcome(out)
}

// Outcome is the final outcome of one record.
type Outcome struct {
	// App is the record's app (its name in Config.Apps); "" with one app
	// or none found.
	App       string
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
