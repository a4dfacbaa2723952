// Package call holds what a record's path through the worker carries: a
// fetched record decoded once (Record), an API call for one or more of
// them (Call) and how it ended (Result), and the one Observer each call
// carries, which follows its life: a record joining it, every attempt,
// the outcome, receipts and the commit, and what each makes (spans,
// metrics, outcome logs, the outcome callback).
package call

import (
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

// Record is a fetched record, decoded once: its event, or why it cannot
// be one. It travels with its event from the fetch to the commit.
type Record struct {
	Msg kafka.Message
	At  time.Time // when it was fetched
	// Ev is the event; nil when the record is not one (Invalid says why)
	// or the mapping filtered it out.
	Ev       *wire.Event
	Invalid  *wire.InvalidEventError
	Filtered bool
	// Aged says Ev.ExpiresAt is the record's timestamp plus the worker's
	// MaxAge.
	Aged bool
	// Span is the event's span from fetch to commit; nil without tracing
	// or before the record joins a call.
	Span trace.Span
}

// Time is the record's timestamp, or when it was fetched when it has
// none.
func (r *Record) Time() time.Time {
	if r.Msg.Time.IsZero() {
		return r.At
	}
	return r.Msg.Time
}

// Bytes is what the record takes in memory, about: its key, value and
// event body.
func (r *Record) Bytes() int64 {
	n := int64(len(r.Msg.Key) + len(r.Msg.Value) + 200)
	if r.Ev != nil {
		n += int64(len(r.Ev.Body))
	}
	return n
}

// Result is how a call ended.
type Result int

// How a call ended; zero while it has not.
const (
	Delivered Result = iota + 1
	Invalid          // a lone record that is not an event: never sent
	Rejected         // the API rejected the call: *sender.Error in hand
	Expired          // a lone, never-sent event expired before its turn
	Exhausted        // retried longer than RetryMaxElapsed: given up
	Filtered         // the mapping output nothing for it: never sent
	// Unknown: an attempt's outcome stayed unknown past the server's
	// dedupe window; resending could show it twice.
	Unknown
	// Already: below the delivered log's watermark; never sent.
	Already
	// Removed: the apps file stopped naming the app before the call was
	// sent.
	Removed
)

// Call is one API call for one or more records (its members, in offset
// order), what the planner decided about it and, once settled, how it
// ended.
type Call struct {
	// Obs observes the call's life.
	Obs     *Observer
	Members []*Record
	Body    []byte
	Random  uint32 // the call's Random
	Log     *zap.Logger
	// Attempted says an earlier attempt may have reached the server (a
	// resumed call): it is then never dead-lettered as expired.
	Attempted bool
	// InFlight says to record the call as in flight (committed-offset
	// metadata) before its first attempt.
	InFlight bool
	// Pack, if set, grows the call when its first slot comes (merge mode).
	Pack func()
	// Recorded says the delivery is already on record (a resumed call
	// recorded as delivered): only its receipts and commit remain.
	Recorded bool
	// Uncertain follows the call's attempts with an unknown outcome, from
	// this member's and, through the delivered log, an earlier owner's;
	// UnknownChecked says the delivered log was asked, UnknownRecorded
	// that this member recorded one there.
	Uncertain                       sender.Uncertain
	UnknownChecked, UnknownRecorded bool

	Res      Result
	Err      *sender.Error // for Rejected, Unknown and Exhausted
	Attempts int
	MsgSeq   uint64
	// First is the first attempt's start, At the last attempt's start,
	// Final the OK answer's arrival; zero without attempts.
	First, At, Final time.Time
	// Span is a merged call's own span, linked to its members'; nil for a
	// lone event (its attempts are children of the event's span).
	Span trace.Span
}

// FirstOffset is the offset of the call's first record.
func (c *Call) FirstOffset() int64 { return c.Members[0].Msg.Offset }

// LastOffset is the offset of the call's last record.
func (c *Call) LastOffset() int64 { return c.Members[len(c.Members)-1].Msg.Offset }

// Failure is the dead-letter failure of member m of c: not an event,
// expired before its turn, rejected by the API, or given up.
func (c *Call) Failure(m *Record) wire.Failure {
	switch c.Res {
	case Invalid:
		ie := m.Invalid
		return wire.Failure{Reason: ie.Reason, Code: ie.Code, Info: ie.Msg, Field: ie.Field}
	case Expired:
		if m.Aged {
			return wire.Failure{Reason: wire.ReasonExpired, Random: m.Ev.Message.Random, Field: "TIM_MAX_AGE",
				Info: "event older than TIM_MAX_AGE by its record timestamp " + m.Msg.Time.UTC().Format(time.RFC3339) +
					" when its turn came (" + m.Ev.ExpiresAt.UTC().Format(time.RFC3339) + ")"}
		}
		return wire.Failure{Reason: wire.ReasonExpired, Random: m.Ev.Message.Random,
			Info: "event expired at " + m.Ev.ExpiresAt.UTC().Format(time.RFC3339) + " before its turn came"}
	case Removed:
		f := wire.Failure{Reason: wire.ReasonUnknownApp, Field: "TIM_APPS_FILE",
			Info: "app " + wire.Printable(c.Obs.Label) + " was removed from the apps file before this event was sent"}
		if m.Ev != nil {
			f.Random = m.Ev.Message.Random
		}
		return f
	case Unknown:
		return wire.Failure{Reason: sender.ReasonOutcomeUnknown, Class: sender.ClassReject.String(), Code: c.Err.Code,
			Info: c.Err.Info, Attempts: c.Attempts, Random: m.Ev.Message.Random}
	case Exhausted:
		return wire.Failure{Reason: sender.ReasonRetryExhausted, Class: sender.ClassRetry.String(), Code: c.Err.Code,
			Info:     "gave up retrying after TIM_RETRY_MAX_ELAPSED (an attempt may have been delivered): " + c.Err.Info,
			Attempts: c.Attempts, Random: m.Ev.Message.Random}
	}
	return wire.Failure{Reason: c.Err.Reason(), Code: c.Err.Code, Info: c.Err.Info, Field: c.Err.Field, Attempts: c.Attempts,
		Random: m.Ev.Message.Random}
}
