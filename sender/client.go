package sender

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// BroadcastPath is the REST path of send_broadcast_msg.
const BroadcastPath = "v4/group_open_http_svc/send_broadcast_msg"

// Unlimited as Config.Rate disables pacing (benchmarks and tests only: the
// real API answers 10023 when called faster than the app's limit).
var Unlimited = math.Inf(1)

// Config configures a Client. Zero values take the documented defaults.
type Config struct {
	// AppID is the app's SDKAppID. Required.
	AppID int
	// Admin is the app administrator's identifier. Required.
	Admin string
	// SecretKey is the app's secret key, used to generate UserSig. Required.
	SecretKey string

	// Endpoints are base URLs such as "https://adminapisgp.im.qcloud.com" or
	// "http://127.0.0.1:8080", primary first; later ones are failover
	// standbys. Set it, or use RegionEndpoints.
	Endpoints []string
	// Path is the REST path; default BroadcastPath.
	Path string

	// Rate is the number of calls per second, every attempt counted. Default 1.
	Rate float64
	// AttemptTimeout bounds one HTTP request; default 5s (the server's own
	// timeout is 3s).
	AttemptTimeout time.Duration
	// SigLifetime is the lifetime of generated UserSigs; default 24h. They
	// are renewed after 80% of it.
	SigLifetime time.Duration
	// RetryInitial and RetryMax bound the exponential backoff between
	// retries; defaults 500ms and 30s.
	RetryInitial, RetryMax time.Duration
	// MaxElapsed ends the retries of one Send with a ClassRetry error; 0
	// retries until the context ends.
	MaxElapsed time.Duration
	// UnknownRetries is how often an undocumented error code is retried
	// before the message is rejected; default 3.
	UnknownRetries int
	// FailbackAfter is how long the client stays on a standby endpoint
	// before trying the primary again; default 1 minute.
	FailbackAfter time.Duration

	// HTTPClient overrides the pooled keep-alive client (tests).
	HTTPClient *http.Client
	// Logger receives one line per failed attempt; default no logging.
	Logger *zap.Logger
	// Observe, if set, is called after every HTTP attempt (metrics).
	Observe func(Attempt)
}

// Attempt describes one HTTP request, for metrics.
type Attempt struct {
	// Endpoint is the base URL used.
	Endpoint string
	// Code is the API ErrorCode; -1 when no API answer was read.
	Code int
	// HTTPStatus is the HTTP status; 0 when the request failed below HTTP.
	HTTPStatus int
	// Err is the failure below the API, redacted; nil otherwise.
	Err error
	// Latency is the time from sending the request to reading the answer.
	Latency time.Duration
	// PacingWait is the time the attempt waited for its pacing slot.
	PacingWait time.Duration
	// Rate is the effective pacing rate after the attempt, calls/s.
	Rate float64
}

// Validate checks the configuration and names the offending setting.
func (c *Config) Validate() error {
	switch {
	case c.AppID <= 0:
		return errors.New("sender: AppID (SDKAppID) must be a positive number")
	case c.Admin == "":
		return errors.New("sender: Admin (the admin identifier) is required")
	case c.SecretKey == "":
		return errors.New("sender: SecretKey is required")
	case len(c.Endpoints) == 0:
		return errors.New("sender: an endpoint (region or base URL) is required")
	case c.Rate < 0 || math.IsNaN(c.Rate):
		return fmt.Errorf("sender: Rate must be a positive number of calls per second, got %v", c.Rate)
	case c.AttemptTimeout < 0, c.SigLifetime < 0, c.RetryInitial < 0, c.RetryMax < 0, c.MaxElapsed < 0, c.FailbackAfter < 0:
		return errors.New("sender: durations must not be negative")
	case c.UnknownRetries < 0:
		return errors.New("sender: UnknownRetries must not be negative")
	}
	for _, ep := range c.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("sender: endpoint %q is not an http(s) base URL such as https://adminapisgp.im.qcloud.com", ep)
		}
		if u.RawQuery != "" {
			return fmt.Errorf("sender: endpoint %q must not carry a query", ep)
		}
	}
	return nil
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Path == "" {
		c.Path = BroadcastPath
	}
	if c.Rate == 0 {
		c.Rate = 1
	}
	def(&c.AttemptTimeout, 5*time.Second)
	def(&c.SigLifetime, 24*time.Hour)
	def(&c.RetryInitial, 500*time.Millisecond)
	def(&c.RetryMax, 30*time.Second)
	def(&c.FailbackAfter, time.Minute)
	if c.UnknownRetries == 0 {
		c.UnknownRetries = 3
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Response is the API's answer.
type Response struct {
	ActionStatus string `json:"ActionStatus"`
	ErrorCode    int    `json:"ErrorCode"`
	ErrorInfo    string `json:"ErrorInfo"`
	MsgSeq       uint64 `json:"MsgSeq,omitempty"`
	// Attempts is the number of HTTP requests the send took (not part of
	// the API's answer).
	Attempts int `json:"-"`
}

// DecodeResponse parses an API answer. It fails on anything that is not a
// JSON object carrying ActionStatus or ErrorCode.
func DecodeResponse(b []byte) (*Response, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || raw == nil {
		return nil, fmt.Errorf("answer is not a JSON object: %.80q", b)
	}
	_, hasStatus := raw["ActionStatus"]
	_, hasCode := raw["ErrorCode"]
	if !hasStatus && !hasCode {
		return nil, fmt.Errorf("answer has neither ActionStatus nor ErrorCode: %.80q", b)
	}
	var r Response
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode answer: %w", err)
	}
	if r.ErrorCode == 0 && r.ActionStatus != "" && r.ActionStatus != "OK" {
		// FAIL without a code: treat as an unknown failure, not a success.
		r.ErrorCode = -1
	}
	return &r, nil
}

// Client sends broadcast messages. It is safe for concurrent use; all
// callers share one pacing limiter.
type Client struct {
	cfg     Config
	http    *http.Client
	signer  *signer
	limiter *rate.Limiter
	log     *zap.Logger

	mu         sync.Mutex
	active     int       // index into cfg.Endpoints
	switchedAt time.Time // when active last changed

	rateMu  sync.Mutex
	ceiling float64 // the rate asked for (Config.Rate or SetRate)
	current float64 // the rate paced at: lower after 10023 answers
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	cfg.Endpoints = append([]string(nil), cfg.Endpoints...)
	for i, ep := range cfg.Endpoints {
		cfg.Endpoints[i] = strings.TrimSuffix(ep, "/")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 16
		tr.IdleConnTimeout = 90 * time.Second
		hc = &http.Client{Transport: tr}
	}
	return &Client{
		cfg:     cfg,
		http:    hc,
		signer:  newSigner(cfg.AppID, cfg.Admin, cfg.SecretKey, cfg.SigLifetime),
		limiter: rate.NewLimiter(limitFor(cfg.Rate), 1),
		log:     cfg.Logger,
		ceiling: cfg.Rate,
		current: cfg.Rate,
	}, nil
}

func limitFor(r float64) rate.Limit {
	if math.IsInf(r, 1) {
		return rate.Inf
	}
	return rate.Limit(r)
}

// SetRate changes the pacing rate (calls per second) for all later
// attempts. It is the ceiling: after 10023 answers the client paces lower
// and climbs back to it.
func (c *Client) SetRate(r float64) {
	c.rateMu.Lock()
	defer c.rateMu.Unlock()
	c.ceiling, c.current = r, r
	c.limiter.SetLimit(limitFor(r))
}

// Rate returns the effective pacing rate in calls per second.
func (c *Client) Rate() float64 {
	c.rateMu.Lock()
	defer c.rateMu.Unlock()
	return c.current
}

// adapt lowers the pacing rate after a 10023 answer (another sender on the
// app, or replicas out of step) and raises it back after successes:
// multiplicative decrease to 70%, floor 10% of the ceiling; additive
// increase of 5% of the ceiling per success.
func (c *Client) adapt(limited bool) {
	c.rateMu.Lock()
	defer c.rateMu.Unlock()
	if math.IsInf(c.ceiling, 1) {
		return
	}
	prev := c.current
	if limited {
		c.current = math.Max(c.ceiling*0.1, c.current*0.7)
	} else {
		c.current = math.Min(c.ceiling, c.current+c.ceiling*0.05)
	}
	if c.current != prev {
		c.limiter.SetLimit(limitFor(c.current))
		if limited {
			c.log.Warn("answered 10023: pacing lower", zap.Float64("rate", c.current), zap.Float64("ceiling", c.ceiling))
		}
	}
}

// Close releases idle connections.
func (c *Client) Close() {
	c.http.CloseIdleConnections()
}

// Send validates and encodes m, then sends it like SendBody.
func (c *Client) Send(ctx context.Context, m *Message) (*Response, error) {
	body, err := m.Encode()
	if err != nil {
		return nil, err
	}
	return c.SendBody(ctx, body)
}

// SendBody sends an encoded message body, retrying retry-class failures
// with the same bytes until the API answers OK, the error is of the pause
// or reject class, the retry budget (MaxElapsed) is spent, or ctx ends.
// Every attempt waits for its pacing slot. A failure is an *Error.
func (c *Client) SendBody(ctx context.Context, body []byte) (*Response, error) {
	return c.sendBody(ctx, body, false)
}

// Reserve waits for the next pacing slot and holds it for the caller's
// next SendBodyReserved: a caller can decide what to send once the slot has
// opened (merge mode packs whatever waited meanwhile).
func (c *Client) Reserve(ctx context.Context) error {
	if err := c.limiter.Wait(ctx); err != nil {
		if ctx.Err() == nil {
			return fmt.Errorf("%w: next pacing slot is past the deadline", context.DeadlineExceeded)
		}
		return err
	}
	return nil
}

// SendBodyReserved is SendBody whose first attempt uses the slot taken by
// Reserve; retries wait for slots of their own.
func (c *Client) SendBodyReserved(ctx context.Context, body []byte) (*Response, error) {
	return c.sendBody(ctx, body, true)
}

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

		var kind Kind
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, c.ended(last, attempts, ctx.Err())
		case err != nil:
			c.failover(endpoint)
			last = &Error{Class: ClassRetry, HTTPStatus: status, Info: "request failed", Err: err}
			kind = KindRetry
		case status != http.StatusOK:
			last = &Error{Class: ClassRetry, HTTPStatus: status, Info: "HTTP " + strconv.Itoa(status)}
			kind = httpKind(status)
			if kind == KindRetry && status >= 500 {
				c.failover(endpoint)
			}
		case resp.ErrorCode == CodeOK:
			resp.Attempts = attempts
			return resp, nil
		default:
			last = &Error{Class: ClassRetry, Code: resp.ErrorCode, Info: resp.ErrorInfo, HTTPStatus: status}
			kind = Classify(resp.ErrorCode)
		}
		c.log.Warn("send_broadcast_msg attempt failed",
			zap.String("endpoint", endpoint), zap.Int("attempt", attempts),
			zap.Int("code", last.Code), zap.Int("http_status", status),
			zap.String("info", last.Info), zap.NamedError("cause", last.Err))

		switch kind {
		case KindRenewSig:
			c.signer.invalidate(sigGen)
			continue // retry at once; pacing still applies
		case KindBadSig:
			if !sigRenewed {
				sigRenewed = true
				c.signer.invalidate(sigGen)
				continue
			}
			return nil, c.final(last, ClassPause, attempts)
		case KindPause:
			return nil, c.final(last, ClassPause, attempts)
		case KindReject:
			return nil, c.final(last, ClassReject, attempts)
		case KindUnknown:
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

// httpKind classifies a non-200 HTTP status: 5xx, 408 and 429 are
// transient; any other status means every request would fail the same way
// (wrong path, a proxy refusing us) and pauses.
func httpKind(status int) Kind {
	if status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout {
		return KindRetry
	}
	return KindPause
}

func (c *Client) interval() time.Duration {
	l := c.limiter.Limit()
	if l == rate.Inf || l <= 0 {
		return 0
	}
	return time.Duration(float64(time.Second) / float64(l))
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

// endpoint returns the base URL to use now, failing back to the primary
// once FailbackAfter has passed on a standby.
func (c *Client) endpoint() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active != 0 && time.Since(c.switchedAt) >= c.cfg.FailbackAfter {
		c.active = 0
		c.switchedAt = time.Now()
		c.log.Info("failing back to the primary endpoint", zap.String("endpoint", c.cfg.Endpoints[0]))
	}
	return c.cfg.Endpoints[c.active]
}

// failover moves to the next endpoint after a network failure on failed.
func (c *Client) failover(failed string) {
	if len(c.cfg.Endpoints) < 2 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg.Endpoints[c.active] != failed {
		return // another caller already moved on
	}
	c.active = (c.active + 1) % len(c.cfg.Endpoints)
	c.switchedAt = time.Now()
	c.log.Warn("failing over to the next endpoint", zap.String("from", failed), zap.String("to", c.cfg.Endpoints[c.active]))
}

// do makes one HTTP request. Errors are redacted: they never contain the
// query string (which carries the UserSig).
func (c *Client) do(ctx context.Context, endpoint, sig string, body []byte) (*Response, int, time.Duration, error) {
	q := url.Values{}
	q.Set("sdkappid", strconv.Itoa(c.cfg.AppID))
	q.Set("identifier", c.cfg.Admin)
	q.Set("usersig", sig)
	q.Set("random", strconv.FormatUint(uint64(rand.Uint32()), 10))
	q.Set("contenttype", "json")
	target := endpoint + "/" + c.cfg.Path
	actx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, target+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return nil, 0, 0, &requestError{target: target, cause: errors.New("cannot build request")}
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	res, err := c.http.Do(req)
	if err != nil {
		return nil, 0, time.Since(start), redact(target, err, sig, c.cfg.SecretKey)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	latency := time.Since(start)
	if err != nil {
		return nil, res.StatusCode, latency, redact(target, err, sig, c.cfg.SecretKey)
	}
	if res.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, res.Body)
		return nil, res.StatusCode, latency, nil
	}
	resp, err := DecodeResponse(b)
	if err != nil {
		return nil, res.StatusCode, latency, &requestError{target: target, cause: err}
	}
	return resp, res.StatusCode, latency, nil
}

// requestError is a failed HTTP request, naming the target without its
// query.
type requestError struct {
	target string
	cause  error
	msg    string
}

func (e *requestError) Error() string {
	if e.msg != "" {
		return "POST " + e.target + ": " + e.msg
	}
	return "POST " + e.target + ": " + e.cause.Error()
}

func (e *requestError) Unwrap() error { return e.cause }

// Timeout reports whether the request timed out.
func (e *requestError) Timeout() bool {
	var ne net.Error
	return errors.As(e.cause, &ne) && ne.Timeout()
}

// redact strips the *url.Error wrapper (whose message holds the whole URL,
// UserSig included) and scrubs any credential from the message that
// remains.
func redact(target string, err error, secrets ...string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := err.Error()
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "[REDACTED]")
			msg = strings.ReplaceAll(msg, url.QueryEscape(s), "[REDACTED]")
		}
	}
	return &requestError{target: target, cause: err, msg: msg}
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
