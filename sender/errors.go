package sender

import (
	"fmt"
	"strconv"
	"time"
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

// API error codes the client names. The full classification is the
// error table below.
const (
	CodeOK               = 0
	CodeInternal         = 10002
	CodeInvalidCommand   = 10003
	CodeInvalidParameter = 10004
	CodeNoPermission     = 10007
	CodeAccountNotFound  = 10019
	CodeFrequencyLimit   = 10023
	CodeTimeout          = 60008
	CodeSigExpired       = 70001
	CodeSigInvalid       = 70003
	CodeSigLockedOut     = 70050
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
	// actRetryBounded: retry a few times (Config.UnknownRetries), then
	// pause: the answer is ambiguous between transient and an error every
	// request would hit (60008: "service timeout or malformed request").
	actRetryBounded
	// actRenewSig: the signature expired; renew it and retry at once. A
	// second expiry in a row pauses (the host clock is off).
	actRenewSig
	// actBadSig: the signature is missing or invalid; renew it once, and
	// pause if the server still refuses it.
	actBadSig
	// actPause: every message would fail the same way; pause the worker.
	actPause
	// actReject: this message can never succeed.
	actReject
	// actUnknown: an undocumented code; retry a bounded number of times,
	// then reject.
	actUnknown
)

// codeRule is one row of the error table.
type codeRule struct {
	act action
	// rateLimit marks a frequency-limit answer: the pacing slows down.
	rateLimit bool
	// minPause is the least wait before probing again after a pause.
	minPause time.Duration
	// meaning is the documented meaning, for logs and /readyz.
	meaning string
	// unsure says the answer does not prove the message was not
	// delivered: a server-side timeout or internal error may come after
	// the message went out (see Uncertain).
	unsure bool
}

// errorTable classifies every ErrorCode that Tencent Cloud Chat documents
// for this API (the REST API error-code table, the group error codes, the
// broadcast page), sorted by what it means for the worker. Sources: the
// public error-code pages (https://www.tencentcloud.com/document/product/1047/34348,
// https://cloud.tencent.com/document/product/269/1671) and the broadcast page
// (https://www.tencentcloud.com/document/product/1047/44242).
var errorTable = map[int]codeRule{
	// Retry: transient on the server's side.
	10002: {act: actRetry, unsure: true, meaning: "internal server error"},
	60013: {act: actRetry, unsure: true, meaning: "internal server timeout"},
	60014: {act: actRetry, unsure: true, meaning: "internal server timeout"},
	70169: {act: actRetry, unsure: true, meaning: "internal server timeout"},
	70500: {act: actRetry, unsure: true, meaning: "internal server error"},
	// Retry, and slow down: frequency limits.
	10006: {act: actRetry, rateLimit: true, meaning: "operation frequency limit"},
	10023: {act: actRetry, rateLimit: true, meaning: "send frequency limit"},
	60007: {act: actRetry, rateLimit: true, meaning: "REST API call frequency limit"},
	60011: {act: actRetry, rateLimit: true, meaning: "app call frequency limit"},
	60018: {act: actRetry, rateLimit: true, meaning: "request frequency limit"},
	60019: {act: actRetry, rateLimit: true, meaning: "request frequency limit"},
	// Retry a few times, then pause.
	60008: {act: actRetryBounded, unsure: true, meaning: "service timeout or malformed HTTP request"},
	// Signatures.
	70001: {act: actRenewSig, meaning: "UserSig expired"},
	70052: {act: actRenewSig, meaning: "UserSig expired"},
	70002: {act: actBadSig, meaning: "UserSig missing or too long"},
	70003: {act: actBadSig, meaning: "UserSig invalid"},
	70005: {act: actBadSig, meaning: "UserSig invalid"},
	60004: {act: actBadSig, meaning: "UserSig invalid"},
	60005: {act: actBadSig, meaning: "UserSig invalid"},
	// Pause: every event would get the same answer.
	10003: {act: actPause, meaning: "invalid command word (configuration bug)"},
	10007: {act: actPause, meaning: "no permission: broadcast messaging switched off in the console, identifier not an admin, or edition without the feature"},
	10026: {act: actPause, meaning: "command disabled for this app"},
	10059: {act: actPause, meaning: "the app's edition lacks this feature"},
	60006: {act: actPause, meaning: "app invalid or disabled"},
	60010: {act: actPause, meaning: "identifier is not an app admin"},
	60012: {act: actPause, meaning: "app disabled"},
	60016: {act: actPause, meaning: "app disabled"},
	60017: {act: actPause, meaning: "app not paid or expired"},
	60020: {act: actPause, meaning: "request IP not on the app's allow-list"},
	60021: {act: actPause, meaning: "request IP not allowed"},
	70009: {act: actPause, meaning: "signature check failed: the secret key does not match the SDKAppID"},
	70013: {act: actPause, meaning: "identifier does not match the UserSig"},
	70014: {act: actPause, meaning: "SDKAppID does not match the UserSig"},
	70016: {act: actPause, meaning: "no key for this SDKAppID in this data centre: wrong region (TIM_REGION)"},
	70020: {act: actPause, meaning: "SDKAppID not found: wrong app id or wrong region"},
	70050: {act: actPause, minPause: time.Minute, meaning: "signature check failed too often: locked out for a minute"},
	70051: {act: actPause, meaning: "account on the block list"},
	70403: {act: actPause, meaning: "identifier is not an app admin"},
	// Reject: this event alone can never succeed.
	10004: {act: actReject, meaning: "invalid parameter"},
	10019: {act: actReject, meaning: "From_Account does not exist"},
	60002: {act: actReject, meaning: "malformed HTTP request"},
	60003: {act: actReject, meaning: "invalid request body"},
	60015: {act: actReject, meaning: "invalid request body"},
	70402: {act: actReject, meaning: "invalid parameter"},
	80001: {act: actReject, meaning: "text blocked by content moderation"},
	80002: {act: actReject, meaning: "message body too long"},
}

// classify returns the table's rule for an API ErrorCode; an unknown code
// is actUnknown. Code 0 is success and is not classified.
func classify(code int) codeRule {
	if r, ok := errorTable[code]; ok {
		return r
	}
	return codeRule{act: actUnknown, unsure: true, meaning: "undocumented error code"}
}

// IsRateLimit reports whether an ErrorCode is a documented frequency
// limit (the client slows its pacing on it).
func IsRateLimit(code int) bool { return classify(code).rateLimit }

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
	// RetryAfter, for a pause, is the least wait before the next probe
	// (70050: locked out for a minute).
	RetryAfter time.Duration
	// UncertainSince, for ReasonOutcomeUnknown, is the start of the first
	// attempt whose answer never proved the message undelivered.
	UncertainSince time.Time
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

// Dead-letter reasons for events the API refused (see Error.Reason).
const (
	ReasonInvalidEvent   = "invalid_event"
	ReasonBodyTooLong    = "body_too_long"
	ReasonContentBlocked = "content_blocked"
	ReasonAPIRejected    = "api_rejected"
	ReasonUnknownError   = "unknown_error"
	// ReasonRetryExhausted: retried longer than the configured budget.
	ReasonRetryExhausted = "retry_exhausted"
	// ReasonOutcomeUnknown: an attempt may have been delivered (its answer
	// never came) and the server's dedupe window has passed since: sending
	// again could show the message twice (Error.UncertainSince).
	ReasonOutcomeUnknown = "outcome_unknown"
)

// Reason is a short machine-readable reason for dead-letter records and
// metrics: one of the Reason* constants for a rejection, else the class
// name.
func (e *Error) Reason() string {
	switch {
	case e.Class != ClassReject:
		return e.Class.String()
	case !e.UncertainSince.IsZero():
		return ReasonOutcomeUnknown
	case e.Code == CodeBodyTooLong:
		return ReasonBodyTooLong
	case e.Field != "":
		return ReasonInvalidEvent
	case e.Code == CodeContentBlocked:
		return ReasonContentBlocked
	case classify(e.Code).act == actUnknown:
		return ReasonUnknownError
	}
	return ReasonAPIRejected
}

// Meaning returns the documented meaning of an API ErrorCode.
func Meaning(code int) string { return classify(code).meaning }
