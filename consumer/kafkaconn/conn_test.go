package kafkaconn_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/timbroadcast/timbroadcast/consumer/embedded"
	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
)

// TestAdminCalls runs the admin calls against the in-process broker (a
// real Kafka-protocol server over TCP, started in milliseconds).
func TestAdminCalls(t *testing.T) {
	c, _ := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := c.CreateTopic(ctx, "events", 3); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateTopic(ctx, "events", 3); err != nil {
		t.Fatalf("creating an existing topic: %v", err)
	}
	parts, err := c.Partitions(ctx, "events")
	if err != nil || len(parts) != 3 || parts[0] != 0 || parts[2] != 2 {
		t.Fatalf("Partitions = %v, %v", parts, err)
	}
	if _, err := c.Partitions(ctx, "missing"); err == nil {
		t.Error("Partitions of a missing topic succeeded")
	}
	msgs := []kafka.Message{{Key: []byte("a"), Value: []byte("1")}, {Key: []byte("a"), Value: []byte("2")}, {Key: []byte("b"), Value: []byte("3")}}
	if err := c.Produce(ctx, "events", msgs...); err != nil {
		t.Fatal(err)
	}
	ends, err := c.Ends(ctx, "events")
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	for _, e := range ends {
		total += e
	}
	if len(ends) != 3 || total != 3 {
		t.Errorf("Ends = %v, want 3 partitions holding 3 records", ends)
	}
	got, err := c.Committed(ctx, "nobody", "events")
	if err != nil || len(got) != 0 {
		t.Errorf("Committed of a group without commits = %v, %v; want none", got, err)
	}

	// Follow from the ends sees only what is produced afterwards, in order
	// per partition, and stops when told.
	var seen []string
	late := []kafka.Message{{Key: []byte("a"), Value: []byte("4")}, {Key: []byte("a"), Value: []byte("5")}}
	produced := make(chan error, 1)
	go func() { produced <- c.Produce(ctx, "events", late...) }()
	err = c.Follow(ctx, "events", ends, func(m kafka.Message) bool {
		seen = append(seen, string(m.Value))
		return len(seen) < 2
	})
	if perr := <-produced; perr != nil {
		t.Fatal(perr)
	}
	if err != nil || len(seen) != 2 || seen[0] != "4" || seen[1] != "5" {
		t.Errorf("Follow = %v, %v; want [4 5]", seen, err)
	}
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	if err := c.Follow(short, "events", map[int]int64{0: 100, 1: 100, 2: 100}, func(kafka.Message) bool { return true }); err != context.DeadlineExceeded {
		t.Errorf("Follow past the end until the deadline = %v, want context.DeadlineExceeded", err)
	}
}

// startBroker starts an in-process broker (kfake with opts) for the test
// and returns a connection to it, and the broker.
func startBroker(tb testing.TB, opts ...kfake.Opt) (*kafkaconn.Conn, *embedded.Broker) {
	tb.Helper()
	b, err := embedded.Start(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(b.Close)
	return kafkaconn.New(b.Brokers, nil), b
}

// TestRediscover: the transport keeps its metadata for minutes, yet a
// write, a read of the offsets and a fetch each succeed right after the
// partition's leader moved to another broker: the first refusal reads the
// metadata again (once, not per request).
func TestRediscover(t *testing.T) {
	c, b := startBroker(t, kfake.NumBrokers(3))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.CreateTopic(ctx, "moving", 1); err != nil {
		t.Fatal(err)
	}
	w := c.Writer("moving")
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	leader := b.Fake.LeaderFor("moving", 0)
	if err := b.Fake.MoveTopicPartition("moving", 0, (leader+1)%3); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("after")}); err != nil {
		t.Fatalf("a write after the leader moved: %v", err)
	}
	if n := c.Rediscoveries(); n != 1 {
		t.Errorf("%d metadata reads forced, want 1 (the refused write's)", n)
	}
	if err := b.Fake.MoveTopicPartition("moving", 0, (leader+2)%3); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // past the least time between two forced reads
	var ends map[int]int64
	var err error
	for range 2 { // the first answer names the old leader
		if ends, err = c.Ends(ctx, "moving"); err == nil {
			break
		}
	}
	if err != nil || ends[0] != 2 {
		t.Fatalf("end offsets after the leader moved = %v, %v; want 2 at the second try", ends, err)
	}
	got, err := c.ReadFrom(ctx, "moving", map[int]int64{0: 0})
	if err != nil || len(got) != 2 {
		t.Fatalf("read after the leader moved: %d records, %v; want 2", len(got), err)
	}
}
