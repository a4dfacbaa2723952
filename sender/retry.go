package sender

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"
)

func (c *Client) sendBody(ctx context.Context, body []byte, reserved bool) (*Response, error) {
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(c.cfg.RetryInitial),
		backoff.WithMaxInterval(c.cfg.RetryMax),
		backoff.WithMaxElapsedTime(c.cfg.MaxElapsed),
	)
	var (
		attempts   int
		unknowns   int
		sigRenewed bool
		last       *Error
	)
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
		sig, sigGen, err := c.signer.get()
		if err != nil {
			return nil, &Error{Class: ClassPause, Info: "cannot generate UserSig", Err: err, Attempts: attempts}
		}
		endpoint := c.endpoint()
		attempts++
		resp, status, latency, err := c.do(ctx, endpoint, sig, body)
		att := Attempt{Endpoint: endpoint, Code: -1, HTTPStatus: status, Err: err, Latency: latency, PacingWait: waited}
		if resp != nil {
			att.Code = resp.ErrorCode
			c.adapt(resp.ErrorCode == CodeFrequencyLimit)
		}
		att.Rate = c.Rate()
		if c.cfg.Observe != nil {
			c.cfg.Observe(att)
		}

		var act action
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, c.ended(last, attempts, ctx.Err())
		case err != nil:
			c.failover(endpoint)
			last = &Error{Class: ClassRetry, HTTPStatus: status, Info: "request failed", Err: err}
			act = actRetry
		case status != http.StatusOK:
			last = &Error{Class: ClassRetry, HTTPStatus: status, Info: "HTTP " + strconv.Itoa(status)}
			act = httpAction(status)
			if act == actRetry && status >= 500 {
				c.failover(endpoint)
			}
		case resp.ErrorCode == CodeOK:
			resp.Attempts = attempts
			return resp, nil
		default:
			last = &Error{Class: ClassRetry, Code: resp.ErrorCode, Info: resp.ErrorInfo, HTTPStatus: status}
			act = classify(resp.ErrorCode)
		}
		c.log.Warn("send_broadcast_msg attempt failed",
			zap.String("endpoint", endpoint), zap.Int("attempt", attempts),
			zap.Int("code", last.Code), zap.Int("http_status", status),
			zap.String("info", last.Info), zap.NamedError("cause", last.Err))

		switch act {
		case actRenewSig:
			c.signer.invalidate(sigGen)
			continue // retry at once; pacing still applies
		case actBadSig:
			if !sigRenewed {
				sigRenewed = true
				c.signer.invalidate(sigGen)
				continue
			}
			return nil, c.final(last, ClassPause, attempts)
		case actPause:
			return nil, c.final(last, ClassPause, attempts)
		case actReject:
			return nil, c.final(last, ClassReject, attempts)
		case actUnknown:
			unknowns++
			if unknowns > c.cfg.UnknownRetries {
				return nil, c.final(last, ClassReject, attempts)
			}
		}
		wait := bo.NextBackOff()
		if wait == backoff.Stop {
			return nil, c.final(last, ClassRetry, attempts)
		}
		if last.Code == CodeFrequencyLimit {
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
