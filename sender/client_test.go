package sender_test

import (
	"context"
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

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

func TestSendClasses(t *testing.T) {
	tests := []struct {
		name         string
		codes        []int
		wantClass    sender.Class // 0: success
		wantCode     int
		wantAttempts int
	}{
		{"ok", nil, 0, 0, 1},
		{"internal error retried", []int{10002, 10002}, 0, 0, 3},
		{"frequency limit retried", []int{10023}, 0, 0, 2},
		{"rate limit codes retried", []int{60007, 60011, 60018, 60019}, 0, 0, 5},
		{"server timeouts retried", []int{60008, 60013, 60014, 70169, 70500, 10006}, 0, 0, 7},
		{"bad gateway retried", []int{sendertest.CodeBadGateway, sendertest.CodeBadGateway}, 0, 0, 3},
		{"lost answer retried", []int{sendertest.CodeDrop}, 0, 0, 2},
		{"expired signature renewed", []int{70001}, 0, 0, 2},
		{"expired, renewed, then other error, then expired again", []int{70052, 10002, 70001}, 0, 0, 4},
		{"expired twice in a row pauses", []int{70001, 70052}, sender.ClassPause, 70052, 2},
		{"60008 retried a few times", []int{60008, 60008, 60008}, 0, 0, 4},
		{"60008 persisting pauses", []int{60008, 60008, 60008, 60008}, sender.ClassPause, 60008, 4},
		{"key mismatch pauses", []int{70009}, sender.ClassPause, 70009, 1},
		{"wrong region pauses", []int{70016}, sender.ClassPause, 70016, 1},
		{"locked out pauses", []int{70050}, sender.ClassPause, 70050, 1},
		{"block list pauses", []int{70051}, sender.ClassPause, 70051, 1},
		{"app unknown pauses", []int{70020}, sender.ClassPause, 70020, 1},
		{"edition lacks feature pauses", []int{10059}, sender.ClassPause, 10059, 1},
		{"IP not allowed pauses", []int{60020}, sender.ClassPause, 60020, 1},
		{"unknown sender rejected", []int{10019}, sender.ClassReject, 10019, 1},
		{"bad signature renewed once", []int{70003}, 0, 0, 2},
		{"bad signature persists pauses", []int{70003, 60004}, sender.ClassPause, 60004, 2},
		{"feature off pauses", []int{10007}, sender.ClassPause, 10007, 1},
		{"command disabled pauses", []int{10026}, sender.ClassPause, 10026, 1},
		{"app disabled pauses", []int{60006}, sender.ClassPause, 60006, 1},
		{"not admin pauses", []int{70403}, sender.ClassPause, 70403, 1},
		{"invalid command pauses", []int{10003}, sender.ClassPause, 10003, 1},
		{"invalid parameter rejected", []int{10004}, sender.ClassReject, 10004, 1},
		{"moderation rejected", []int{80001}, sender.ClassReject, 80001, 1},
		{"too long rejected", []int{80002}, sender.ClassReject, 80002, 1},
		{"malformed rejected", []int{60003}, sender.ClassReject, 60003, 1},
		{"unknown code retried then rejected", []int{12345, 12345, 12345, 12345}, sender.ClassReject, 12345, 4},
		{"unknown code then ok", []int{12345, 12345}, 0, 0, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			emu := newEmulator(t, sendertest.Options{Faults: sendertest.Faults{Codes: tt.codes}})
			c := newClient(t, fastConfig(emu.URL))
			resp, err := c.Send(context.Background(), textMessage(42, "hello"))
			calls := emu.Stats().Calls
			if calls != tt.wantAttempts {
				t.Errorf("emulator saw %d calls, want %d", calls, tt.wantAttempts)
			}
			if tt.wantClass == 0 {
				if err != nil {
					t.Fatalf("Send: %v, want success", err)
				}
				if resp.Attempts != tt.wantAttempts {
					t.Errorf("Attempts = %d, want %d", resp.Attempts, tt.wantAttempts)
				}
				d := emu.Delivered()
				if len(d) != 1 || d[0].Random != 42 {
					t.Fatalf("delivered %+v, want exactly one message with Random 42", d)
				}
				return
			}
			var se *sender.Error
			if !errors.As(err, &se) {
				t.Fatalf("Send error = %v (%T), want *sender.Error", err, err)
			}
			if se.Class != tt.wantClass || se.Code != tt.wantCode || se.Attempts != tt.wantAttempts {
				t.Errorf("got class %v code %d attempts %d, want %v %d %d", se.Class, se.Code, se.Attempts, tt.wantClass, tt.wantCode, tt.wantAttempts)
			}
			if n := len(emu.Delivered()); n != 0 {
				t.Errorf("delivered %d messages, want 0", n)
			}
		})
	}
}

// TestRetrySameBytes checks that every attempt of one send carries the same
// body bytes (and so the same Random) while the query's random is fresh.
func TestRetrySameBytes(t *testing.T) {
	emu := newEmulator(t, sendertest.Options{Faults: sendertest.Faults{Codes: []int{10002, sendertest.CodeBadGateway, 10023}}})
	var mu sync.Mutex
	var bodies []string
	var randoms []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		randoms = append(randoms, r.URL.Query().Get("random"))
		mu.Unlock()
		r.Body = nopBody{strings.NewReader(string(b))}
		emu.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	c := newClient(t, fastConfig(proxy.URL))
	if _, err := c.Send(context.Background(), textMessage(7, "same bytes")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(bodies) != 4 {
		t.Fatalf("got %d attempts, want 4", len(bodies))
	}
	seen := map[string]bool{}
	for i, b := range bodies {
		if b != bodies[0] {
			t.Errorf("attempt %d body %q differs from first %q", i, b, bodies[0])
		}
		if seen[randoms[i]] {
			t.Errorf("query random %s reused", randoms[i])
		}
		seen[randoms[i]] = true
	}
}

type nopBody struct{ *strings.Reader }

func (nopBody) Close() error { return nil }

// TestLostAnswerDeliveredOnce: the server processes the call, the answer is
// lost, the client retries: the emulator's dedupe makes it one delivery.
func TestLostAnswerDeliveredOnce(t *testing.T) {
	emu := newEmulator(t, sendertest.Options{Faults: sendertest.Faults{Codes: []int{sendertest.CodeDrop, sendertest.CodeDrop}}})
	c := newClient(t, fastConfig(emu.URL))
	if _, err := c.Send(context.Background(), textMessage(99, "once")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	st := emu.Stats()
	if st.Calls != 3 || st.Delivered != 1 || st.Duplicates != 2 {
		t.Fatalf("stats %+v, want 3 calls, 1 delivered, 2 duplicates", st)
	}
}

func TestExpiredSignatureRenewed(t *testing.T) {
	emu := newEmulator(t, sendertest.Options{})
	c := newClient(t, fastConfig(emu.URL))
	ctx := context.Background()
	if _, err := c.Send(ctx, textMessage(1, "a")); err != nil {
		t.Fatalf("first Send: %v", err)
	}
	emu.ExpireSignatures()
	resp, err := c.Send(ctx, textMessage(2, "b"))
	if err != nil {
		t.Fatalf("Send after expiry: %v", err)
	}
	if resp.Attempts != 2 {
		t.Errorf("Attempts = %d, want 2 (one refused, one with a renewed signature)", resp.Attempts)
	}
	if got := emu.Stats().ByCode[70001]; got != 1 {
		t.Errorf("emulator answered 70001 %d times, want 1", got)
	}
}

func TestSignatureLifetimeRenewal(t *testing.T) {
	// A 1s signature lifetime is renewed at 80%: calls spread over more
	// than its life never meet an expired one.
	emu := newEmulator(t, sendertest.Options{})
	cfg := fastConfig(emu.URL)
	cfg.SigLifetime = time.Second
	cfg.Rate = 4
	c := newClient(t, cfg)
	for i := range 10 {
		if _, err := c.Send(context.Background(), textMessage(uint32(i+1), "tick")); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	if n := emu.Stats().ByCode[70001]; n != 0 {
		t.Errorf("emulator answered 70001 %d times, want 0", n)
	}
}

// deadEndpoint returns a base URL on which nothing listens.
func deadEndpoint(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestFailoverToStandby(t *testing.T) {
	emu := newEmulator(t, sendertest.Options{})
	var attempts []sender.Attempt
	cfg := fastConfig(deadEndpoint(t), emu.URL)
	cfg.Observe = func(a sender.Attempt) { attempts = append(attempts, a) }
	c := newClient(t, cfg)
	for i := range 3 {
		if _, err := c.Send(context.Background(), textMessage(uint32(10+i), "failover")); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	if len(attempts) != 4 {
		t.Fatalf("got %d attempts, want 4 (one failed on the primary, three on the standby)", len(attempts))
	}
	if attempts[0].Err == nil || attempts[0].Endpoint != cfg.Endpoints[0] {
		t.Errorf("first attempt %+v, want a failure on the primary", attempts[0])
	}
	for _, a := range attempts[1:] {
		if a.Endpoint != emu.URL || a.Code != 0 {
			t.Errorf("attempt %+v, want success on the standby %s", a, emu.URL)
		}
	}
}

func TestFailback(t *testing.T) {
	emu := newEmulator(t, sendertest.Options{Faults: sendertest.Faults{Codes: []int{sendertest.CodeBadGateway}}})
	standby := newEmulator(t, sendertest.Options{})
	cfg := fastConfig(emu.URL, standby.URL)
	cfg.FailbackAfter = 200 * time.Millisecond
	c := newClient(t, cfg)
	for i := range 3 {
		if i == 1 {
			time.Sleep(cfg.FailbackAfter) // let the failback time pass
		}
		if _, err := c.Send(context.Background(), textMessage(uint32(20+i), "failback")); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	if got := len(standby.Delivered()); got != 1 {
		t.Errorf("standby delivered %d, want 1 (the retry after the 502)", got)
	}
	if got := len(emu.Delivered()); got != 2 {
		t.Errorf("primary delivered %d, want 2 (after failing back)", got)
	}
}

// TestRedaction: neither the secret key nor any UserSig appears in log lines
// or error strings, whatever failed (refused connections, timeouts, API
// errors).
func TestRedaction(t *testing.T) {
	emu := newEmulator(t, sendertest.Options{Faults: sendertest.Faults{Codes: []int{10002, 70001, 10007}}})
	var mu sync.Mutex
	sigs := map[string]bool{}
	recorder := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sigs[r.URL.Query().Get("usersig")] = true
		mu.Unlock()
		emu.ServeHTTP(w, r)
	})
	rec := httptest.NewServer(recorder)
	defer rec.Close()
	slow := sendertest.NewServer(sendertest.Options{AppID: testAppID, Admin: testAdmin, SecretKey: testKey,
		Faults: sendertest.Faults{Latency: 200 * time.Millisecond}})
	defer slow.Close()

	core, logs := observer.New(zap.DebugLevel)
	var errs []error
	run := func(cfg sender.Config) {
		cfg.Logger = zap.New(core)
		c := newClient(t, cfg)
		_, err := c.Send(context.Background(), textMessage(5, "secret-free"))
		errs = append(errs, err)
	}
	// Refused connection, then API errors through to a pause.
	run(fastConfig(deadEndpoint(t), rec.URL))
	// Per-attempt timeouts (the *url.Error case), then give up.
	cfg := fastConfig(slow.URL)
	cfg.AttemptTimeout = 20 * time.Millisecond
	cfg.MaxElapsed = 100 * time.Millisecond
	run(cfg)

	if len(sigs) == 0 {
		t.Fatal("no signature recorded")
	}
	secrets := []string{testKey}
	for s := range sigs {
		secrets = append(secrets, s)
	}
	var texts []string
	for _, e := range errs {
		if e == nil {
			t.Fatal("want every send to fail")
		}
		texts = append(texts, e.Error())
	}
	for _, entry := range logs.All() {
		line := entry.Message
		for k, v := range entry.ContextMap() {
			line += " " + k + "=" + toString(v)
		}
		texts = append(texts, line)
	}
	if len(texts) < 5 {
		t.Fatalf("only %d texts to check; want the failures logged", len(texts))
	}
	for _, text := range texts {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("credential leaked in %q", text)
			}
		}
	}
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	if e, ok := v.(error); ok {
		return e.Error()
	}
	return ""
}

func TestContextEndsRetries(t *testing.T) {
	emu := newEmulator(t, sendertest.Options{Faults: sendertest.Faults{InternalErrorRate: 1}})
	c := newClient(t, fastConfig(emu.URL))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Send(ctx, textMessage(3, "never"))
	var se *sender.Error
	if !errors.As(err, &se) || se.Class != sender.ClassRetry || se.Code != 10002 {
		t.Fatalf("Send = %v, want a retry-class error with the last code 10002", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
}

func TestValidationFailsBeforeAnyCall(t *testing.T) {
	emu := newEmulator(t, sendertest.Options{})
	c := newClient(t, fastConfig(emu.URL))
	_, err := c.Send(context.Background(), &sender.Message{Random: 1})
	var se *sender.Error
	if !errors.As(err, &se) || se.Class != sender.ClassReject || se.Field != "MsgBody" {
		t.Fatalf("Send = %v, want a reject naming MsgBody", err)
	}
	if n := emu.Stats().Calls; n != 0 {
		t.Errorf("emulator saw %d calls, want 0", n)
	}
}

// TestPacingAvoids10023: a client paced at the emulator's limit is never
// answered 10023, and concurrent callers share the one limiter.
func TestPacingAvoids10023(t *testing.T) {
	emu := newEmulator(t, sendertest.Options{Rate: 20})
	cfg := fastConfig(emu.URL)
	cfg.Rate = 20
	c := newClient(t, cfg)
	var wg sync.WaitGroup
	for g := range 5 {
		wg.Go(func() {
			for i := range 5 {
				if _, err := c.Send(context.Background(), textMessage(uint32(g*100+i+1), "paced")); err != nil {
					t.Errorf("Send: %v", err)
				}
			}
		})
	}
	wg.Wait()
	st := emu.Stats()
	if st.ByCode[10023] != 0 || st.Delivered != 25 {
		t.Fatalf("stats %+v, want 25 delivered and no 10023", st)
	}
}

// TestUnpacedGets10023: without pacing the emulator does answer 10023, so
// the test above is meaningful; the client retries until all are delivered.
func TestUnpacedGets10023(t *testing.T) {
	emu := newEmulator(t, sendertest.Options{Rate: 20})
	cfg := fastConfig(emu.URL)
	cfg.Rate = sender.Unlimited
	c := newClient(t, cfg)
	for i := range 25 {
		if _, err := c.Send(context.Background(), textMessage(uint32(i+1), "unpaced")); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	st := emu.Stats()
	if st.ByCode[10023] == 0 || st.Delivered != 25 {
		t.Fatalf("stats %+v, want some 10023 answers and 25 delivered", st)
	}
}

func TestConfigValidate(t *testing.T) {
	base := fastConfig("http://127.0.0.1:1")
	tests := []struct {
		name   string
		mutate func(*sender.Config)
		want   string
	}{
		{"app id", func(c *sender.Config) { c.AppID = 0 }, "AppID"},
		{"admin", func(c *sender.Config) { c.Admin = "" }, "Admin"},
		{"key", func(c *sender.Config) { c.SecretKey = "" }, "SecretKey"},
		{"endpoint", func(c *sender.Config) { c.Endpoints = nil }, "endpoint"},
		{"endpoint scheme", func(c *sender.Config) { c.Endpoints = []string{"ftp://x"} }, "ftp://x"},
		{"rate", func(c *sender.Config) { c.Rate = -1 }, "Rate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mutate(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error naming %q", err, tt.want)
			}
		})
	}
	if err := base.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
}

func TestRegionEndpoints(t *testing.T) {
	eps, err := sender.RegionEndpoints("Silicon Valley")
	if err != nil || len(eps) != 2 || eps[0] != "https://adminapiusa.im.qcloud.com" || eps[1] != "https://adminapiusa.my-imcloud.com" {
		t.Fatalf("RegionEndpoints = %v, %v", eps, err)
	}
	eps, err = sender.RegionEndpoints("tokyo")
	if err != nil || len(eps) != 2 || eps[1] != "https://adminapijpn.my-imcloud.com" {
		t.Fatalf("tokyo: %v, %v; want the primary and the documented standby", eps, err)
	}
	eps, err = sender.RegionEndpoints("mumbai")
	if err != nil || len(eps) != 2 || eps[0] != "https://adminapiind.im.qcloud.com" || eps[1] != "https://adminapiind.my-imcloud.com" {
		t.Fatalf("mumbai: %v, %v", eps, err)
	}
	if _, err := sender.RegionEndpoints("mars"); err == nil || !strings.Contains(err.Error(), "singapore") {
		t.Fatalf("unknown region error %v should list the known ones", err)
	}
}

// TestRateAdaptsTo10023: answers of 10023 lower the pacing rate; successes
// bring it back to the configured ceiling.
func TestRateAdaptsTo10023(t *testing.T) {
	emu := newEmulator(t, sendertest.Options{Faults: sendertest.Faults{Codes: []int{10023, 10023}}})
	cfg := fastConfig(emu.URL)
	cfg.Rate = 400
	var rates []float64
	cfg.Observe = func(a sender.Attempt) { rates = append(rates, a.Rate) }
	c := newClient(t, cfg)
	if _, err := c.Send(context.Background(), textMessage(1, "x")); err != nil {
		t.Fatal(err)
	}
	if len(rates) != 3 || rates[0] != 280 || rates[1] != 196 || rates[2] != 216 {
		t.Fatalf("rates after each attempt %v, want [280 196 216]", rates)
	}
	for i := range 20 {
		if _, err := c.Send(context.Background(), textMessage(uint32(i+2), "x")); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.Rate(); got != 400 {
		t.Errorf("rate %v after successes, want back at 400", got)
	}
	c.SetRate(100)
	if got := c.Rate(); got != 100 {
		t.Errorf("rate %v after SetRate(100)", got)
	}
}

// TestFrequencyLimitCodesSlowPacing: every documented frequency-limit
// answer lowers the pacing rate; other retried answers do not.
func TestFrequencyLimitCodesSlowPacing(t *testing.T) {
	for _, tt := range []struct {
		code  int
		slows bool
	}{{10023, true}, {10006, true}, {60007, true}, {60011, true}, {60018, true}, {60019, true}, {10002, false}, {60013, false}} {
		emu := newEmulator(t, sendertest.Options{Faults: sendertest.Faults{Codes: []int{tt.code}}})
		cfg := fastConfig(emu.URL)
		cfg.Rate = 100
		var rates []float64
		cfg.Observe = func(a sender.Attempt) { rates = append(rates, a.Rate) }
		c := newClient(t, cfg)
		if _, err := c.Send(context.Background(), textMessage(7, "x")); err != nil {
			t.Fatalf("%d: %v", tt.code, err)
		}
		if len(rates) != 2 {
			t.Fatalf("%d: %d attempts observed", tt.code, len(rates))
		}
		if slowed := rates[0] < 100; slowed != tt.slows {
			t.Errorf("code %d: rate after it %v; want slowed %v", tt.code, rates[0], tt.slows)
		}
	}
}

// TestRedirectNotFollowed: a 307 (or 308, 302) from the endpoint is never
// followed, so the UserSig and the body go nowhere else; the send pauses
// with a message naming the redirect's host and what to fix.
func TestRedirectNotFollowed(t *testing.T) {
	var elsewhere atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	defer target.Close()
	for _, code := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusFound} {
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/steal?usersig=x", code)
		}))
		c := newClient(t, fastConfig(redirector.URL))
		_, err := c.Send(context.Background(), textMessage(1, "hi"))
		redirector.Close()
		var se *sender.Error
		if !errors.As(err, &se) || se.Class != sender.ClassPause || se.HTTPStatus != code ||
			!strings.Contains(se.Info, "redirects are never followed") || !strings.Contains(se.Info, strings.TrimPrefix(target.URL, "http://")) {
			t.Errorf("HTTP %d: got %v, want a pause naming the redirect", code, err)
		}
		if strings.Contains(err.Error(), "steal") {
			t.Errorf("HTTP %d: the error carries the redirect's path: %q", code, err)
		}
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect was followed %d times", n)
	}
}

// TestTraceLeaving: a send's Trace hears of every attempt right before
// its request is made (Leaving, with the attempt's Start) and again after
// it (Attempt), and when the request was written to its connection
// (Wrote, from the transport's goroutine), so a caller that paces by its
// own calls can space the next one from the real departure.
func TestTraceLeaving(t *testing.T) {
	emu := newEmulator(t, sendertest.Options{Faults: sendertest.Faults{Codes: []int{10002, 10002}}})
	var mu sync.Mutex
	var arrived []time.Time
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrived = append(arrived, time.Now())
		mu.Unlock()
		emu.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	c := newClient(t, fastConfig(proxy.URL))
	var leaving, starts, wrote []time.Time
	ctx := sender.WithTrace(context.Background(), &sender.Trace{
		Leaving: func(at time.Time) { leaving = append(leaving, at) },
		Wrote: func(at time.Time) {
			mu.Lock()
			wrote = append(wrote, at)
			mu.Unlock()
		},
		Attempt: func(a sender.Attempt) {
			if len(leaving) != a.Number {
				t.Errorf("attempt %d reported after %d departures, want as many", a.Number, len(leaving))
			}
			starts = append(starts, a.Start)
		},
	})
	if _, err := c.Send(ctx, textMessage(8, "leaving")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(leaving) != 3 || len(starts) != 3 || len(arrived) != 3 || len(wrote) != 3 {
		t.Fatalf("%d departures, %d attempts, %d requests at the server, %d written; want 3 each", len(leaving), len(starts),
			len(arrived), len(wrote))
	}
	for i := range leaving {
		if !leaving[i].Equal(starts[i]) {
			t.Errorf("attempt %d: departure %v, start %v; want the same", i+1, leaving[i], starts[i])
		}
		if leaving[i].After(arrived[i]) {
			t.Errorf("attempt %d: departure reported after the server had the request", i+1)
		}
		if wrote[i].Before(leaving[i]) || i > 0 && !wrote[i].After(arrived[i-1]) {
			t.Errorf("attempt %d: written at %v, before it left (%v) or before the previous attempt's answer", i+1, wrote[i], leaving[i])
		}
	}
}
