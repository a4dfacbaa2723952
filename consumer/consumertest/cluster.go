package consumertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/timbroadcast/timbroadcast/consumer/embedded"
	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
)

// Cluster is a Kafka reachable over TCP, with the admin calls of
// kafkaconn.Conn.
type Cluster struct {
	*kafkaconn.Conn
	// Kind is "kfake", "external" or "container".
	Kind string
	// Fake is the in-process broker when Kind is "kfake", for fault
	// injection; nil otherwise.
	Fake *kfake.Cluster

	stop func()
}

// NewFake starts an in-process kfake broker on a loopback port.
func NewFake(opts ...kfake.Opt) (*Cluster, error) {
	b, err := embedded.Start(opts...)
	if err != nil {
		return nil, err
	}
	return &Cluster{Conn: kafkaconn.New(b.Brokers, nil), Kind: "kfake", Fake: b.Fake, stop: b.Close}, nil
}

// NewFakeSecure starts an in-process kfake broker configured by opts
// (kfake.TLS, kfake.EnableSASL, ...) and reaches it with dialer.
func NewFakeSecure(tb testing.TB, dialer *kafka.Dialer, opts ...kfake.Opt) *Cluster {
	tb.Helper()
	SkipShort(tb)
	b, err := embedded.Start(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	c := &Cluster{Conn: kafkaconn.New(b.Brokers, dialer), Kind: "kfake", Fake: b.Fake, stop: b.Close}
	tb.Cleanup(c.Close)
	return c
}

// NewExternal uses running brokers.
func NewExternal(brokers []string) *Cluster {
	return &Cluster{Conn: kafkaconn.New(brokers, nil), Kind: "external", stop: func() {}}
}

// Close stops an in-process broker or container.
func (c *Cluster) Close() { c.stop() }

// SkipShort skips a test that needs a broker under go test -short: the
// fast tier runs without one; make test runs everything.
func SkipShort(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("needs a Kafka broker: not in the fast tier (go test -short); make test runs it")
	}
}

// StartFake is NewFake for a test: skipped under -short, closed when the
// test ends.
func StartFake(tb testing.TB, opts ...kfake.Opt) *Cluster {
	tb.Helper()
	SkipShort(tb)
	c, err := NewFake(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// Start returns the cluster a test runs against: KAFKA_BROKERS when set,
// a testcontainers Kafka when TEST_KAFKA=container (skipping, with the
// reason, when Docker is unavailable), kfake otherwise. It is closed when
// the test ends.
func Start(tb testing.TB) *Cluster {
	tb.Helper()
	SkipShort(tb)
	c, err := startFromEnv(tb)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// StartReal returns a real Kafka: KAFKA_BROKERS when set, a
// testcontainers Kafka when TEST_KAFKA=container; otherwise it skips the
// test saying why.
func StartReal(tb testing.TB) *Cluster {
	tb.Helper()
	SkipShort(tb)
	if b := os.Getenv("KAFKA_BROKERS"); b != "" {
		return NewExternal(strings.Split(b, ","))
	}
	if os.Getenv("TEST_KAFKA") != "container" {
		tb.Skip("real-Kafka variant skipped: set KAFKA_BROKERS=host:port to use a running broker, or TEST_KAFKA=container to start one with Docker")
	}
	c, err := startContainer(tb)
	if err != nil {
		tb.Skipf("real-Kafka variant skipped: KAFKA_BROKERS is not set and no container Kafka: %v", err)
	}
	tb.Cleanup(c.Close)
	return c
}

func startFromEnv(tb testing.TB) (*Cluster, error) {
	if b := os.Getenv("KAFKA_BROKERS"); b != "" {
		return NewExternal(strings.Split(b, ",")), nil
	}
	if os.Getenv("TEST_KAFKA") == "container" {
		c, err := startContainer(tb)
		if err != nil {
			tb.Skipf("TEST_KAFKA=container but no container Kafka: %v", err)
		}
		return c, nil
	}
	return NewFake()
}

// Topic creates a topic with a unique name (prefix plus a random suffix,
// so tests sharing a real broker do not meet) and returns the name.
func (c *Cluster) Topic(tb testing.TB, prefix string, partitions int) string {
	tb.Helper()
	name := fmt.Sprintf("%s-%08x", prefix, rand.Uint32())
	if err := c.CreateTopic(context.Background(), name, partitions); err != nil {
		tb.Fatal(err)
	}
	return name
}

// ReadAll returns every record of topic up to the end offsets at the time
// of the call, ordered by partition and offset.
func (c *Cluster) ReadAll(ctx context.Context, topic string) ([]kafka.Message, error) {
	return c.ReadFrom(ctx, topic, nil)
}

// WaitCommitted waits until group has committed every partition of topic
// up to the end offsets read when it is called, and fails tb if that takes
// longer than timeout.
func (c *Cluster) WaitCommitted(tb testing.TB, group, topic string, timeout time.Duration) {
	tb.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	ends, err := c.Ends(ctx, topic)
	for err != nil && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond) // a leader moved: the metadata is read again
		ends, err = c.Ends(ctx, topic)
	}
	if err != nil {
		tb.Fatal(err)
	}
	for {
		got, err := c.Committed(ctx, group, topic)
		done := err == nil
		for p, end := range ends {
			done = done && got[p] == end
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("offsets %v of group %s not committed up to %v within %v (%v)", got, group, ends, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
