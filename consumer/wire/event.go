package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/timbroadcast/timbroadcast/dedupe"
	"github.com/timbroadcast/timbroadcast/sender"
)

// Dead-letter reasons for events that never reach the API. Reasons for
// events the API refused come from sender.Error.Reason.
const (
	ReasonInvalidJSON  = "invalid_json"
	ReasonInvalidEvent = "invalid_event"
	ReasonExpired      = "expired"
	// ReasonMapFailed: the mapping (TIM_MAP) failed on the record or gave
	// something that is not an event; the info header holds jq's error.
	ReasonMapFailed = "map_failed"
	// ReasonSchemaNotFound: the record names a Schema Registry schema id
	// the registry does not know.
	ReasonSchemaNotFound = "schema_not_found"
	// ReasonDecodeFailed: the record's bytes do not decode with the schema
	// they name.
	ReasonDecodeFailed = "decode_failed"
	// ReasonTooLarge: the record (or its batch) is over a limit of the
	// worker (KAFKA_MAX_RECORD_BYTES, KAFKA_MAX_BATCH_BYTES); the dead
	// letter holds where it is, not the record.
	ReasonTooLarge = "too_large"
	// ReasonUnknownApp: the record names no app the apps file holds (by
	// topic, the mapping's app, the timbroadcast-app header or
	// default_app); the info says the value it named.
	ReasonUnknownApp = "unknown_app"
	// ReasonWrongApp: the record is on a topic that belongs to one app
	// (its topics in the apps file) but names another.
	ReasonWrongApp = "wrong_app"
)

// Event is a decoded, validated broadcast event.
type Event struct {
	// App is the app the mapping's output named (its field app, a name
	// or an SDKAppID), removed from the message; "" when it named none.
	App string
	// Message is the API request, Random filled in.
	Message sender.Message
	// Body is the request body to send: the same bytes on every attempt.
	Body []byte
	// ExpiresAt is the time after which the event must not be sent; zero
	// when the record has no expiry header.
	ExpiresAt time.Time
}

// Expired reports whether the event carries an expiry that has passed at
// now.
func (e *Event) Expired(now time.Time) bool {
	return !e.ExpiresAt.IsZero() && !now.Before(e.ExpiresAt)
}

// Record is what DecodeEvent needs of a Kafka record.
type Record struct {
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte
	// Headers are the record headers by key (the last value wins).
	Headers map[string][]byte
}

// InvalidEventError says why a record cannot become a broadcast.
type InvalidEventError struct {
	// Reason is one of the Reason* constants or a sender.Error reason.
	Reason string
	// Code is the API error code the server would answer, if any.
	Code int
	// Field names the offending field or header.
	Field string
	// Msg describes the problem.
	Msg string
}

func (e *InvalidEventError) Error() string { return e.Reason + ": " + e.Msg }

// DecodeEvent turns a record into an event: it parses the value (a JSON
// object with the API's field names: MsgBody, From_Account,
// CloudCustomData, and optionally Random), rejects unknown fields, derives
// the stable Random when none is given, and validates the message as the
// API would. The failure is an *InvalidEventError.
func DecodeEvent(r Record) (*Event, error) {
	ev := &Event{}
	if v, ok := r.Headers[HeaderExpiresAt]; ok {
		t, err := time.Parse(time.RFC3339, strings.TrimSpace(string(v)))
		if err != nil {
			return nil, &InvalidEventError{Reason: ReasonInvalidEvent, Field: HeaderExpiresAt,
				Msg: fmt.Sprintf("header %s %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", HeaderExpiresAt, v)}
		}
		ev.ExpiresAt = t
	}

	var fields map[string]json.RawMessage
	if err := json.Unmarshal(r.Value, &fields); err != nil || fields == nil {
		msg := "record value is not a JSON object"
		if err != nil {
			msg += ": " + err.Error()
		}
		return nil, &InvalidEventError{Reason: ReasonInvalidJSON, Msg: msg}
	}
	var unknown []string
	for name := range fields {
		if !sender.IsBodyField(name) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, &InvalidEventError{Reason: ReasonInvalidEvent, Field: unknown[0],
			Msg: "unknown field(s) " + strings.Join(unknown, ", ") + " (an event holds MsgBody, From_Account, CloudCustomData and Random)"}
	}
	m := &ev.Message
	if err := decodeField(fields, "From_Account", &m.FromAccount, "a string"); err != nil {
		return nil, err
	}
	if err := decodeField(fields, "CloudCustomData", &m.CloudCustomData, "a string"); err != nil {
		return nil, err
	}
	if raw, ok := fields["MsgBody"]; !ok || isNull(raw) {
		return nil, &InvalidEventError{Reason: ReasonInvalidEvent, Code: sender.CodeInvalidParameter, Field: "MsgBody", Msg: "MsgBody is required"}
	}
	var elems []map[string]json.RawMessage
	if err := decodeField(fields, "MsgBody", &elems, "an array of message elements (objects with MsgType and MsgContent)"); err != nil {
		return nil, err
	}
	for i, el := range elems {
		for name := range el {
			if name != "MsgType" && name != "MsgContent" {
				return nil, &InvalidEventError{Reason: ReasonInvalidEvent, Code: sender.CodeInvalidParameter,
					Field: fmt.Sprintf("MsgBody[%d].%s", i, name),
					Msg:   fmt.Sprintf("MsgBody[%d] has unknown field %s (an element holds MsgType and MsgContent)", i, name)}
			}
		}
	}
	if err := decodeField(fields, "MsgBody", &m.MsgBody, "an array of message elements"); err != nil {
		return nil, err
	}
	for i, el := range m.MsgBody {
		if len(el.MsgContent) > 0 {
			var buf bytes.Buffer
			if err := json.Compact(&buf, el.MsgContent); err == nil {
				m.MsgBody[i].MsgContent = buf.Bytes()
			}
		}
	}
	explicitRandom := false
	if raw, ok := fields["Random"]; ok && !isNull(raw) {
		n, err := strconv.ParseUint(string(raw), 10, 32)
		if err != nil {
			return nil, &InvalidEventError{Reason: ReasonInvalidEvent, Code: sender.CodeInvalidParameter, Field: "Random",
				Msg: fmt.Sprintf("Random %s is not an unsigned 32-bit integer", raw)}
		}
		m.Random = uint32(n)
		explicitRandom = true
	}

	// Validate and encode with Random 0: that is the content the Random is
	// derived from (dedupe's contract).
	given := m.Random
	m.Random = 0
	content, err := m.Encode()
	if err != nil {
		var se *sender.Error
		if errors.As(err, &se) {
			return nil, &InvalidEventError{Reason: se.Reason(), Code: se.Code, Field: se.Field, Msg: se.Info}
		}
		return nil, &InvalidEventError{Reason: ReasonInvalidEvent, Msg: err.Error()}
	}
	if explicitRandom {
		m.Random = given
	} else {
		m.Random = dedupe.Random(dedupe.Identity(r.Key, r.Topic, r.Partition, r.Offset), content)
	}
	body, err := m.Encode()
	if err != nil {
		// Only the size can change with Random's digits.
		var se *sender.Error
		errors.As(err, &se)
		return nil, &InvalidEventError{Reason: se.Reason(), Code: se.Code, Field: se.Field, Msg: se.Info}
	}
	ev.Body = body
	return ev, nil
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

func decodeField(fields map[string]json.RawMessage, name string, dst any, want string) error {
	raw, ok := fields[name]
	if !ok || isNull(raw) {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return &InvalidEventError{Reason: ReasonInvalidEvent, Code: sender.CodeInvalidParameter, Field: name,
			Msg: fmt.Sprintf("%s must be %s", name, want)}
	}
	return nil
}
