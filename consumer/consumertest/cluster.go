// Package consumertest gives tests (and the demo) a Kafka to talk to over
// TCP: franz-go's in-process kfake broker by default, the brokers named by
// KAFKA_BROKERS, or a testcontainers Kafka when TEST_KAFKA=container. It
// also holds helpers to create topics, produce, read topics back and read a
// group's committed offsets, all through segmentio/kafka-go.
package consumertest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Cluster is a Kafka reachable over TCP.
type Cluster struct {
	// Brokers are the bootstrap addresses.
	Brokers []string
	// Kind is "kfake", "external" or "container".
	Kind string
	// Fake is the in-process broker when Kind is "kfake", for fault
	// injection; nil otherwise.
	Fake *kfake.Cluster

	client *kafka.Client
	stop   func()
}

// NewFake starts an in-process kfake broker on a loopback port.
func NewFake(opts ...kfake.Opt) (*Cluster, error) {
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(500 * time.Millisecond)}, opts...)
	fc, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start in-process Kafka broker: %w", err)
	}
	c := newCluster(fc.ListenAddrs(), "kfake")
	c.Fake = fc
	c.stop = fc.Close
	return c, nil
}

// NewExternal uses running brokers.
func NewExternal(brokers []string) *Cluster {
	return newCluster(brokers, "external")
}

func newCluster(brokers []string, kind string) *Cluster {
	return &Cluster{
		Brokers: brokers,
		Kind:    kind,
		client:  &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second},
		stop:    func() {},
	}
}

// Close stops an in-process broker or container.
func (c *Cluster) Close() { c.stop() }

// Start returns the cluster a test runs against: KAFKA_BROKERS when set,
// a testcontainers Kafka when TEST_KAFKA=container (skipping, with the
// reason, when Docker is unavailable), kfake otherwise. It is closed when
// the test ends.
func Start(tb testing.TB) *Cluster {
	tb.Helper()
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

// CreateTopic creates a topic and waits until its partitions have leaders.
func (c *Cluster) CreateTopic(ctx context.Context, name string, partitions int) error {
	resp, err := c.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: partitions, ReplicationFactor: -1,
	}}})
	if err == nil {
		if terr := resp.Errors[name]; terr != nil && !errors.Is(terr, kafka.TopicAlreadyExists) {
			err = terr
		}
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		md, err := c.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{name}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil && len(md.Topics[0].Partitions) == partitions {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topic %s not ready: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Writer returns a producer for topic that waits for all in-sync replicas.
// Records with the same key go to the same partition.
func (c *Cluster) Writer(topic string) *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(c.Brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond,
		BatchSize:    500,
	}
}

// Produce writes msgs to topic and waits for the acknowledgement.
func (c *Cluster) Produce(ctx context.Context, topic string, msgs ...kafka.Message) error {
	w := c.Writer(topic)
	defer w.Close()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("produce to %s: %w", topic, err)
	}
	return nil
}

// ReadAll returns every record of topic up to the high watermarks at the
// time of the call, ordered by partition and offset.
func (c *Cluster) ReadAll(ctx context.Context, topic string) ([]kafka.Message, error) {
	ends, err := c.Ends(ctx, topic)
	if err != nil {
		return nil, err
	}
	var out []kafka.Message
	parts := make([]int, 0, len(ends))
	for p := range ends {
		parts = append(parts, p)
	}
	sort.Ints(parts)
	for _, p := range parts {
		end := ends[p]
		if end == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: c.Brokers, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
		if err := r.SetOffset(kafka.FirstOffset); err != nil {
			r.Close()
			return nil, err
		}
		for {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				r.Close()
				return nil, fmt.Errorf("read %s/%d: %w", topic, p, err)
			}
			out = append(out, m)
			if m.Offset+1 >= end {
				break
			}
		}
		r.Close()
	}
	return out, nil
}

// Ends returns the high watermark of every partition of topic.
func (c *Cluster) Ends(ctx context.Context, topic string) (map[int]int64, error) {
	md, err := c.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata %s: %w", topic, err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		return nil, fmt.Errorf("metadata %s: topic missing", topic)
	}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, p := range md.Topics[0].Partitions {
		req.Topics[topic] = append(req.Topics[topic], kafka.LastOffsetOf(p.ID))
	}
	resp, err := c.client.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("list offsets %s: %w", topic, err)
	}
	ends := map[int]int64{}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("list offsets %s/%d: %w", topic, po.Partition, po.Error)
		}
		ends[po.Partition] = po.LastOffset
	}
	return ends, nil
}

// Committed returns the group's committed offsets for topic (partitions
// without a commit are absent).
func (c *Cluster) Committed(ctx context.Context, group, topic string) (map[int]int64, error) {
	ends, err := c.Ends(ctx, topic)
	if err != nil {
		return nil, err
	}
	parts := make([]int, 0, len(ends))
	for p := range ends {
		parts = append(parts, p)
	}
	resp, err := c.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return nil, fmt.Errorf("offset fetch %s: %w", group, err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("offset fetch %s: %w", group, resp.Error)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		if p.Error == nil && p.CommittedOffset >= 0 {
			out[p.Partition] = p.CommittedOffset
		}
	}
	return out, nil
}

// Header returns the value of the last header named key, or "".
func Header(m kafka.Message, key string) string {
	v := ""
	for _, h := range m.Headers {
		if h.Key == key {
			v = string(h.Value)
		}
	}
	return v
}
