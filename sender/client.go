package sender

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpproxy"
	"golang.org/x/time/rate"
)

// Client sends broadcast messages. It is safe for concurrent use; all
// callers share one pacing limiter.
type Client struct {
	cfg     Config
	http    *http.Client // nil when calls go over pool
	pool    *Transport
	targets map[string]*target // by endpoint, for pool
	signer  *signer
	limiter *rate.Limiter
	log     *zap.Logger

	mu         sync.Mutex
	active     int       // index into cfg.Endpoints
	switchedAt time.Time // when active last changed

	rateMu  sync.Mutex
	ceiling float64 // the rate asked for (Config.Rate or SetRate)
	current float64 // the rate paced at: lower after 10023 answers

	// The query's fixed parts around its random, and the last UserSig
	// escaped (made once a signature, not once a call).
	queryHead, queryMid string
	escapedSig          atomic.Pointer[escapedSig]
}

// escapedSig is a UserSig and its query escaping.
type escapedSig struct{ sig, escaped string }

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
	var hc *http.Client
	var targets map[string]*target
	pool := cfg.Transport
	if pool == nil {
		pool = NewTransport()
	}
	switch {
	case cfg.HTTPClient != nil:
		hc, pool = cfg.HTTPClient, nil
	case proxied(cfg.Endpoints):
		// Through a proxy (HTTPS_PROXY and its kin): net/http's transport,
		// which tunnels, shared as the pool's connections are.
		hc, pool = pool.viaProxy(), nil
	default:
		targets = make(map[string]*target, len(cfg.Endpoints))
		for _, ep := range cfg.Endpoints {
			t, err := newTarget(ep, cfg.Path)
			if err != nil {
				return nil, fmt.Errorf("sender: endpoint %q: %w", ep, err)
			}
			targets[ep] = t
		}
	}
	if hc != nil {
		// No redirect is followed, whoever built the client.
		own := *hc
		own.CheckRedirect = noRedirect
		hc = &own
	}
	return &Client{
		queryHead: "?contenttype=json&identifier=" + url.QueryEscape(cfg.Admin) + "&random=",
		queryMid:  "&sdkappid=" + strconv.Itoa(cfg.AppID) + "&usersig=",
		cfg:       cfg,
		http:      hc,
		pool:      pool,
		targets:   targets,
		signer:    newSigner(cfg.AppID, cfg.Admin, cfg.SecretKey, cfg.SecretKeyFunc, cfg.SigLifetime),
		limiter:   rate.NewLimiter(limitFor(cfg.Rate), 1),
		log:       cfg.Logger,
		ceiling:   cfg.Rate,
		current:   cfg.Rate,
	}, nil
}

// Close releases idle connections.
func (c *Client) Close() {
	if c.pool != nil {
		c.pool.CloseIdleConnections()
		return
	}
	c.http.CloseIdleConnections()
}

// proxied says a proxy of the environment (HTTPS_PROXY, HTTP_PROXY,
// NO_PROXY, read as net/http reads them) applies to an endpoint.
func proxied(endpoints []string) bool {
	proxy := httpproxy.FromEnvironment().ProxyFunc()
	for _, ep := range endpoints {
		u, err := url.Parse(ep)
		if err != nil {
			continue
		}
		if p, err := proxy(u); p != nil || err != nil {
			return true
		}
	}
	return false
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

// SendBodyReserved is SendBody whose first attempt uses the slot taken by
// Reserve; retries wait for slots of their own.
func (c *Client) SendBodyReserved(ctx context.Context, body []byte) (*Response, error) {
	return c.sendBody(ctx, body, true)
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
	// Start is when the request was sent.
	Start time.Time
	// Number is the attempt's number within its send, from 1.
	Number int
	// Info is the API's ErrorInfo, if it answered one.
	Info string
	// Uncertain says the attempt's outcome is unknown: the request went
	// out and no answer proved it undelivered (see Uncertain).
	Uncertain bool
}

// Trace receives the attempts of the sends made with its context, like
// net/http/httptrace: a caller follows its own call (for stuck detection,
// or a span per attempt) while Config.Observe sees every call.
type Trace struct {
	// Leaving, if set, is called right before every HTTP attempt's
	// request is made, with its start (Attempt.Start): a caller that
	// paces by its own calls spaces the next one from there.
	Leaving func(start time.Time)
	// Wrote, if set, is called when an attempt's request has been written
	// to its connection, with the time: the server has it about then. It
	// is later than Leaving by the time a connection took (a new one is
	// dialled, and on a loaded host a request waits to be written), so a
	// caller that paces by its own calls spaces the next one from there.
	Wrote func(at time.Time)
	// Attempt is called after every HTTP attempt of the send.
	Attempt func(Attempt)
}

type traceKey struct{}

// WithTrace returns a context whose sends report to tr.
func WithTrace(ctx context.Context, tr *Trace) context.Context {
	return context.WithValue(ctx, traceKey{}, tr)
}

func traceFrom(ctx context.Context) *Trace {
	tr, _ := ctx.Value(traceKey{}).(*Trace)
	return tr
}
