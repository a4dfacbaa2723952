// Package decode turns a record into an event, in one place, the same
// way for the worker and for timbroadcast map: Schema Registry values by
// their schema, then the mapping (TIM_MAP), then the event format
// (wire.DecodeEvent).
package decode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/mapping"
	"github.com/timbroadcast/timbroadcast/consumer/schema"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// SchemaDecoder decodes record values in the Confluent Schema Registry
// wire format into JSON values (*schema.Decoder implements it). A
// *wire.InvalidEventError is the record's fault; any other error is
// retried.
type SchemaDecoder interface {
	Decode(ctx context.Context, value []byte) (any, error)
}

// Decoder turns a record into an event, in one place, the same way
// for the worker and for `timbroadcast map`: a value in the Schema
// Registry's wire format is decoded by its schema (Schemas), the result
// (or the value read as JSON) is mapped by the program (Map), and what
// comes out is read as an event (wire.DecodeEvent). Without either, the
// value is the event, as before.
type Decoder struct {
	// Map, if set, maps and filters every record (TIM_MAP).
	Map *mapping.Program
	// Schemas, if set, decodes Schema Registry values.
	Schemas SchemaDecoder
	// OnPanic, if set, sees a panic in decoding or mapping (its value and
	// stack) before the record is reported as decode_failed.
	OnPanic func(value any, stack []byte)
}

// Decode returns the record's event; or filtered (the mapping output
// nothing for it); or a *wire.InvalidEventError saying why the record can
// never be one (it is dead-lettered); or another error, which retrying
// may cure (the registry is unreachable).
//
// A panic anywhere in it (a decoder's or the mapping's bug, met by one
// record) is that record's failure, decode_failed, never a crash of the
// process that every next owner would meet again.
func (d Decoder) Decode(ctx context.Context, m kafka.Message) (ev *wire.Event, filtered bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			if d.OnPanic != nil {
				d.OnPanic(r, debug.Stack())
			}
			ev, filtered = nil, false
			err = &wire.InvalidEventError{Reason: wire.ReasonDecodeFailed,
				Msg: fmt.Sprintf("decoding or mapping the record panicked (the stack is in the worker's log): %v", r)}
		}
	}()
	rec := wire.RecordOf(m)
	if d.Map == nil && d.Schemas == nil {
		ev, err := wire.DecodeEvent(rec)
		return ev, false, err
	}
	var doc any
	var app string
	decoded := false
	if d.Schemas != nil && schema.IsWireFormat(m.Value) {
		if doc, err = d.Schemas.Decode(ctx, m.Value); err != nil {
			return nil, false, err
		}
		decoded = true
	}
	switch {
	case d.Map != nil:
		if !decoded {
			if doc, err = mapping.ParseJSON(m.Value); err != nil {
				return nil, false, &wire.InvalidEventError{Reason: wire.ReasonInvalidJSON, Msg: "the value is not JSON for the mapping: " + err.Error()}
			}
		}
		out, err := d.Map.Map(mapping.Input{Value: doc, Key: m.Key, Headers: rec.Headers, Topic: m.Topic, Partition: m.Partition,
			Offset: m.Offset, Timestamp: m.Time})
		var me *mapping.Error
		switch {
		case errors.As(err, &me):
			return nil, false, &wire.InvalidEventError{Reason: wire.ReasonMapFailed, Field: "TIM_MAP", Msg: me.Msg}
		case err != nil:
			return nil, false, err
		case out == nil:
			return nil, true, nil
		}
		if rec.Value, app, err = takeApp(out); err != nil {
			return nil, false, err
		}
	case decoded:
		// Without a mapping the decoded value must be an event.
		if rec.Value, err = json.Marshal(doc); err != nil {
			return nil, false, &wire.InvalidEventError{Reason: wire.ReasonDecodeFailed, Msg: err.Error()}
		}
	}
	ev, err = wire.DecodeEvent(rec)
	if ev != nil {
		ev.App = app
	}
	return ev, false, err
}

// takeApp removes the field app from a mapping's output (an event object)
// and returns it: a string, or a number (an SDKAppID). Anything else there
// is the record's fault (map_failed).
func takeApp(out []byte) ([]byte, string, error) {
	if !bytes.Contains(out, []byte(`"app"`)) {
		return out, "", nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(out, &fields); err != nil {
		return out, "", nil // DecodeEvent says what is wrong with it
	}
	raw, ok := fields["app"]
	if !ok {
		return out, "", nil
	}
	delete(fields, "app")
	var app string
	var n json.Number
	switch {
	case isJSONNull(raw):
	case json.Unmarshal(raw, &app) == nil:
	case json.Unmarshal(raw, &n) == nil:
		app = n.String()
	default:
		return nil, "", &wire.InvalidEventError{Reason: wire.ReasonMapFailed, Field: "app",
			Msg: "the mapping's field app must be an app's name or SDKAppID, not " + wire.Cut(string(raw), wire.MaxAppValue)}
	}
	b, err := json.Marshal(fields)
	if err != nil {
		return nil, "", &wire.InvalidEventError{Reason: wire.ReasonMapFailed, Msg: err.Error()}
	}
	return b, wire.Cut(app, wire.MaxAppValue), nil
}

func isJSONNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }
