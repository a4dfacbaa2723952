package wire

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// ReceiptSchema is the schema tag of a receipt (Receipt.Schema).
const ReceiptSchema = "timbroadcast/receipt/v1"

// Receipt outcomes.
const (
	OutcomeDelivered    = "delivered"
	OutcomeDeadLettered = "dead_lettered"
	// OutcomeFiltered: the mapping (TIM_MAP) output nothing for the
	// record; it was committed and never sent.
	OutcomeFiltered = "filtered"
	// OutcomeAlreadyDelivered: the delivered log says the record was
	// delivered before (by another group, or before its offsets were reset
	// or expired); it was committed and not sent again.
	OutcomeAlreadyDelivered = "already_delivered"
)

// HeaderReceiptSchema is the receipt record header holding ReceiptSchema,
// so a consumer can route receipts without parsing them.
const HeaderReceiptSchema = "timbroadcast-receipt-schema"

// TraceHeaders are the W3C trace-context headers (and baggage) a receipt
// copies from its event by default, so the receipt joins the event's trace;
// another propagation (OTEL_PROPAGATORS) copies its own headers.
var TraceHeaders = []string{"traceparent", "tracestate", "baggage"}

// Receipt is the final outcome of one event, written to the receipt topic
// (keyed like the event) before the event's offset is committed. After a
// crash a receipt may be written again: Source identifies the event.
type Receipt struct {
	// Schema is ReceiptSchema.
	Schema string `json:"schema"`
	// Outcome is OutcomeDelivered, OutcomeDeadLettered, OutcomeFiltered or
	// OutcomeAlreadyDelivered.
	Outcome string `json:"outcome"`
	// Random is the event's own Random; 0 for a record that never decoded.
	Random uint32 `json:"random"`
	// CallRandom is the Random of the call that carried the event: equal
	// to Random when the event went alone, the merged call's otherwise.
	// The server dedupes on it and answers MsgSeq for it.
	CallRandom uint32 `json:"call_random,omitempty"`
	// MsgSeq is the API's MsgSeq of the delivering call.
	MsgSeq uint64 `json:"msg_seq,omitempty"`
	// Attempts is the number of API requests made for the event's call.
	Attempts int `json:"attempts"`
	// CallEvents is how many events shared the call (1 when alone; 0 when
	// no call was made).
	CallEvents int `json:"call_events"`
	// ProducedAt is the record's timestamp.
	ProducedAt *time.Time `json:"produced_at,omitempty"`
	// FirstAttemptAt is when the first API request was sent.
	FirstAttemptAt *time.Time `json:"first_attempt_at,omitempty"`
	// CallAt is when the delivering request was sent.
	CallAt *time.Time `json:"call_at,omitempty"`
	// FinalAt is when the outcome became final: the API's OK answer, or
	// the dead-letter write's acknowledgement.
	FinalAt time.Time `json:"final_at"`
	// ProduceToCallMillis is CallAt minus ProducedAt, in milliseconds.
	ProduceToCallMillis *float64 `json:"produce_to_call_ms,omitempty"`
	// App and SDKAppID name the event's app (several apps in one
	// deployment: the apps file's name; one app: its SDKAppID alone).
	App      string `json:"app,omitempty"`
	SDKAppID uint64 `json:"sdkappid,omitempty"`
	// Source is where the event came from: the key to dedupe receipts on.
	Source ReceiptSource `json:"source"`
	// DeadLetter describes a dead-lettered event's failure.
	DeadLetter *ReceiptDeadLetter `json:"dead_letter,omitempty"`
}

// ReceiptSource is the record a receipt is about.
type ReceiptSource struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
}

// ReceiptDeadLetter is the failure of a dead-lettered event: the same
// facts as its dead-letter record's headers.
type ReceiptDeadLetter struct {
	// Topic is the dead-letter topic written to.
	Topic string `json:"topic"`
	// Reason is the machine-readable reason (the dlq-reason header).
	Reason string `json:"reason"`
	// Code is the API ErrorCode, 0 when the API was not called.
	Code int `json:"code"`
	// Info is the human-readable description.
	Info string `json:"info,omitempty"`
	// Field is the offending field or header, when known.
	Field string `json:"field,omitempty"`
}

// ReceiptFor starts the receipt of record m: schema, source and times.
func ReceiptFor(m kafka.Message, outcome string, final time.Time) Receipt {
	r := Receipt{Schema: ReceiptSchema, Outcome: outcome, FinalAt: final.UTC(),
		Source: ReceiptSource{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset}}
	if !m.Time.IsZero() {
		t := m.Time.UTC()
		r.ProducedAt = &t
	}
	return r
}

// SetCall records the call that carried the event.
func (r *Receipt) SetCall(random uint32, events, attempts int, first, call time.Time) {
	r.CallRandom, r.CallEvents, r.Attempts = random, events, attempts
	if !first.IsZero() {
		t := first.UTC()
		r.FirstAttemptAt = &t
	}
	if !call.IsZero() {
		t := call.UTC()
		r.CallAt = &t
		if r.ProducedAt != nil {
			ms := float64(call.Sub(*r.ProducedAt).Microseconds()) / 1000
			r.ProduceToCallMillis = &ms
		}
	}
}

// ReceiptDeadLetterOf returns the receipt's view of a dead-letter failure.
func ReceiptDeadLetterOf(topic string, f Failure) *ReceiptDeadLetter {
	return &ReceiptDeadLetter{Topic: topic, Reason: f.Reason, Code: f.Code, Info: f.cutInfo(), Field: f.cutField()}
}

// MaxTraceHeaderBytes is the longest trace header a receipt copies (the
// W3C limit of tracestate is 512 characters): a longer one is left out.
const MaxTraceHeaderBytes = 512

// ReceiptMessage returns the receipt record of event record m: keyed like
// m (by its KeyDigest when longer than MaxKeyBytes, so a receipt always
// fits), carrying m's trace headers (those named in traceHeaders, matched
// case-insensitively; nil means TraceHeaders; none longer than
// MaxTraceHeaderBytes) and HeaderReceiptSchema.
func ReceiptMessage(m kafka.Message, r Receipt, traceHeaders []string) (kafka.Message, error) {
	if traceHeaders == nil {
		traceHeaders = TraceHeaders
	}
	value, err := json.Marshal(r)
	if err != nil {
		return kafka.Message{}, fmt.Errorf("encode receipt: %w", err)
	}
	headers := []kafka.Header{{Key: HeaderReceiptSchema, Value: []byte(ReceiptSchema)}}
	for _, h := range m.Headers {
		for _, name := range traceHeaders {
			if strings.EqualFold(h.Key, name) && len(h.Value) <= MaxTraceHeaderBytes {
				headers = append(headers, kafka.Header{Key: name, Value: h.Value})
			}
		}
	}
	return kafka.Message{Key: boundKey(m.Key), Value: value, Headers: headers}, nil
}

// DecodeReceipt parses a receipt record's value, refusing another schema.
func DecodeReceipt(b []byte) (Receipt, error) {
	var r Receipt
	if err := json.Unmarshal(b, &r); err != nil {
		return Receipt{}, fmt.Errorf("decode receipt: %w", err)
	}
	if r.Schema != ReceiptSchema {
		return Receipt{}, fmt.Errorf("decode receipt: schema %q, want %q", r.Schema, ReceiptSchema)
	}
	return r, nil
}
