package sender

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Unknown outcomes. The server discards a message whose Random (and
// content) it saw within its dedupe window (five minutes, documented), so
// resending the same bytes is safe only within that window of the first
// attempt the server may have taken. An attempt whose answer never came
// (the connection dropped after the request went out, a timeout, a 5xx
// from a proxy, a server-side timeout code) leaves the outcome unknown; an
// answer that refuses the request (a frequency limit, a signature or
// validation error, a connection that never carried it) proves the message
// was not delivered. Past Config.RetryWindow after the first unknown
// outcome the client stops: with UnknownDeadLetter it returns a
// ClassReject error whose Reason is ReasonOutcomeUnknown, and with
// UnknownResend it keeps retrying (a possible duplicate over a held
// message).

// UnknownPolicy says what the client does once the dedupe window since an
// attempt with an unknown outcome has passed.
type UnknownPolicy int

const (
	// UnknownDeadLetter stops retrying: the send fails with
	// ReasonOutcomeUnknown (the default).
	UnknownDeadLetter UnknownPolicy = iota
	// UnknownResend keeps retrying: the message may be shown twice.
	UnknownResend
)

// ParseUnknownPolicy reads "dead-letter" or "resend".
func ParseUnknownPolicy(s string) (UnknownPolicy, error) {
	switch s {
	case "dead-letter", "deadletter", "":
		return UnknownDeadLetter, nil
	case "resend":
		return UnknownResend, nil
	}
	return 0, fmt.Errorf("unknown policy %q: want dead-letter or resend", s)
}

// String returns the policy's setting value.
func (p UnknownPolicy) String() string {
	if p == UnknownResend {
		return "resend"
	}
	return "dead-letter"
}

// Uncertain follows one message across its sends (retries, rounds of the
// caller, another process after a crash): when its first attempt with an
// unknown outcome started. Pass the same Uncertain to every send of the
// message with WithUncertain; a caller that learns of an earlier attempt
// (a record left by a previous owner) marks it first. It is safe for
// concurrent use.
type Uncertain struct {
	mu    sync.Mutex
	since time.Time
}

// Mark records an attempt with an unknown outcome that started at t; the
// earliest one is kept. It reports whether t is now the first.
func (u *Uncertain) Mark(t time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.since.IsZero() || t.Before(u.since) {
		u.since = t
		return true
	}
	return false
}

// Since is the start of the first attempt with an unknown outcome; zero
// when every attempt so far proved the message undelivered.
func (u *Uncertain) Since() time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.since
}

type uncertainKey struct{}

// WithUncertain returns a context whose sends record attempts with an
// unknown outcome in u and stop retrying by it.
func WithUncertain(ctx context.Context, u *Uncertain) context.Context {
	return context.WithValue(ctx, uncertainKey{}, u)
}

func uncertainFrom(ctx context.Context) *Uncertain {
	u, _ := ctx.Value(uncertainKey{}).(*Uncertain)
	return u
}

// unsure reports whether an attempt leaves the outcome unknown: the whole
// request went out (written) and no answer proves it was refused. A
// failure before the request was written, a redirect, a 408 or 429, and
// every documented refusal prove it was not delivered.
func unsure(written bool, status int, err error, rule codeRule) bool {
	switch {
	case !written:
		return false
	case err != nil:
		_, redirect := err.(*RedirectError)
		return !redirect
	case status != http.StatusOK:
		return status >= 500
	}
	return rule.unsure
}

// RetryWindow is how long after the first attempt with an unknown outcome
// a resend is still deduped by the server: DedupeWindow less the longest
// an attempt may take to arrive (AttemptTimeout) and a margin for clocks
// (a tenth of the window, at most 30 s).
func (c *Config) RetryWindow() time.Duration {
	return c.DedupeWindow - c.AttemptTimeout - min(c.DedupeWindow/10, 30*time.Second)
}

// outcomeUnknown is the error of a send stopped because resending could
// show the message twice.
func (c *Client) outcomeUnknown(last *Error, since time.Time, attempts int) *Error {
	e := &Error{Class: ClassReject, Attempts: attempts, UncertainSince: since}
	if last != nil {
		e.Code, e.HTTPStatus, e.Err = last.Code, last.HTTPStatus, last.Err
	}
	e.Info = fmt.Sprintf("outcome unknown: no answer proved the attempt of %s undelivered, and the server's dedupe window "+
		"(TIM_DEDUPE_WINDOW %s, less the attempt timeout and a margin) has passed since: a resend could show it twice, so it is not sent again "+
		"(TIM_UNKNOWN_OUTCOME=resend would)", since.UTC().Format(time.RFC3339Nano), c.cfg.DedupeWindow)
	if last != nil && last.Info != "" {
		e.Info += "; last failure: " + last.Info
	}
	return e
}
