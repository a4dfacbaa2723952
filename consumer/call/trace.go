package call

import (
	"context"
	"net/url"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

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

// Tracing makes the worker's spans: one per event from fetch to commit
// (Worker.eventSpan, its parent the record's trace context), one per API
// attempt, one per dead-letter and receipt write, and for a merged call a
// call span linked to every member. Without a tracer provider it makes none and costs
// nothing.
type Tracing struct {
	tracer     trace.Tracer // nil: no spans
	prop       propagation.TextMapPropagator
	group      string
	linkRecord bool
}

// NewTracing returns the spans of tp (nil: none) for the worker of
// consumer group group, reading a record's trace context with prop; with
// linkRecord that context is a link of the event's span, not its parent.
func NewTracing(tp trace.TracerProvider, prop propagation.TextMapPropagator, group string, linkRecord bool) *Tracing {
	t := &Tracing{prop: prop, group: group, linkRecord: linkRecord}
	if tp != nil {
		t.tracer = tp.Tracer(TracerName)
	}
	return t
}

// On reports whether spans are made.
func (t *Tracing) On() bool { return t.tracer != nil }

// recordContext is the trace context in a record's headers, as the
// worker's propagator reads it.
func (t *Tracing) recordContext(m kafka.Message) context.Context {
	return t.prop.Extract(context.Background(), wire.HeaderCarrier{Headers: &m.Headers})
}

// eventSpan starts the span of one event at the time it was fetched, its
// parent the record's trace context; nil without tracing.
func (t *Tracing) eventSpan(m kafka.Message, fetched time.Time) trace.Span {
	if t.tracer == nil {
		return nil
	}
	parent := t.recordContext(m)
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(fetched),
		trace.WithAttributes(
			semconv.MessagingSystemKafka,
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("process"),
			semconv.MessagingDestinationName(m.Topic),
			semconv.MessagingDestinationPartitionID(strconv.Itoa(m.Partition)),
			semconv.MessagingKafkaOffset(int(m.Offset)),
			semconv.MessagingKafkaMessageKey(spanKey(m.Key)),
			semconv.MessagingConsumerGroupName(t.group),
			semconv.MessagingMessageBodySize(len(m.Value)),
		)}
	if t.linkRecord {
		// The producer's trace context is a link, not the parent: the
		// worker's own sampler decides, whatever the record says.
		if sc := trace.SpanContextFromContext(parent); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
		parent = context.Background()
	}
	_, span := t.tracer.Start(parent, "process "+m.Topic, opts...)
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

// Call starts the span of a merged call, linked to every member's span;
// each member's span links back to it.
func (t *Tracing) Call(members []*Record, random uint32) trace.Span {
	if t.tracer == nil {
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
func (t *Tracing) attempt(parent trace.Span, a sender.Attempt, random uint32) {
	if t.tracer == nil || parent == nil {
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

// Write starts the span of a write to topic (dead letters, receipts) as a
// child of parent, with attrs besides the messaging ones.
func (t *Tracing) Write(parent trace.Span, topic string, attrs ...attribute.KeyValue) trace.Span {
	if t.tracer == nil || parent == nil {
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

// End ends span (nil: nothing), with an error status when err is set.
func End(span trace.Span, err error, attrs ...attribute.KeyValue) {
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

// EventTraceFields are the log fields of one event's trace: its span's
// trace_id and span_id, or with tracing off the trace_id of the trace
// context in its headers (the one publish prints), if any.
func (t *Tracing) EventTraceFields(m *Record) []zap.Field {
	if m.Span != nil {
		return TraceFields(m.Span)
	}
	sc := trace.SpanContextFromContext(t.recordContext(m.Msg))
	if !sc.IsValid() {
		return nil
	}
	return []zap.Field{zap.String("trace_id", sc.TraceID().String())}
}

// TraceFields are the log fields naming span: trace_id and span_id.
func TraceFields(span trace.Span) []zap.Field {
	if span == nil {
		return nil
	}
	sc := span.SpanContext()
	if !sc.IsValid() {
		return nil
	}
	return []zap.Field{zap.String("trace_id", sc.TraceID().String()), zap.String("span_id", sc.SpanID().String())}
}
