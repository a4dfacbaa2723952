package sender_test

import (
	"testing"
	"time"

	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

const (
	testAppID = 1400000001
	testAdmin = "administrator"
	testKey   = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
)

func newEmulator(t *testing.T, opts sendertest.Options) *sendertest.Server {
	t.Helper()
	opts.AppID, opts.Admin, opts.SecretKey = testAppID, testAdmin, testKey
	s := sendertest.NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

// fastConfig returns a client configuration for tests: fast pacing and
// short backoffs.
func fastConfig(endpoints ...string) sender.Config {
	return sender.Config{
		AppID: testAppID, Admin: testAdmin, SecretKey: testKey,
		Endpoints: endpoints, Rate: 200,
		RetryInitial: time.Millisecond, RetryMax: 5 * time.Millisecond,
		AttemptTimeout: 2 * time.Second,
	}
}

func newClient(t *testing.T, cfg sender.Config) *sender.Client {
	t.Helper()
	c, err := sender.New(cfg)
	if err != nil {
		t.Fatalf("sender.New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func textMessage(random uint32, text string) *sender.Message {
	return &sender.Message{Random: random, MsgBody: []sender.Element{sender.Text(text)}}
}
