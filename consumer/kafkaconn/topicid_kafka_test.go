package kafkaconn_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
)

// TestTopicIDs: a topic deleted and created again under its name has a new
// id, over TCP.
func TestTopicIDs(t *testing.T) {
	c := consumertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := c.Topic(t, "ids", 2)
	first, err := c.TopicIDs(ctx, []string{name, "no-such-topic"})
	if err != nil {
		t.Fatal(err)
	}
	if first[name].String() == "" {
		t.Fatalf("no id for %s: %v", name, first)
	}
	if _, ok := first["no-such-topic"]; ok {
		t.Errorf("an id for a topic that does not exist")
	}
	resp, err := c.Client().DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{name}})
	if err == nil {
		err = resp.Errors[name]
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CreateTopic(ctx, name, 2); err != nil {
		t.Fatal(err)
	}
	again, err := c.TopicIDs(ctx, []string{name})
	if err != nil {
		t.Fatal(err)
	}
	if again[name] == first[name] || again[name].String() == "" {
		t.Errorf("id after the topic was created again: %s, before %s", again[name], first[name])
	}
}
