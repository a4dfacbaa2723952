package sender

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// do makes one HTTP request. Errors are redacted: they never contain the
// query string (which carries the UserSig). written says the whole request
// went out on a connection: a failure after that may have been delivered.
func (c *Client) do(ctx context.Context, endpoint, sig string, body []byte) (resp *Response, status int, latency time.Duration, written bool, err error) {
	if c.pool != nil {
		return c.doPooled(ctx, endpoint, sig, body)
	}
	target := endpoint + "/" + c.cfg.Path // what errors name (the query left out)
	u := string(c.appendQuery(append(make([]byte, 0, len(target)+160), target...), sig))
	actx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
	defer cancel()
	var wrote atomic.Bool
	tctx := httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			wrote.Store(wrote.Load() || i.Err == nil)
			if tr := traceFrom(ctx); i.Err == nil && tr != nil && tr.Wrote != nil {
				tr.Wrote(time.Now())
			}
		},
	})
	req, err := http.NewRequestWithContext(tctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, 0, 0, false, &requestError{target: target, cause: errors.New("cannot build request")}
	}
	req.Header["Content-Type"] = []string{"application/json"}
	start := time.Now()
	res, err := c.roundTrip(req)
	if err != nil {
		return nil, 0, time.Since(start), wrote.Load(), redact(target, err, append(c.signer.keys(), sig)...)
	}
	defer res.Body.Close()
	buf := answerBufs.Get().(*bytes.Buffer)
	defer putAnswerBuf(buf)
	buf.Reset()
	_, err = buf.ReadFrom(io.LimitReader(res.Body, maxAnswer))
	latency = time.Since(start)
	if err != nil {
		return nil, res.StatusCode, latency, true, redact(target, err, append(c.signer.keys(), sig)...)
	}
	if res.StatusCode != http.StatusOK && (res.StatusCode < 300 || res.StatusCode >= 400) {
		_, _ = io.Copy(io.Discard, res.Body)
	}
	resp, err = c.answer(target, res.StatusCode, res.Header.Get("Location"), buf.Bytes())
	return resp, res.StatusCode, latency, true, err
}

// doPooled is do over the client's Transport: the request written in one
// piece from the fixed parts of its endpoint and query.
func (c *Client) doPooled(ctx context.Context, endpoint, sig string, body []byte) (resp *Response, status int, latency time.Duration, written bool, err error) {
	tg := c.targets[endpoint]
	deadline := time.Now().Add(c.cfg.AttemptTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	rb := requestBufs.Get().(*[]byte)
	defer requestBufs.Put(rb)
	b := append((*rb)[:0], "POST "...)
	b = append(b, tg.path...)
	b = c.appendQuery(b, sig)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, tg.host...)
	b = append(b, "\r\nUser-Agent: timbroadcast\r\nContent-Type: application/json\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	if cap(b) <= 64<<10 {
		*rb = b
	}
	var wrote func(time.Time)
	if tr := traceFrom(ctx); tr != nil && tr.Wrote != nil {
		wrote = tr.Wrote
	}
	buf := answerBufs.Get().(*bytes.Buffer)
	defer putAnswerBuf(buf)
	buf.Reset()
	start := time.Now()
	ex, err := c.pool.post(ctx, tg, deadline, b, buf, wrote)
	latency = time.Since(start)
	if err != nil {
		return nil, ex.status, latency, ex.written, redact(tg.name, err, append(c.signer.keys(), sig)...)
	}
	resp, err = c.answer(tg.name, ex.status, ex.location, buf.Bytes())
	return resp, ex.status, latency, true, err
}

// appendQuery appends a call's query to b as url.Values.Encode writes it
// (keys sorted) without its map, a random of its own each attempt: from
// the fixed parts made once per client and the UserSig escaped once per
// signature.
func (c *Client) appendQuery(b []byte, sig string) []byte {
	b = append(b, c.queryHead...)
	b = strconv.AppendUint(b, uint64(rand.Uint32()), 10)
	b = append(b, c.queryMid...)
	return append(b, c.escape(sig)...)
}

// answer decodes an answer's body b (read, never kept: DecodeResponse
// copies what it keeps) for its status.
func (c *Client) answer(target string, status int, location string, b []byte) (*Response, error) {
	if status >= 300 && status < 400 {
		// Never followed (the client refuses every redirect): the request
		// carries the UserSig, and a 307/308 would send it and the body
		// wherever it points, http:// included.
		return nil, &RedirectError{Status: status, Location: redirectHost(location)}
	}
	if status != http.StatusOK {
		return nil, nil
	}
	resp, err := DecodeResponse(b)
	if err != nil {
		return nil, &requestError{target: target, cause: err}
	}
	return resp, nil
}

// requestBufs are the buffers requests are written from.
var requestBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2<<10); return &b }}

// escape is sig escaped for the query, made once per signature.
func (c *Client) escape(sig string) string {
	if e := c.escapedSig.Load(); e != nil && e.sig == sig {
		return e.escaped
	}
	e := &escapedSig{sig: sig, escaped: url.QueryEscape(sig)}
	c.escapedSig.Store(e)
	return e.escaped
}

// maxAnswer bounds the bytes of an answer read.
const maxAnswer = 1 << 20

// answerBufs are the buffers answers are read into: an answer is decoded
// before its call returns, so its buffer serves the next one.
var answerBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// putAnswerBuf returns buf to answerBufs unless an answer far larger than
// the API's grew it.
func putAnswerBuf(buf *bytes.Buffer) {
	if buf.Cap() <= 64<<10 {
		answerBufs.Put(buf)
	}
}

// roundTrip makes req: straight through the client's transport when the
// client adds nothing to it (no cookie jar, no timeout of its own; no
// redirect is followed anyway), which spares http.Client's copies of the
// request's headers and its redirect bookkeeping on every call.
func (c *Client) roundTrip(req *http.Request) (*http.Response, error) {
	if c.http.Jar != nil || c.http.Timeout != 0 {
		return c.http.Do(req)
	}
	rt := c.http.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	return rt.RoundTrip(req)
}

// RedirectError is a 3xx answer: the endpoint (or something on the way)
// redirects. Every request would get it, so it pauses the worker.
type RedirectError struct {
	Status int
	// Location is the redirect's scheme and host ("" if none or
	// unreadable), never its path or query.
	Location string
}

func (e *RedirectError) Error() string {
	to := ""
	if e.Location != "" {
		to = " to " + e.Location
	}
	return fmt.Sprintf("HTTP %d: the endpoint redirects%s; redirects are never followed (the request carries the UserSig): "+
		"set TIM_ENDPOINT or TIM_REGION to the API's own address", e.Status, to)
}

// redirectHost is a Location header's scheme and host, bounded and
// printable ("" when it has none).
func redirectHost(loc string) string {
	u, err := url.Parse(loc)
	if err != nil || u.Host == "" {
		return ""
	}
	out := u.Scheme + "://" + u.Host
	if len(out) > 120 {
		out = out[:120]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, out)
}

// noRedirect is every client's CheckRedirect.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

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
