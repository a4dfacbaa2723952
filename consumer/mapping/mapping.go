// Package mapping turns a team's own domain events into broadcast events
// with a jq program (TIM_MAP), run by github.com/itchyny/gojq: the program
// filters (no output, or null: the record is skipped) and maps (one object
// in the event format, or a string for one text element).
//
// A mapping must be a pure function of the record: the event's Random is
// derived from the record's key and the mapped event, so every attempt,
// redelivery and replay must map to the same bytes. Compile therefore
// refuses what can answer differently for one record (now, localtime,
// $ENV, env, input, inputs, input_filename and the like).
//
// It knows nothing of Kafka or of the API: it maps values.
package mapping

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strings"
	"time"

	"github.com/itchyny/gojq"
)

// Variables are the names a program may use besides `.`.
var Variables = []string{"$key", "$headers", "$topic", "$partition", "$offset", "$timestamp"}

// impure lists the builtins that can answer differently for one record:
// the time now, the host's time zone, the environment, other inputs.
var impure = map[string]string{
	"now":               "the current time",
	"localtime":         "the host's time zone",
	"strflocaltime":     "the host's time zone",
	"$ENV":              "the process environment",
	"env":               "the process environment",
	"input":             "the next input",
	"inputs":            "the other inputs",
	"input_filename":    "the input file",
	"input_line_number": "the input position",
	"$__prog_args":      "the program's arguments",
	"halt":              "halting the process",
	"halt_error":        "halting the process",
}

// A program runs on record data a producer chose, so how long it runs and
// how much it writes depend on that data (last(range(.n)) with n = 10^15):
// each run is bounded by a deadline and its output by a size.
const (
	// DefaultTimeout is a run's deadline when none is set: thousands of
	// times what a mapping of one event takes.
	DefaultTimeout = 500 * time.Millisecond
	// DefaultMaxOutputBytes caps a run's output: an event's request body
	// is at most 12,000 bytes, so an output this large is never one.
	DefaultMaxOutputBytes = 64 << 10
)

// Program is a compiled mapping.
type Program struct {
	code *gojq.Code
	// Timeout bounds one run (DefaultTimeout when zero); a run past it is
	// an *Error naming the limit.
	Timeout time.Duration
	// MaxOutputBytes bounds one run's output (DefaultMaxOutputBytes when
	// zero).
	MaxOutputBytes int
}

// Compile parses and compiles src, refusing a program that uses an
// unknown variable or a builtin that makes it impure.
func Compile(src string) (*Program, error) {
	q, err := gojq.Parse(src)
	if err != nil {
		return nil, fmt.Errorf("syntax: %w", err)
	}
	if name := impureUse(q); name != "" {
		return nil, fmt.Errorf("uses %s (%s): a mapping must give the same event for the same record every time, "+
			"since the event's Random is derived from it", name, impure[name])
	}
	code, err := gojq.Compile(q, gojq.WithVariables(Variables), gojq.WithEnvironLoader(func() []string { return nil }))
	if err != nil {
		return nil, err
	}
	return &Program{code: code}, nil
}

// impureUse returns the first impure builtin q calls (one it does not
// define itself), or "".
func impureUse(q *gojq.Query) string {
	defined := map[string]bool{}
	var called []string
	walk(reflect.ValueOf(q), func(v any) {
		switch n := v.(type) {
		case *gojq.FuncDef:
			defined[n.Name] = true
		case *gojq.Func:
			called = append(called, n.Name)
		}
	})
	for _, name := range called {
		if _, ok := impure[name]; ok && !defined[name] {
			return name
		}
	}
	return ""
}

// walk calls fn with every pointer to a struct reachable from v.
func walk(v reflect.Value, fn func(any)) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return
		}
		if v.Elem().Kind() == reflect.Struct {
			fn(v.Interface())
		}
		walk(v.Elem(), fn)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				walk(v.Field(i), fn)
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			walk(v.Index(i), fn)
		}
	}
}

// Input is one record as a program sees it.
type Input struct {
	// Value is the record's value, decoded (JSON, or a Schema Registry
	// format turned into JSON values).
	Value any
	// Key is the record key; nil for a record without one.
	Key       []byte
	Headers   map[string][]byte
	Topic     string
	Partition int
	Offset    int64
	Timestamp time.Time
}

// Error is a record the program cannot map: a runtime error, or an output
// that is not an event. It dead-letters the record (reason map_failed).
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

// Map runs the program on in. It returns the event's JSON (sorted keys,
// so the same record always gives the same bytes), or nil when the
// program output nothing or null (the record is skipped), or an *Error.
func (p *Program) Map(in Input) (out []byte, err error) {
	defer func() {
		// gojq panics on a value type it does not know; a decoder bug must
		// not stop the partition: the record is dead-lettered with why.
		if r := recover(); r != nil {
			out, err = nil, &Error{Msg: fmt.Sprintf("jq: %v", r)}
		}
	}()
	var key any
	if in.Key != nil {
		key = string(in.Key)
	}
	headers := make(map[string]any, len(in.Headers))
	for k, v := range in.Headers {
		headers[k] = string(v)
	}
	var ts any
	if !in.Timestamp.IsZero() {
		ts = in.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	timeout := cmp.Or(p.Timeout, DefaultTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	iter := p.code.RunWithContext(ctx, normalize(in.Value), key, headers, in.Topic, in.Partition, int(in.Offset), ts)
	var outs []any
	for {
		v, ok := iter.Next()
		if !ok {
			break
		}
		if err, ok := v.(error); ok {
			var halt *gojq.HaltError
			switch {
			case errors.As(err, &halt) && halt.Value() == nil:
			case errors.Is(err, context.DeadlineExceeded):
				return nil, &Error{Msg: fmt.Sprintf("the program ran longer than its limit of %v per record (TIM_MAP_TIMEOUT)", timeout)}
			default:
				return nil, &Error{Msg: "jq: " + err.Error()}
			}
			break
		}
		outs = append(outs, v)
		if len(outs) > 1 {
			return nil, &Error{Msg: fmt.Sprintf("the program gave more than one output (%s, %s, ...); a record maps to one event or none",
				preview(outs[0]), preview(outs[1]))}
		}
	}
	if len(outs) == 0 || outs[0] == nil {
		return nil, nil
	}
	limit := cmp.Or(p.MaxOutputBytes, DefaultMaxOutputBytes)
	tooLarge := func(b []byte) ([]byte, error) {
		if len(b) > limit {
			return nil, &Error{Msg: fmt.Sprintf("the program's output is %d bytes, over its limit of %d (TIM_MAP_MAX_OUTPUT_BYTES)", len(b), limit)}
		}
		return b, nil
	}
	switch out := outs[0].(type) {
	case string:
		if len(out) > limit {
			return tooLarge([]byte(out))
		}
		// A string is shorthand for one text element.
		return json.Marshal(map[string]any{"MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": out}}}})
	case map[string]any:
		b, err := gojq.Marshal(out)
		if err != nil {
			return nil, &Error{Msg: "encode the output: " + err.Error()}
		}
		return tooLarge(b)
	default:
		return nil, &Error{Msg: fmt.Sprintf("the program gave %s (%s), want an object in the event format, a string, null or nothing",
			gojq.TypeOf(out), preview(out))}
	}
}

// preview is a short form of v for messages.
func preview(v any) string {
	s := gojq.Preview(v)
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

// normalize turns values decoded by encoding/json (json.Number) or built
// by a schema decoder into the types gojq takes.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
		return x
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return int(i)
		}
		f, _ := x.Float64()
		return f
	}
	// Fixed-size numbers a schema decoder builds (int64, int32, float32,
	// ...): gojq takes int, float64 and *big.Int.
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return int(rv.Int())
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		if u := rv.Uint(); u <= math.MaxInt64 {
			return int(u)
		}
		return new(big.Int).SetUint64(rv.Uint())
	case reflect.Float32:
		return rv.Float()
	}
	return v
}

// ParseJSON decodes a record value for a program: JSON, numbers kept
// exact where they are integers.
func ParseJSON(b []byte) (any, error) {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("more than one JSON value")
	}
	return normalize(v), nil
}
