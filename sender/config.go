package sender

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// BroadcastPath is the REST path of send_broadcast_msg.
const BroadcastPath = "v4/group_open_http_svc/send_broadcast_msg"

// Unlimited as Config.Rate disables pacing (benchmarks and tests only: the
// real API answers 10023 when called faster than the app's limit).
var Unlimited = math.Inf(1)

// Config configures a Client. Zero values take their defaults from
// DefaultConfig.
type Config struct {
	// AppID is the app's SDKAppID. Required.
	AppID int
	// Admin is the app administrator's identifier. Required.
	Admin string
	// SecretKey is the app's secret key, used to generate UserSig. Required
	// (the key at start, when SecretKeyFunc is set).
	SecretKey string
	// SecretKeyFunc, if set, returns the app's secret key now: a key
	// rotated while the process runs (a file read again when it changes)
	// takes effect on a signature made two seconds after it at most (it
	// is asked that often), and a signature the server refuses asks it
	// again before the refusal counts.
	SecretKeyFunc func() (string, error)

	// Endpoints are base URLs such as "https://adminapisgp.im.qcloud.com" or
	// "http://127.0.0.1:8080", primary first; later ones are failover
	// standbys. Set it, or use RegionEndpoints.
	Endpoints []string
	// Path is the REST path.
	Path string

	// Rate is the number of calls per second, every attempt counted.
	Rate float64
	// AttemptTimeout bounds one HTTP request. The server's
	// own timeout is not documented; public server SDKs wait 10 s or more.
	// A request abandoned at the timeout may still have been delivered:
	// its retry carries the same Random and bytes.
	AttemptTimeout time.Duration
	// SigLifetime is the lifetime of generated UserSigs. They
	// are renewed after 80% of it.
	SigLifetime time.Duration
	// RetryInitial and RetryMax bound the exponential backoff between
	// retries.
	RetryInitial, RetryMax time.Duration
	// MaxElapsed ends the retries of one Send with a ClassRetry error; 0
	// retries until the context ends.
	MaxElapsed time.Duration
	// UnknownRetries is how often an undocumented error code is retried
	// before the message is rejected.
	UnknownRetries int
	// DedupeWindow is how long the server discards a resend of a message
	// (same Random, same bytes): five minutes, documented. A retry later
	// than RetryWindow after an attempt with an unknown outcome could show
	// the message twice.
	DedupeWindow time.Duration
	// UnknownOutcome says what happens once the window has passed:
	// UnknownDeadLetter (fail with ReasonOutcomeUnknown) or UnknownResend.
	UnknownOutcome UnknownPolicy
	// FailbackAfter is how long the client stays on a standby endpoint
	// before trying the primary again.
	FailbackAfter time.Duration

	// Transport is the connection pool calls go over, shared by the
	// clients of one deployment; default one of the client's own. A proxy
	// of the environment (HTTPS_PROXY) applying to an endpoint makes the
	// client use net/http's transport instead, which tunnels (one per
	// Transport, shared by its clients too).
	Transport *Transport
	// HTTPClient, if set, is used instead of Transport (a proxy of its
	// own, a round tripper that records).
	HTTPClient *http.Client
	// Logger receives one line per failed attempt; default no logging.
	Logger *zap.Logger
	// Observe, if set, is called after every HTTP attempt (metrics).
	Observe func(Attempt)
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
	case c.DedupeWindow < 0:
		return errors.New("sender: DedupeWindow must not be negative")
	}
	cc := *c
	cc.setDefaults()
	if cc.RetryWindow() <= 0 {
		return fmt.Errorf("sender: DedupeWindow (%s) leaves no time to retry after the attempt timeout (%s) and its margin: "+
			"it must exceed the attempt timeout by more than a tenth of itself", cc.DedupeWindow, cc.AttemptTimeout)
	}
	for _, ep := range c.Endpoints {
		if err := CheckEndpoint(ep); err != nil {
			return fmt.Errorf("sender: %w", err)
		}
	}
	return nil
}

// DefaultConfig returns the defaults of every optional setting: a zero
// field of a Config takes its value here. The command's settings and the
// README's configuration table show these values.
func DefaultConfig() Config {
	return Config{
		Path:           BroadcastPath,
		Rate:           1,
		AttemptTimeout: 10 * time.Second,
		SigLifetime:    24 * time.Hour,
		RetryInitial:   500 * time.Millisecond,
		RetryMax:       30 * time.Second,
		FailbackAfter:  time.Minute,
		UnknownRetries: 3,
		DedupeWindow:   5 * time.Minute,
	}
}

func (c *Config) setDefaults() {
	d := DefaultConfig()
	def := func(v *time.Duration, dv time.Duration) {
		if *v == 0 {
			*v = dv
		}
	}
	if c.Path == "" {
		c.Path = d.Path
	}
	def(&c.DedupeWindow, d.DedupeWindow)
	if c.Rate == 0 {
		c.Rate = d.Rate
	}
	def(&c.AttemptTimeout, d.AttemptTimeout)
	def(&c.SigLifetime, d.SigLifetime)
	def(&c.RetryInitial, d.RetryInitial)
	def(&c.RetryMax, d.RetryMax)
	def(&c.FailbackAfter, d.FailbackAfter)
	if c.UnknownRetries == 0 {
		c.UnknownRetries = d.UnknownRetries
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}
