package sender_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

const okAnswer = `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgSeq":7}`

// rawServer is a TCP server that reads HTTP requests and answers each as
// answer says, byte for byte; it counts connections and requests.
type rawServer struct {
	ln       net.Listener
	conns    atomic.Int32
	requests atomic.Int32
	wg       sync.WaitGroup
}

// newRawServer serves answer(n, conn) for the n-th request (from 1): it
// writes the answer and says whether to keep the connection.
func newRawServer(t testing.TB, answer func(n int32, c net.Conn) bool) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	var open sync.Map
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			open.Store(c, true)
			s.wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					if !answer(s.requests.Add(1), c) {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		open.Range(func(c, _ any) bool { _ = c.(net.Conn).Close(); return true })
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) url() string { return "http://" + s.ln.Addr().String() }

func okWith(headers string) func(int32, net.Conn) bool {
	return func(_ int32, c net.Conn) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"+headers+"Content-Length: "+
			itoa(len(okAnswer))+"\r\n\r\n"+okAnswer)
		return true
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		if n /= 10; n == 0 {
			return string(b[i:])
		}
	}
}

// TestTransportKeepsConnections: sequential calls share one connection,
// and two clients of one Transport share its connections to their host.
func TestTransportKeepsConnections(t *testing.T) {
	s := newRawServer(t, okWith(""))
	pool := sender.NewTransport()
	defer pool.CloseIdleConnections()
	cfg := fastConfig(s.url())
	cfg.Transport = pool
	a := newClient(t, cfg)
	cfg.AppID++
	b := newClient(t, cfg)
	for i := range 20 {
		c := a
		if i%2 == 1 {
			c = b
		}
		resp, err := c.Send(context.Background(), textMessage(uint32(i+1), "kept"))
		if err != nil || resp.MsgSeq != 7 {
			t.Fatalf("call %d: %v, %+v", i, err, resp)
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Fatalf("20 calls of two apps made %d connections, want 1", n)
	}
}

// TestTransportServerClosedIdle: a kept connection the server closed
// after its answer is replaced at the next call, which succeeds at its
// first attempt.
func TestTransportServerClosedIdle(t *testing.T) {
	s := newRawServer(t, func(n int32, c net.Conn) bool {
		okWith("")(n, c)
		return false // closed after every answer, without saying so
	})
	var attempts atomic.Int32
	cfg := fastConfig(s.url())
	cfg.Observe = func(a sender.Attempt) { attempts.Add(1) }
	c := newClient(t, cfg)
	for i := range 5 {
		if _, err := c.Send(context.Background(), textMessage(uint32(i+1), "again")); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if n := attempts.Load(); n != 5 {
		t.Fatalf("5 calls took %d attempts, want 5 (a closed idle connection is not a failed attempt)", n)
	}
	if n := s.requests.Load(); n < 5 || n > 9 {
		t.Fatalf("server saw %d requests for 5 calls", n)
	}
}

// TestTransportAnswers: answers of every framing are read, hostile ones
// fail the attempt within their bounds, and the next call works.
func TestTransportAnswers(t *testing.T) {
	body := okAnswer
	cases := []struct {
		name   string
		answer string
		ok     bool
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body, true},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
			hex(len(body)/10) + "\r\n" + body[:len(body)/10] + "\r\n" + hex(len(body)-len(body)/10) + "\r\n" + body[len(body)/10:] + "\r\n0\r\n\r\n", true},
		{"until close", "HTTP/1.0 200 OK\r\n\r\n" + body, true},
		{"interim first", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body, true},
		{"interim forever", strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 50), false},
		{"switching", "HTTP/1.1 101 Switching Protocols\r\n\r\n", false},
		{"garbage", "SMTP ready\r\n\r\n", false},
		{"header flood", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Flood: "+strings.Repeat("a", 1000)+"\r\n", 200) + "\r\n", false},
		{"body over 1 MiB", "HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n" + strings.Repeat(" ", 2000000), false},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" + body, false},
		{"server error", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newRawServer(t, func(n int32, c net.Conn) bool {
				if n == 1 {
					_, _ = io.WriteString(c, tc.answer)
					return false
				}
				return okWith("")(n, c)
			})
			cfg := fastConfig(s.url())
			cfg.MaxElapsed = time.Nanosecond // one attempt
			c := newClient(t, cfg)
			start := time.Now()
			resp, err := c.Send(context.Background(), textMessage(1, "framing"))
			if took := time.Since(start); took > time.Second {
				t.Fatalf("the answer took %s", took)
			}
			if tc.ok && (err != nil || resp.MsgSeq != 7) {
				t.Fatalf("want the answer read, got %v, %+v", err, resp)
			}
			if !tc.ok && err == nil {
				t.Fatalf("want the attempt failed, got %+v", resp)
			}
			cfg.MaxElapsed = 0
			c2 := newClient(t, cfg)
			if _, err := c2.Send(context.Background(), textMessage(2, "next")); err != nil {
				t.Fatalf("the call after: %v", err)
			}
		})
	}
}

func hex(n int) string {
	const digits = "0123456789abcdef"
	s := ""
	for {
		s = string(digits[n%16]) + s
		if n /= 16; n == 0 {
			return s
		}
	}
}

// TestTransportCancel: a call whose request went out and whose answer
// never comes ends with its context, and counts as possibly delivered.
func TestTransportCancel(t *testing.T) {
	s := newRawServer(t, func(int32, net.Conn) bool { <-t.Context().Done(); return false })
	var uncertain atomic.Bool
	cfg := fastConfig(s.url())
	cfg.AttemptTimeout = time.Minute
	cfg.Observe = func(a sender.Attempt) { uncertain.Store(a.Uncertain) }
	c := newClient(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Send(ctx, textMessage(1, "cut"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the context's end, got %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the call ended %s after it started, want about 100ms", took)
	}
	if !uncertain.Load() {
		t.Fatal("a request written without an answer must count as possibly delivered")
	}
}

// TestTransportTimeout: an answer that does not come within the attempt
// timeout fails the attempt as a timeout.
func TestTransportTimeout(t *testing.T) {
	s := newRawServer(t, func(int32, net.Conn) bool { <-t.Context().Done(); return false })
	cfg := fastConfig(s.url())
	cfg.AttemptTimeout = 100 * time.Millisecond
	cfg.MaxElapsed = time.Nanosecond
	c := newClient(t, cfg)
	_, err := c.Send(context.Background(), textMessage(1, "slow"))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("want a timeout, got %v", err)
	}
}

// TestTransportTLS: https endpoints are dialled with TLS, verified
// against the configured roots, and their connections kept.
func TestTransportTLS(t *testing.T) {
	emu := sendertest.NewServer(sendertest.Options{AppID: testAppID, Admin: testAdmin, SecretKey: testKey})
	defer emu.Close()
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(emu)
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())

	cfg := fastConfig(srv.URL)
	cfg.Transport = &sender.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	c := newClient(t, cfg)
	for i := range 3 {
		if _, err := c.Send(context.Background(), textMessage(uint32(i+1), "tls")); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("3 calls made %d TLS connections, want 1", n)
	}
	if n := len(emu.Delivered()); n != 3 {
		t.Fatalf("%d delivered, want 3", n)
	}

	cfg.Transport = sender.NewTransport() // the system's roots: the test CA is not among them
	cfg.MaxElapsed = time.Nanosecond
	untrusted := newClient(t, cfg)
	if _, err := untrusted.Send(context.Background(), textMessage(9, "tls")); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("want the certificate refused, got %v", err)
	}
}

// FuzzTransportAnswer: whatever bytes a server answers, the call ends
// within its timeout, without a panic, and the next call on the same
// client works.
func FuzzTransportAnswer(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 62\r\n\r\n" + okAnswer))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e\r\n" + okAnswer + "\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n"))
	f.Add([]byte("HTTP/1.1 302 Found\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n{}"))
	var answer atomic.Pointer[[]byte]
	s := newRawServer(f, func(_ int32, c net.Conn) bool {
		if b := answer.Load(); b != nil {
			_, _ = c.Write(*b)
			return false
		}
		return okWith("")(0, c)
	})
	cfg := fastConfig(s.url())
	cfg.AttemptTimeout = 500 * time.Millisecond
	cfg.MaxElapsed = time.Nanosecond
	c, err := sender.New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	defer c.Close()
	f.Fuzz(func(t *testing.T, b []byte) {
		answer.Store(&b)
		start := time.Now()
		_, _ = c.Send(context.Background(), textMessage(1, "fuzz"))
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("the call took %s", took)
		}
		answer.Store(nil)
		if _, err := c.Send(context.Background(), textMessage(2, "after")); err != nil {
			t.Fatalf("the call after: %v", err)
		}
	})
}

// TestHTTPClientPath: a configured http.Client (or a proxy of the
// environment) takes net/http's transport: answers are read and
// classified as over the pool, redirects never followed.
func TestHTTPClientPath(t *testing.T) {
	emu := newEmulator(t, sendertest.Options{})
	cfg := fastConfig(emu.URL)
	cfg.HTTPClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	c := newClient(t, cfg)
	for i := range 3 {
		if resp, err := c.Send(context.Background(), textMessage(uint32(i+1), "net/http")); err != nil || resp.MsgSeq == 0 {
			t.Fatalf("call %d: %v, %+v", i, err, resp)
		}
	}
	s := newRawServer(t, func(_ int32, c net.Conn) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere.example/x?usersig=1\r\nContent-Length: 0\r\n\r\n")
		return true
	})
	for _, viaClient := range []bool{true, false} {
		cfg := fastConfig(s.url())
		if viaClient {
			cfg.HTTPClient = &http.Client{}
		}
		_, err := newClient(t, cfg).Send(context.Background(), textMessage(9, "redirected"))
		var se *sender.Error
		if !errors.As(err, &se) || se.Class != sender.ClassPause || !strings.Contains(err.Error(), "elsewhere.example") || strings.Contains(err.Error(), "usersig") {
			t.Errorf("http.Client %v: want a pause naming the redirect's host alone, got %v", viaClient, err)
		}
	}
	if n := s.requests.Load(); n != 2 {
		t.Errorf("the redirecting server saw %d requests, want 2 (never followed, never retried)", n)
	}
}
