package sender

import (
	"fmt"
	"strconv"
)

// Class says what a caller should do with a failed send.
type Class int

const (
	// ClassRetry: the failure is transient; the same request (same Random,
	// same bytes) may succeed later. Returned by Send only when its retry
	// budget or context ran out.
	ClassRetry Class = iota + 1
	// ClassPause: every message would fail the same way (permission,
	// configuration, credentials); stop sending, alert, and try again later.
	ClassPause
	// ClassReject: this message alone can never succeed; dead-letter it.
	ClassReject
)

// String returns the class name used in logs, metrics and dead-letter
// headers: "retry", "pause" or "reject".
func (c Class) String() string {
	switch c {
	case ClassRetry:
		return "retry"
	case ClassPause:
		return "pause"
	case ClassReject:
		return "reject"
	}
	return "unknown"
}

// API error codes the client treats specially. The full classification is
// in Classify.
const (
	CodeOK               = 0
	CodeInternal         = 10002
	CodeInvalidCommand   = 10003
	CodeInvalidParameter = 10004
	CodeNoPermission     = 10007
	CodeFrequencyLimit   = 10023
	CodeSigExpired       = 70001
	CodeSigInvalid       = 70003
	CodeBadRequest       = 60003
	CodeBodyTooLong      = 80002
	CodeContentBlocked   = 80001
)

// action is what the client does with one answer; several actions map
// to one Class the caller sees (renewing a signature is still "retry").
type action int

const (
	// actRetry: retry the same request after a backoff.
	actRetry action = iota + 1
	// actRenewSig: the signature expired; renew it and retry at once.
	actRenewSig
	// actBadSig: the signature is missing or invalid; renew it once, and
	// pause if the server still refuses it.
	actBadSig
	// actPause: pause the whole worker.
	actPause
	// actReject: the message can never succeed.
	actReject
	// actUnknown: an undocumented code; retry a bounded number of times,
	// then reject.
	actUnknown
)

var actions = map[int]action{}

func init() {
	set := func(k action, codes ...int) {
		for _, c := range codes {
			actions[c] = k
		}
	}
	set(actRetry, 10002, 10023, 10006, 60007, 60011, 60018, 60019, 60008, 60013, 60014, 70169, 70500)
	set(actRenewSig, 70001, 70052)
	set(actBadSig, 70002, 70003, 70005, 60004, 60005)
	set(actPause, 10007, 10026, 60006, 60012, 60016, 60017, 60020, 60021, 60010, 70403, 70013, 70014, 70020, 10003)
	set(actReject, 10004, 60002, 60003, 60015, 70402, 80001, 80002)
}

// Classify returns how an API ErrorCode is treated (tim-api.md's table).
// Code 0 is success and is not classified.
func classify(code int) action {
	if k, ok := actions[code]; ok {
		return k
	}
	return actUnknown
}

// Error is a failed send. Callers act on Class with errors.As:
//
//	var se *sender.Error
//	if errors.As(err, &se) && se.Class == sender.ClassReject { ... }
//
// It never holds the secret key or the UserSig.
type Error struct {
	// Class is what the caller should do.
	Class Class
	// Code is the API's ErrorCode, 0 for failures below the API (network,
	// HTTP status) and for the context ending.
	Code int
	// Info is the API's ErrorInfo, or a description of the failure.
	Info string
	// Field names the offending field of a message that failed validation.
	Field string
	// HTTPStatus is the HTTP status of the last answer, 0 if none arrived.
	HTTPStatus int
	// Attempts is the number of HTTP requests made for this send.
	Attempts int
	// Err is the underlying cause, if any (already redacted).
	Err error
}

func (e *Error) Error() string {
	msg := "send_broadcast_msg " + e.Class.String()
	if e.Code != 0 {
		msg += " (code " + strconv.Itoa(e.Code) + ")"
	}
	if e.Info != "" {
		msg += ": " + e.Info
	}
	if e.Err != nil && (e.Info == "" || e.Info != e.Err.Error()) {
		msg += ": " + e.Err.Error()
	}
	if e.Attempts > 0 {
		msg += fmt.Sprintf(" [%d attempt(s)]", e.Attempts)
	}
	return msg
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Reason is a short machine-readable reason for dead-letter records and
// metrics: "invalid_event", "body_too_long", "content_blocked",
// "api_rejected", "unknown_error", or the class name.
func (e *Error) Reason() string {
	switch {
	case e.Class != ClassReject:
		return e.Class.String()
	case e.Code == CodeBodyTooLong:
		return "body_too_long"
	case e.Field != "":
		return "invalid_event"
	case e.Code == CodeContentBlocked:
		return "content_blocked"
	case classify(e.Code) == actUnknown:
		return "unknown_error"
	}
	return "api_rejected"
}
