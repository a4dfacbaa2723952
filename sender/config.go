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
	// AttemptTimeout bounds one HTTP request; default 10s. The server's
	// own timeout is not documented; public server SDKs wait 10 s or more.
	// A request abandoned at the timeout may still have been delivered:
	// its retry carries the same Random and bytes.
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
		if err := CheckEndpoint(ep); err != nil {
			return fmt.Errorf("sender: %w", err)
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
	def(&c.AttemptTimeout, 10*time.Second)
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
