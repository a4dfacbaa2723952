package sender_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// TestUnknownOutcome checks which answers leave the outcome unknown and
// that the client stops resending once the server's dedupe window has
// passed since the first of them, instead of showing the message twice.
func TestUnknownOutcome(t *testing.T) {
	const window = 600 * time.Millisecond
	config := func(endpoint string, policy sender.UnknownPolicy) sender.Config {
		cfg := fastConfig(endpoint)
		cfg.DedupeWindow, cfg.AttemptTimeout, cfg.UnknownOutcome = window, 100*time.Millisecond, policy
		cfg.RetryInitial, cfg.RetryMax = 20*time.Millisecond, 40*time.Millisecond
		cfg.MaxElapsed = time.Second
		return cfg
	}
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + refused.Addr().String()
	refused.Close()

	cases := []struct {
		name   string
		faults sendertest.Faults
		closed bool // the endpoint refuses connections
		policy sender.UnknownPolicy
		// wantUnknown: the send ends outcome_unknown; else it ends as a
		// retry-class failure when MaxElapsed runs out.
		wantUnknown   bool
		wantDelivered int // messages the emulator showed
	}{
		{name: "answers lost after delivery", faults: sendertest.Faults{DropAfterProcessRate: 1}, wantUnknown: true, wantDelivered: 1},
		{name: "HTTP 502", faults: sendertest.Faults{BadGatewayRate: 1}, wantUnknown: true},
		{name: "10002 internal error", faults: sendertest.Faults{InternalErrorRate: 1}, wantUnknown: true},
		{name: "10023 proves not delivered", faults: sendertest.Faults{Answers: map[int]float64{10023: 1}}},
		{name: "connection refused proves not delivered", closed: true},
		// At least twice: every resend past the window is a new showing.
		{name: "resend keeps today's behaviour", faults: sendertest.Faults{DropAfterProcessRate: 1}, policy: sender.UnknownResend,
			wantDelivered: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			emu := newEmulator(t, sendertest.Options{Faults: tc.faults, DedupeWindow: window})
			url := emu.URL
			if tc.closed {
				url = closedURL
			}
			var mu sync.Mutex
			var attempts []sender.Attempt
			cfg := config(url, tc.policy)
			cfg.Observe = func(a sender.Attempt) {
				mu.Lock()
				attempts = append(attempts, a)
				mu.Unlock()
			}
			c := newClient(t, cfg)
			u := &sender.Uncertain{}
			start := time.Now()
			_, err := c.Send(sender.WithUncertain(context.Background(), u), textMessage(7, "hello"))
			var se *sender.Error
			if !errors.As(err, &se) {
				t.Fatalf("Send = %v, want a *sender.Error", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if got := se.Reason() == sender.ReasonOutcomeUnknown; got != tc.wantUnknown {
				t.Fatalf("Send ended %v (reason %s) after %s; want outcome_unknown %v", se, se.Reason(), time.Since(start), tc.wantUnknown)
			}
			if got := emu.Stats().Delivered; got != tc.wantDelivered && (tc.policy != sender.UnknownResend || got < tc.wantDelivered) {
				t.Errorf("emulator delivered %d messages, want %d", got, tc.wantDelivered)
			}
			switch {
			case tc.policy == sender.UnknownResend:
				// Resent past the window: shown again, as before the policy.
			case tc.wantUnknown:
				first := attempts[0].Start
				if !attempts[0].Uncertain || !u.Since().Equal(first) || !se.UncertainSince.Equal(first) {
					t.Errorf("first attempt uncertain %v at %s; Uncertain.Since %s, error's %s: want all the first attempt's start",
						attempts[0].Uncertain, first, u.Since(), se.UncertainSince)
				}
				last := attempts[len(attempts)-1].Start
				if budget := cfg.RetryWindow(); last.Sub(first) >= budget {
					t.Errorf("an attempt left %s after the first unknown outcome; the retry window is %s", last.Sub(first), budget)
				}
				if se.Class != sender.ClassReject {
					t.Errorf("class %s, want reject (dead-lettered, never retried)", se.Class)
				}
			default:
				for _, a := range attempts {
					if a.Uncertain {
						t.Fatalf("attempt %d (code %d, HTTP %d, %v) marked uncertain; its answer proves the message undelivered",
							a.Number, a.Code, a.HTTPStatus, a.Err)
					}
				}
				if !u.Since().IsZero() {
					t.Errorf("Uncertain.Since = %s, want zero", u.Since())
				}
			}
		})
	}

	t.Run("an earlier owner's attempt counts", func(t *testing.T) {
		emu := newEmulator(t, sendertest.Options{DedupeWindow: window})
		c := newClient(t, config(emu.URL, sender.UnknownDeadLetter))
		u := &sender.Uncertain{}
		u.Mark(time.Now().Add(-time.Second))
		_, err := c.Send(sender.WithUncertain(context.Background(), u), textMessage(8, "hello"))
		var se *sender.Error
		if !errors.As(err, &se) || se.Reason() != sender.ReasonOutcomeUnknown {
			t.Fatalf("Send = %v, want outcome_unknown at once", err)
		}
		if calls := emu.Stats().Calls; calls != 0 {
			t.Errorf("the emulator saw %d calls, want none", calls)
		}
	})
	t.Run("a window too short for the attempt timeout is refused", func(t *testing.T) {
		cfg := config("http://127.0.0.1:1", sender.UnknownDeadLetter)
		cfg.DedupeWindow = 100 * time.Millisecond
		if _, err := sender.New(cfg); err == nil {
			t.Fatal("New accepted a dedupe window shorter than the attempt timeout")
		}
	})
}
