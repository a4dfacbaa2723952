package sender

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"
)

func (c *Client) sendBody(ctx context.Context, body []byte, reserved bool) (*Response, error) {
	// The backoff is made at the first retry (most sends have none), its
	// budget counted from the send's start.
	began := time.Now()
	var bo *backoff.ExponentialBackOff
	var (
		attempts    int
		unknowns    int // undocumented codes so far
		timeouts    int // 60008 answers so far
		sigRenewed  bool
		sigExpiries int // 70001/70052 answers in a row
		last        *Error
	)
	uncertain := uncertainFrom(ctx)
	if uncertain == nil {
		uncertain = &Uncertain{}
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, c.ended(last, attempts, err)
		}
		waitStart := time.Now()
		if !reserved || attempts > 0 {
			if err := c.Reserve(ctx); err != nil {
				return nil, c.ended(last, attempts, err)
			}
		}
		waited := time.Since(waitStart)
		if since := uncertain.Since(); !since.IsZero() && c.cfg.UnknownOutcome == UnknownDeadLetter &&
			time.Since(since) >= c.cfg.RetryWindow() {
			return nil, c.outcomeUnknown(last, since, attempts)
		}
		sig, sigGen, err := c.signer.get()
		if err != nil {
			return nil, &Error{Class: ClassPause, Info: "cannot generate UserSig", Err: err, Attempts: attempts}
		}
		endpoint := c.endpoint()
		attempts++
		start := time.Now()
		if tr := traceFrom(ctx); tr != nil && tr.Leaving != nil {
			tr.Leaving(start)
		}
		resp, status, latency, written, err := c.do(ctx, endpoint, sig, body)
		att := Attempt{Endpoint: endpoint, Code: -1, HTTPStatus: status, Err: err, Latency: latency, PacingWait: waited, Start: start, Number: attempts}

		var rule codeRule
		var redirect *RedirectError
		switch {
		case errors.As(err, &redirect):
			last = &Error{Class: ClassPause, HTTPStatus: status, Info: redirect.Error(), Err: err}
			rule = codeRule{act: actPause}
		case err != nil && ctx.Err() != nil:
			if att.Uncertain = written; written {
				uncertain.Mark(start)
			}
			c.observe(ctx, att)
			return nil, c.ended(last, attempts, ctx.Err())
		case err != nil:
			c.failover(endpoint)
			last = &Error{Class: ClassRetry, HTTPStatus: status, Info: "request failed", Err: err}
			rule = codeRule{act: actRetry}
		case status != http.StatusOK:
			last = &Error{Class: ClassRetry, HTTPStatus: status, Info: "HTTP " + strconv.Itoa(status)}
			rule = codeRule{act: httpAction(status)}
			if rule.act == actRetry && status >= 500 {
				c.failover(endpoint)
			}
		case resp.ErrorCode == CodeOK:
			c.adapt(false)
			att.Code = CodeOK
			c.observe(ctx, att)
			resp.Attempts = attempts
			return resp, nil
		default:
			last = &Error{Class: ClassRetry, Code: resp.ErrorCode, Info: resp.ErrorInfo, HTTPStatus: status}
			rule = classify(resp.ErrorCode)
		}
		if resp != nil {
			att.Code, att.Info = resp.ErrorCode, resp.ErrorInfo
			c.adapt(rule.rateLimit)
		}
		if att.Uncertain = unsure(written, status, err, rule); att.Uncertain {
			uncertain.Mark(start)
		}
		c.observe(ctx, att)
		c.log.Warn("send_broadcast_msg attempt failed",
			zap.String("endpoint", endpoint), zap.Int("attempt", attempts),
			zap.Int("code", last.Code), zap.Int("http_status", status),
			zap.String("info", last.Info), zap.String("meaning", rule.meaning), zap.Bool("outcome_unknown", att.Uncertain),
			zap.NamedError("cause", last.Err))

		if rule.act != actRenewSig {
			sigExpiries = 0
		}
		switch rule.act {
		case actRenewSig:
			sigExpiries++
			if sigExpiries > 1 {
				last.Info = fmt.Sprintf("UserSig refused as expired again right after renewal (%s): the host clock is probably wrong "+
					"(host time %s UTC); sync it with NTP", last.Info, time.Now().UTC().Format(time.RFC3339))
				return nil, c.final(last, ClassPause, attempts)
			}
			c.signer.invalidate(sigGen)
			continue // retry at once; pacing still applies
		case actBadSig:
			if !sigRenewed {
				sigRenewed = true
				c.signer.invalidate(sigGen)
				continue
			}
			last.Info = fmt.Sprintf("UserSig refused again after renewal (%s): check that TIM_SECRET_KEY belongs to TIM_SDKAPPID "+
				"and TIM_ADMIN is an app admin", last.Info)
			return nil, c.final(last, ClassPause, attempts)
		case actRetryBounded:
			timeouts++
			if timeouts > c.cfg.UnknownRetries {
				last.Info = fmt.Sprintf("%s: answered %d times in a row (%s)", last.Info, timeouts, rule.meaning)
				return nil, c.final(last, ClassPause, attempts)
			}
		case actPause:
			if rule.meaning != "" {
				last.Info = fmt.Sprintf("%s (%s)", last.Info, rule.meaning)
			}
			e := c.final(last, ClassPause, attempts)
			e.RetryAfter = rule.minPause
			return nil, e
		case actReject:
			return nil, c.final(last, ClassReject, attempts)
		case actUnknown:
			unknowns++
			if unknowns > c.cfg.UnknownRetries {
				return nil, c.final(last, ClassReject, attempts)
			}
		}
		if bo == nil {
			left := c.cfg.MaxElapsed
			if left > 0 {
				left = max(left-time.Since(began), time.Nanosecond)
			}
			bo = backoff.NewExponentialBackOff(
				backoff.WithInitialInterval(c.cfg.RetryInitial),
				backoff.WithMaxInterval(c.cfg.RetryMax),
				backoff.WithMaxElapsedTime(left),
			)
		}
		wait := bo.NextBackOff()
		if wait == backoff.Stop {
			return nil, c.final(last, ClassRetry, attempts)
		}
		if rule.rateLimit {
			// The server saw us over its limit: wait at least one more
			// pacing interval on top of the limiter's own spacing.
			if iv := c.interval(); wait < iv {
				wait = iv
			}
		}
		if err := sleep(ctx, wait); err != nil {
			return nil, c.ended(last, attempts, err)
		}
	}
}

// observe reports one attempt, with the pacing rate after it, to
// Config.Observe and to the context's Trace.
func (c *Client) observe(ctx context.Context, a Attempt) {
	a.Rate = c.Rate()
	if c.cfg.Observe != nil {
		c.cfg.Observe(a)
	}
	if tr := traceFrom(ctx); tr != nil && tr.Attempt != nil {
		tr.Attempt(a)
	}
}

// httpAction classifies a non-200 HTTP status: 5xx, 408 and 429 are
// transient; any other status means every request would fail the same way
// (wrong path, a proxy refusing us) and pauses.
func httpAction(status int) action {
	if status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout {
		return actRetry
	}
	return actPause
}

func (c *Client) final(last *Error, class Class, attempts int) *Error {
	e := *last
	e.Class = class
	e.Attempts = attempts
	return &e
}

// ended reports that ctx ended while the send was still being retried.
func (c *Client) ended(last *Error, attempts int, cause error) *Error {
	e := &Error{Class: ClassRetry, Info: "gave up: " + cause.Error(), Attempts: attempts, Err: cause}
	if last != nil {
		e.Code, e.HTTPStatus = last.Code, last.HTTPStatus
		e.Info = last.Info + " (then gave up: " + cause.Error() + ")"
	}
	return e
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
