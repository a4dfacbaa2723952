package consumer_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/timbroadcast/timbroadcast/consumer"
)

func TestConfigValidate(t *testing.T) {
	valid := func() consumer.Config {
		return consumer.Config{Brokers: []string{"k:9092"}, Topic: "t", GroupID: "g", DLQTopic: "t.dlq"}
	}
	tests := []struct {
		name    string
		mutate  func(*consumer.Config)
		field   string
		related []string
	}{
		{"valid", func(*consumer.Config) {}, "", nil},
		{"no brokers", func(c *consumer.Config) { c.Brokers = nil }, "Brokers", nil},
		{"dlq is the topic", func(c *consumer.Config) { c.DLQTopic = "t" }, "DLQTopic", []string{"Topic"}},
		{"urgent is the dlq", func(c *consumer.Config) { c.UrgentTopic = "t.dlq" }, "UrgentTopic", []string{"Topic", "DLQTopic"}},
		{"receipts to the urgent topic", func(c *consumer.Config) { c.UrgentTopic, c.ReceiptTopic = "u", "u" }, "ReceiptTopic",
			[]string{"Topic", "DLQTopic", "UrgentTopic"}},
		{"merge too small", func(c *consumer.Config) { c.MergeMaxBytes = consumer.MinMergeMaxBytes - 1 }, "MergeMaxBytes", nil},
		{"merge too large", func(c *consumer.Config) { c.MergeMaxBytes = 12001 }, "MergeMaxBytes", nil},
		{"merge default", func(c *consumer.Config) { c.MergeMaxBytes = 0 }, "", nil},
		{"negative duration", func(c *consumer.Config) { c.StuckAfter = -time.Second }, "StuckAfter", nil},
		{"heartbeat as long as the session", func(c *consumer.Config) { c.HeartbeatInterval, c.SessionTimeout = time.Second, time.Second },
			"HeartbeatInterval", []string{"SessionTimeout"}},
		{"grace as long as the rebalance timeout", func(c *consumer.Config) { c.RevokeGrace, c.RebalanceTimeout = 3*time.Second, 3*time.Second },
			"RevokeGrace", []string{"RebalanceTimeout"}},
		// Defaults that would conflict fit what is set: a third of it.
		{"short session, default heartbeat", func(c *consumer.Config) { c.SessionTimeout = time.Second }, "", nil},
		{"short rebalance timeout, default grace", func(c *consumer.Config) { c.RebalanceTimeout = time.Second }, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(&c)
			err := c.Validate()
			var fe *consumer.FieldError
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if !errors.As(err, &fe) || fe.Field != tt.field || strings.Join(fe.Related, ",") != strings.Join(tt.related, ",") {
				t.Fatalf("Validate = %#v, want a FieldError on %s related to %v", err, tt.field, tt.related)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("%q does not name %s", err, tt.field)
			}
		})
	}
	if got := consumer.DefaultConfig().MergeMaxBytes; got != 12000 {
		t.Errorf("default MergeMaxBytes %d, want 12000", got)
	}
}
