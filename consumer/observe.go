package consumer

import (
	"context"
	"net/url"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

// Observing a call's life: one observer per stream, carried by each of
// its calls (call.obs), sees a record join a call (joined), every API
// attempt (attempt), the final outcome (outcome, already), the receipts
// (receipts) and the commit (committed). Spans, metrics, the outcome
// callback and the log lines of outcomes live here, not in the delivery
// logic.

// observer observes the calls of one stream (one app's share of one
// partition).
type observer struct {
	w      *Worker
	tp     topicPartition
	app    *app // nil: records of no app
	urgent bool
	log    *zap.Logger
	// label is the app in per-app metrics: its name with an apps file
	// ("none" for records of no app), "" without.
	label string
}

// newObserver returns the observer of s's calls.
func (s *stream) newObserver() *observer {
	o := &observer{w: s.w, tp: s.tp, app: s.app, urgent: s.urgent, log: s.log}
	if s.w.apps.single == nil {
		o.label = s.tp.app
	}
	return o
}

// joined starts rec's span, from its fetch, when it joins a call; a
// record's span is started once.
func (o *observer) joined(rec *record) {
	if rec.Span == nil {
		rec.Span = o.w.eventSpan(rec.Msg, rec.At)
		if rec.Span != nil && o.app != nil && o.label != "" {
			rec.Span.SetAttributes(AttrApp.String(o.app.Name), AttrSDKAppID.Int64(int64(o.app.SDKAppID)))
		}
	}
}

// memberLog is the stream's logger for one record: its offset, Random
// (once decoded), trace_id and span_id (see eventTraceFields).
func (o *observer) memberLog(rec *record) *zap.Logger {
	log := o.log.With(zap.Int64("offset", rec.Msg.Offset))
	if rec.Ev != nil {
		log = log.With(zap.Uint32("random", rec.Ev.Message.Random))
	}
	return log.With(o.w.eventTraceFields(rec)...)
}

// attempt observes one API attempt of c: its times, its span, and a
// failure as the stream's hold's.
func (o *observer) attempt(c *call, a sender.Attempt) {
	if c.First.IsZero() {
		c.First = a.Start
	}
	c.At = a.Start
	parent := c.Span
	if parent == nil {
		parent = c.Members[0].Span
	}
	o.w.tr.attempt(parent, a, c.Random)
	if a.Code != sender.CodeOK {
		o.w.holds.Fail(o.tp, a.Start, attemptError(a))
	}
}

// outcome observes a final outcome: member m filtered out by the
// mapping, every member of c delivered (f nil), or member m dead-lettered
// with f.
func (o *observer) outcome(c *call, m *record, f *wire.Failure) {
	w := o.w
	if c.Res == resultFiltered {
		w.metrics.RecordSkipped("filtered", 1)
		c.Log.Debug("record filtered out by the mapping (TIM_MAP): committed, not sent")
		if m.Span != nil {
			m.Span.SetAttributes(AttrOutcome.String(wire.OutcomeFiltered))
		}
		o.report(m, Outcome{Filtered: true})
		w.metrics.RecordAppEvents(o.label, wire.OutcomeFiltered, 1)
		return
	}
	if f == nil {
		for _, m := range c.Members {
			w.metrics.RecordDelivered(1)
			w.metrics.RecordLane(m.Msg.Topic, "delivered")
			if o.urgent && !m.Msg.Time.IsZero() && !c.At.IsZero() {
				w.metrics.ObserveUrgentDelay(c.At.Sub(m.Msg.Time))
			}
			if m.Span != nil {
				m.Span.SetAttributes(AttrOutcome.String(wire.OutcomeDelivered), AttrMsgSeq.Int64(int64(c.MsgSeq)),
					AttrAttempts.Int(c.Attempts), AttrRandom.Int64(int64(m.Ev.Message.Random)), AttrCallEvents.Int(len(c.Members)))
			}
			o.report(m, Outcome{Delivered: true, MsgSeq: c.MsgSeq, Attempts: c.Attempts})
		}
		w.metrics.RecordRetries(c.Attempts)
		w.metrics.RecordAppEvents(o.label, wire.OutcomeDelivered, len(c.Members))
		w.metrics.SetAppLastCall(o.label, c.Final)
		c.Log.Debug("delivered", zap.Uint64("msg_seq", c.MsgSeq), zap.Int("attempts", c.Attempts), zap.Int("events", len(c.Members)))
		return
	}
	w.metrics.RecordDeadLettered(f.Reason)
	w.metrics.RecordAppEvents(o.label, wire.OutcomeDeadLettered, 1)
	w.metrics.RecordLane(m.Msg.Topic, "dead_lettered")
	o.memberLog(m).Warn("record dead-lettered", zap.String("reason", f.Reason), zap.Int("code", f.Code),
		zap.String("info", f.Info), zap.String("dlq_topic", w.cfg.DLQTopic))
	if m.Span != nil {
		m.Span.SetAttributes(AttrOutcome.String(wire.OutcomeDeadLettered), AttrReason.String(f.Reason),
			AttrErrorCode.Int(f.Code), AttrAttempts.Int(c.Attempts))
		if f.Random != 0 {
			m.Span.SetAttributes(AttrRandom.Int64(int64(f.Random)))
		}
	}
	o.report(m, Outcome{DeadLetter: f, Attempts: f.Attempts})
}

// committed observes the commit past members: their spans end, with err
// when they end uncommitted. An ended span ignores a second end.
func (o *observer) committed(members []*record, err error) {
	for _, m := range members {
		end(m.Span, err)
	}
}

// endCall ends a merged call's span with its outcome; err is why the
// session ended first, if it did.
func endCall(span trace.Span, c *call, err error) {
	if err == nil && c.Res != resultDelivered && c.Err != nil {
		err = c.Err
	}
	if c.Res == resultDelivered {
		span.SetAttributes(AttrMsgSeq.Int64(int64(c.MsgSeq)))
	}
	end(span, err, AttrAttempts.Int(c.Attempts))
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

// already observes the members of c, below the delivered log's
// watermark floor: never sent, their outcome already_delivered.
func (o *observer) already(c *call, floor int64) {
	w := o.w
	w.metrics.RecordSkipped("already_delivered", int64(len(c.Members)))
	w.metrics.RecordAppEvents(o.label, wire.OutcomeAlreadyDelivered, len(c.Members))
	c.Log.Info("already delivered (delivered log): committed without sending", zap.Int("records", len(c.Members)),
		zap.Int64("last_offset", c.LastOffset()), zap.Int64("delivered_watermark", floor))
	for _, m := range c.Members {
		w.metrics.RecordLane(m.Msg.Topic, wire.OutcomeAlreadyDelivered)
		if m.Span != nil {
			m.Span.SetAttributes(AttrOutcome.String(wire.OutcomeAlreadyDelivered))
		}
		o.report(m, Outcome{AlreadyDelivered: true})
	}
}

// receipts observes receipts rs written, the write taking took.
func (o *observer) receipts(rs []wire.Receipt, took time.Duration) {
	o.w.metrics.ObserveReceiptWrite(took)
	for _, r := range rs {
		o.w.metrics.RecordReceipt(r.Outcome)
	}
}

// report passes a final outcome to Config.OnOutcome.
func (o *observer) report(rec *record, out Outcome) {
	if o.w.cfg.OnOutcome == nil {
		return
	}
	m := rec.Msg
	out.Topic, out.Partition, out.Offset, out.Key, out.Produced = m.Topic, m.Partition, m.Offset, m.Key, m.Time
	if o.label != "" && o.app != nil {
		out.App = o.app.Name
	}
	if rec.Ev != nil {
		out.Random = rec.Ev.Message.Random
		out.Message = &rec.Ev.Message
	}
	o.w.cfg.OnOutcome(out)
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

// Spans (OpenTelemetry): what the named points above make.

// TracerName is the instrumentation scope of the worker's spans.
const TracerName = "github.com/timbroadcast/timbroadcast/consumer"

// Span attributes beyond the OpenTelemetry messaging conventions.
const (
	AttrRandom     = attribute.Key("timbroadcast.random")      // the Random sent (the call's, for a call span)
	AttrErrorCode  = attribute.Key("timbroadcast.error_code")  // the API's ErrorCode of an attempt; -1 without an answer
	AttrErrorInfo  = attribute.Key("timbroadcast.error_info")  // the API's ErrorInfo of a failed attempt
	AttrAttempts   = attribute.Key("timbroadcast.attempts")    // API requests made for the event's call
	AttrAttempt    = attribute.Key("timbroadcast.attempt")     // an attempt's number within its call, from 1
	AttrMsgSeq     = attribute.Key("timbroadcast.msg_seq")     // the API's MsgSeq of the delivering call
	AttrOutcome    = attribute.Key("timbroadcast.outcome")     // delivered or dead_lettered
	AttrReason     = attribute.Key("timbroadcast.dlq.reason")  // a dead letter's reason
	AttrCallEvents = attribute.Key("timbroadcast.call.events") // events sharing the call
	AttrPacingWait = attribute.Key("timbroadcast.pacing_wait_ms")
	AttrApp        = attribute.Key("timbroadcast.app")      // the event's app (several apps: its name in the apps file)
	AttrSDKAppID   = attribute.Key("timbroadcast.sdkappid") // the event's app's SDKAppID (several apps)
)

// tracing makes the worker's spans: one per event from fetch to commit
// (Worker.eventSpan, its parent the record's trace context), one per API
// attempt, one per dead-letter and receipt write, and for a merged call a
// call span linked to every member. A nil *tracing makes none and costs
// nothing.
type tracing struct {
	tracer trace.Tracer
}

func newTracing(tp trace.TracerProvider) *tracing {
	if tp == nil {
		return nil
	}
	return &tracing{tracer: tp.Tracer(TracerName)}
}

// recordContext is the trace context in a record's headers, as the
// worker's propagator reads it.
func (w *Worker) recordContext(m kafka.Message) context.Context {
	return w.prop.Extract(context.Background(), wire.HeaderCarrier{Headers: &m.Headers})
}

// eventSpan starts the span of one event at the time it was fetched, its
// parent the record's trace context; nil without tracing.
func (w *Worker) eventSpan(m kafka.Message, fetched time.Time) trace.Span {
	if w.tr == nil {
		return nil
	}
	parent := w.recordContext(m)
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(fetched),
		trace.WithAttributes(
			semconv.MessagingSystemKafka,
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("process"),
			semconv.MessagingDestinationName(m.Topic),
			semconv.MessagingDestinationPartitionID(strconv.Itoa(m.Partition)),
			semconv.MessagingKafkaOffset(int(m.Offset)),
			semconv.MessagingKafkaMessageKey(spanKey(m.Key)),
			semconv.MessagingConsumerGroupName(w.cfg.GroupID),
			semconv.MessagingMessageBodySize(len(m.Value)),
		)}
	if w.cfg.TraceLinkRecord {
		// The producer's trace context is a link, not the parent: the
		// worker's own sampler decides, whatever the record says.
		if sc := trace.SpanContextFromContext(parent); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
		parent = context.Background()
	}
	_, span := w.tr.tracer.Start(parent, "process "+m.Topic, opts...)
	return span
}

// MaxSpanKeyBytes bounds a record key as a span attribute: a longer key is
// given as its SHA-256 ("sha256:<hex>"), so a span never carries a
// producer's megabytes.
const MaxSpanKeyBytes = 128

func spanKey(key []byte) string {
	if len(key) > MaxSpanKeyBytes {
		return string(wire.KeyDigest(key))
	}
	return string(key)
}

// call starts the span of a merged call, linked to every member's span;
// each member's span links back to it.
func (t *tracing) call(members []*record, random uint32) trace.Span {
	if t == nil {
		return nil
	}
	links := make([]trace.Link, 0, len(members))
	for _, m := range members {
		links = append(links, trace.Link{SpanContext: m.Span.SpanContext()})
	}
	_, span := t.tracer.Start(context.Background(), "send_broadcast_msg merged", trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithLinks(links...), trace.WithAttributes(AttrRandom.Int64(int64(random)), AttrCallEvents.Int(len(members)),
			semconv.MessagingBatchMessageCount(len(members))))
	for _, m := range members {
		m.Span.AddLink(trace.Link{SpanContext: span.SpanContext(), Attributes: []attribute.KeyValue{AttrCallEvents.Int(len(members))}})
	}
	return span
}

// attempt records one API attempt as a child of parent.
func (t *tracing) attempt(parent trace.Span, a sender.Attempt, random uint32) {
	if t == nil || parent == nil {
		return
	}
	ctx := trace.ContextWithSpan(context.Background(), parent)
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodPost,
		AttrAttempt.Int(a.Number),
		AttrRandom.Int64(int64(random)),
		AttrErrorCode.Int(a.Code),
		AttrPacingWait.Float64(float64(a.PacingWait.Microseconds()) / 1000),
	}
	if u, err := url.Parse(a.Endpoint); err == nil {
		attrs = append(attrs, semconv.ServerAddress(u.Hostname()))
	}
	if a.HTTPStatus != 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(a.HTTPStatus))
	}
	_, span := t.tracer.Start(ctx, "send_broadcast_msg", trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(a.Start),
		trace.WithAttributes(attrs...))
	if a.Code != sender.CodeOK {
		desc := attemptError(a)
		if a.Info != "" {
			span.SetAttributes(AttrErrorInfo.String(a.Info))
		}
		span.SetAttributes(semconv.ErrorTypeKey.String(attemptErrorType(a)))
		span.SetStatus(codes.Error, desc)
	}
	span.End(trace.WithTimestamp(a.Start.Add(a.Latency)))
}

// attemptErrorType is the error.type of a failed attempt: the ErrorCode,
// the HTTP status, or "transport".
func attemptErrorType(a sender.Attempt) string {
	switch {
	case a.Code > 0:
		return strconv.Itoa(a.Code)
	case a.HTTPStatus != 0 && a.HTTPStatus != 200:
		return strconv.Itoa(a.HTTPStatus)
	}
	return "transport"
}

// write starts the span of a write to topic (dead letters, receipts) as a
// child of parent, with attrs besides the messaging ones.
func (t *tracing) write(parent trace.Span, topic string, attrs ...attribute.KeyValue) trace.Span {
	if t == nil || parent == nil {
		return nil
	}
	ctx := trace.ContextWithSpan(context.Background(), parent)
	_, span := t.tracer.Start(ctx, "send "+topic, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("send"),
		semconv.MessagingDestinationName(topic),
	), trace.WithAttributes(attrs...))
	return span
}

// end ends span (nil: nothing), with an error status when err is set.
func end(span trace.Span, err error, attrs ...attribute.KeyValue) {
	if span == nil {
		return
	}
	span.SetAttributes(attrs...)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// eventTraceFields are the log fields of one event's trace: its span's
// trace_id and span_id, or with tracing off the trace_id of the trace
// context in its headers (the one publish prints), if any.
func (w *Worker) eventTraceFields(m *record) []zap.Field {
	if m.Span != nil {
		return traceFields(m.Span)
	}
	sc := trace.SpanContextFromContext(w.recordContext(m.Msg))
	if !sc.IsValid() {
		return nil
	}
	return []zap.Field{zap.String("trace_id", sc.TraceID().String())}
}

// traceFields are the log fields naming span: trace_id and span_id.
func traceFields(span trace.Span) []zap.Field {
	if span == nil {
		return nil
	}
	sc := span.SpanContext()
	if !sc.IsValid() {
		return nil
	}
	return []zap.Field{zap.String("trace_id", sc.TraceID().String()), zap.String("span_id", sc.SpanID().String())}
}
