package sender_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// BenchmarkSend measures the client's own cost per call (encoding, signing
// from cache, HTTP round trip to a loopback emulator) with pacing disabled.
func BenchmarkSend(b *testing.B) {
	emu := sendertest.NewServer(sendertest.Options{AppID: testAppID, Admin: testAdmin, SecretKey: testKey})
	defer emu.Close()
	cfg := fastConfig(emu.URL)
	cfg.Rate = sender.Unlimited
	c, err := sender.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	b.ReportAllocs()
	i := uint32(0)
	for b.Loop() {
		i++
		if _, err := c.Send(ctx, textMessage(i, "benchmark announcement")); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPacedRate measures the achieved call rate against the
// configured one over 20 s (BENCH: go test -run '^$' -bench PacedRate
// -benchtime 1x ./sender). It reports calls/s and the ratio to the target.
func BenchmarkPacedRate(b *testing.B) {
	const target = 5.0
	const span = 20 * time.Second
	emu := sendertest.NewServer(sendertest.Options{AppID: testAppID, Admin: testAdmin, SecretKey: testKey, Rate: target})
	defer emu.Close()
	cfg := fastConfig(emu.URL)
	cfg.Rate = target
	c, err := sender.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), span)
		start := time.Now()
		calls := 0
		for i := uint32(1); ctx.Err() == nil; i++ {
			if _, err := c.Send(ctx, textMessage(i, "paced")); err == nil {
				calls++
			}
		}
		cancel()
		elapsed := time.Since(start).Seconds()
		st := emu.Stats()
		b.ReportMetric(float64(calls)/elapsed, "calls/s")
		b.ReportMetric(float64(calls)/elapsed/target, "of-target")
		b.ReportMetric(float64(st.ByCode[10023]), "10023s")
	}
}

// BenchmarkClientOverhead isolates the client's own cost: the server is a
// fixed OK answer, so what remains is validation, encoding, the cached
// signature, the query, and the HTTP client's round trip on loopback.
func BenchmarkClientOverhead(b *testing.B) {
	ok := []byte(`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgSeq":1}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write(ok)
	}))
	defer srv.Close()
	cfg := fastConfig(srv.URL)
	cfg.Rate = sender.Unlimited
	c, err := sender.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := textMessage(1, "benchmark announcement")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Send(ctx, msg); err != nil {
			b.Fatal(err)
		}
	}
}
