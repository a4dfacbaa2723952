package sender

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"time"
)

// Transport is the keep-alive HTTP/1.1 connection pool the API's calls go
// over when no http.Client is configured (Config.HTTPClient), shared by
// the clients of one deployment (Config.Transport): the apps of one host
// share its connections. A call is written and its answer read on the
// calling goroutine, with net/http's own answer parser (http.ReadResponse)
// under a byte budget, so a call hands nothing to another goroutine: at a
// thousand calls a second, net/http's two goroutines per connection and
// their hand-offs were a third of the worker's CPU. It speaks only what
// the API needs: a POST with a body of known length, an answer of any
// framing (length, chunked, until close).
type Transport struct {
	// MaxIdlePerHost bounds the idle connections kept for one host;
	// default 16. Calls in flight beyond it get connections of their own,
	// closed after their answer.
	MaxIdlePerHost int
	// IdleTimeout closes a connection idle for longer; default 30s, under
	// the keep-alive timeout of common servers (60s and more). A
	// connection idle for over a second is checked before it is used
	// again, and a kept connection the server closed is replaced once.
	IdleTimeout time.Duration
	// TLSClientConfig, if set, is the TLS configuration of https hosts
	// (its ServerName is set per host); default the system's roots.
	TLSClientConfig *tls.Config

	mu   sync.Mutex
	idle map[string][]*keptConn // by host, the most recently used last

	proxyOnce sync.Once
	proxy     *http.Client // the calls through a proxy (viaProxy)
}

// NewTransport returns a Transport with the default limits.
func NewTransport() *Transport { return &Transport{} }

// viaProxy is the net/http client of the calls a proxy of the
// environment applies to: one for the clients of the Transport, so that
// they share its connections too.
func (t *Transport) viaProxy() *http.Client {
	t.proxyOnce.Do(func() {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = t.maxPerHost()
		tr.IdleConnTimeout = 90 * time.Second
		t.mu.Lock()
		t.proxy = &http.Client{Transport: tr}
		t.mu.Unlock()
	})
	return t.proxy
}

// CloseIdleConnections closes every idle connection.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle, proxy := t.idle, t.proxy
	t.idle = nil
	t.mu.Unlock()
	if proxy != nil {
		proxy.CloseIdleConnections()
	}
	for _, l := range idle {
		for _, kc := range l {
			kc.close()
		}
	}
}

// Answer bounds: the status line and headers, and the bytes read from the
// connection for a body (its framing included: a chunked answer of
// one-byte chunks is several times its body).
const (
	maxAnswerHead  = 64 << 10
	maxAnswerBytes = 8 * maxAnswer
	maxInterim     = 5 // 1xx answers skipped before the answer
)

// Pool defaults, and how long a connection idles before it is checked.
const (
	defaultIdle    = 30 * time.Second
	defaultPerHost = 16
	staleAfter     = time.Second
)

var (
	errAnswerTooLarge = errors.New("answer exceeds its size limit")
	errInterim        = errors.New("too many interim (1xx) answers")
	errSwitching      = errors.New("the server switched protocols (101)")
	aLongTimeAgo      = time.Unix(1, 0)
)

// target is an endpoint as the transport dials it.
type target struct {
	key        string // the pool's key: scheme://host:port
	addr       string // host:port dialled
	host       string // the Host header
	serverName string // TLS server name; "" for http
	path       string // the request's path, the endpoint's own first
	name       string // what errors name: the URL without its query
}

// newTarget parses an endpoint (checked by CheckEndpoint) for the path
// posted to.
func newTarget(endpoint, path string) (*target, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, err
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	t := &target{addr: net.JoinHostPort(u.Hostname(), port), host: u.Host, name: endpoint + "/" + path}
	t.key = u.Scheme + "://" + t.addr
	if u.Scheme == "https" {
		t.serverName = u.Hostname()
	}
	t.path = u.EscapedPath() + "/" + path
	if t.path[0] != '/' {
		t.path = "/" + t.path
	}
	return t, nil
}

// exchange is one call's outcome on the transport.
type exchange struct {
	status   int
	location string // a 3xx answer's Location
	written  bool   // the whole request went out on a connection
}

// post writes req (a whole HTTP/1.1 request) to tg and reads its answer's
// body, at most maxAnswer bytes, into answer, by deadline or until ctx
// ends. wrote, if set, is called once the request is written.
func (t *Transport) post(ctx context.Context, tg *target, deadline time.Time, req []byte, answer *bytes.Buffer, wrote func(time.Time)) (exchange, error) {
	var written bool
	for try := 0; ; try++ {
		kc := t.get(tg.key)
		if kc == nil {
			var err error
			if kc, err = t.dial(ctx, tg, deadline); err != nil {
				return exchange{written: written}, err
			}
		}
		ex, reusable, err := kc.exchange(ctx, deadline, req, answer, wrote)
		ex.written = ex.written || written
		if err == nil {
			if reusable {
				t.put(tg.key, kc)
			} else {
				kc.close()
			}
			return ex, nil
		}
		kc.close()
		// A kept connection the server closed while it was idle fails at
		// once, before any byte of an answer: the request is made again
		// on a new connection, once, as net/http does. Were the request
		// taken after all, the resend carries the same Random.
		if kc.reused && try == 0 && kc.r.read == 0 && ctx.Err() == nil && !isTimeout(err) {
			written = ex.written
			answer.Reset()
			continue
		}
		return ex, err
	}
}

// get takes an idle connection to key, the most recently used first; nil
// when none is left that is still open.
func (t *Transport) get(key string) *keptConn {
	for {
		t.mu.Lock()
		l := t.idle[key]
		if len(l) == 0 {
			t.mu.Unlock()
			return nil
		}
		kc := l[len(l)-1]
		l[len(l)-1] = nil
		t.idle[key] = l[:len(l)-1]
		t.mu.Unlock()
		idle := time.Since(kc.idleAt)
		if idle > t.idleTimeout() || (idle > staleAfter && !alive(kc.raw)) {
			kc.close()
			continue
		}
		kc.reused = true
		return kc
	}
}

// put keeps kc for the next call to key, and closes what has been idle
// too long.
func (t *Transport) put(key string, kc *keptConn) {
	kc.idleAt = time.Now()
	max := t.maxPerHost()
	var expired []*keptConn
	t.mu.Lock()
	if t.idle == nil {
		t.idle = map[string][]*keptConn{}
	}
	l := t.idle[key]
	n := 0
	for n < len(l) && kc.idleAt.Sub(l[n].idleAt) > t.idleTimeout() {
		n++
	}
	if n > 0 {
		expired = append(expired, l[:n]...)
		l = append(l[:0], l[n:]...)
	}
	if len(l) < max {
		l = append(l, kc)
	} else {
		expired = append(expired, kc)
	}
	t.idle[key] = l
	t.mu.Unlock()
	for _, c := range expired {
		c.close()
	}
}

func (t *Transport) maxPerHost() int {
	if t.MaxIdlePerHost > 0 {
		return t.MaxIdlePerHost
	}
	return defaultPerHost
}

func (t *Transport) idleTimeout() time.Duration {
	if t.IdleTimeout > 0 {
		return t.IdleTimeout
	}
	return defaultIdle
}

// dial opens a connection to tg, TLS included, by deadline.
func (t *Transport) dial(ctx context.Context, tg *target, deadline time.Time) (*keptConn, error) {
	d := net.Dialer{Deadline: deadline, KeepAlive: 30 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", tg.addr)
	if err != nil {
		return nil, err
	}
	c := raw
	if tg.serverName != "" {
		cfg := &tls.Config{}
		if t.TLSClientConfig != nil {
			cfg = t.TLSClientConfig.Clone()
		}
		cfg.ServerName = tg.serverName
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(raw, cfg)
		if err := raw.SetDeadline(deadline); err != nil {
			_ = raw.Close()
			return nil, err
		}
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, err
		}
		c = tc
	}
	kc := &keptConn{c: c, raw: raw}
	kc.r.c = c
	kc.br = bufio.NewReaderSize(&kc.r, 4<<10)
	return kc, nil
}

// keptConn is a connection of the pool.
type keptConn struct {
	c      net.Conn // what requests are written to (TLS, or raw)
	raw    net.Conn // the TCP connection under it
	r      budgetReader
	br     *bufio.Reader
	idleAt time.Time
	reused bool
}

func (kc *keptConn) close() { _ = kc.c.Close() }

// exchange writes req and reads its answer. reusable says the answer was
// read whole and the connection may serve another call.
func (kc *keptConn) exchange(ctx context.Context, deadline time.Time, req []byte, answer *bytes.Buffer, wrote func(time.Time)) (ex exchange, reusable bool, err error) {
	if err := kc.c.SetDeadline(deadline); err != nil {
		return ex, false, err
	}
	// ctx ending (shutdown) cuts the call short where it stands.
	stop := context.AfterFunc(ctx, func() { _ = kc.c.SetDeadline(aLongTimeAgo) })
	defer func() {
		if !stop() && ctx.Done() != nil {
			reusable = false // its deadline may be moved yet
		}
	}()
	kc.r.read = 0
	if _, err := kc.c.Write(req); err != nil {
		return ex, false, err
	}
	ex.written = true
	if wrote != nil {
		wrote(time.Now())
	}
	kc.r.n = maxAnswerHead
	res, err := http.ReadResponse(kc.br, nil)
	for i := 0; err == nil && res.StatusCode < 200 && res.StatusCode != http.StatusSwitchingProtocols; i++ {
		if i == maxInterim {
			return ex, false, errInterim
		}
		kc.r.n = maxAnswerHead
		res, err = http.ReadResponse(kc.br, nil)
	}
	if err != nil {
		return ex, false, err
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		return ex, false, errSwitching
	}
	ex.status = res.StatusCode
	if ex.status >= 300 && ex.status < 400 {
		ex.location = res.Header.Get("Location")
	}
	kc.r.n = maxAnswerBytes
	n, err := answer.ReadFrom(io.LimitReader(res.Body, maxAnswer))
	if err != nil {
		return ex, false, err
	}
	// Kept only when the answer ended within its limit, the server keeps
	// the connection, and nothing follows the answer.
	reusable = n < maxAnswer && !res.Close && kc.br.Buffered() == 0
	if reusable {
		_ = res.Body.Close()
	}
	return ex, reusable, nil
}

// budgetReader reads from c at most n more bytes: what a hostile server
// can make the client read for one answer.
type budgetReader struct {
	c    net.Conn
	n    int64
	read int64 // bytes read in the current exchange
}

func (r *budgetReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errAnswerTooLarge
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	n, err := r.c.Read(p)
	r.n -= int64(n)
	r.read += int64(n)
	return n, err
}

// isTimeout says err is a deadline's.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// alive says an idle connection is still open and silent: the peer has
// not closed it, nor sent anything unasked. One non-blocking peek, where
// the system has one; a connection that cannot be checked counts as alive
// (a failure on it is made again once, see post).
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	ok = true
	_ = rc.Read(func(fd uintptr) bool {
		ok = peekIdle(fd)
		return true
	})
	return ok
}
