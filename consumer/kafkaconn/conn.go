package kafkaconn

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// ClientID is the client id timbroadcast presents to brokers. A command
// sets it once, before its first Conn, to name its release
// ("timbroadcast-0.9.0"): `status` shows it per member.
var ClientID = "timbroadcast"

// Partitioners are the names Balancer knows.
var Partitioners = []string{"fnv1a", "murmur2", "crc32"}

// Balancer returns the balancer a partitioner name stands for, so keys land
// where the other producers of a topic put them: "fnv1a" (kafka-go's and
// Sarama's hash; "" too), "murmur2" (the Java client's default, franz-go's,
// librdkafka's murmur2_random), "crc32" (librdkafka's default
// consistent_random, confluent-kafka-go). Records without a key are spread
// over the partitions.
func Balancer(name string) (kafka.Balancer, error) {
	switch name {
	case "", "fnv1a":
		return &kafka.Hash{}, nil
	case "murmur2":
		return kafka.Murmur2Balancer{}, nil
	case "crc32":
		return kafka.CRC32Balancer{}, nil
	}
	return nil, fmt.Errorf("unknown partitioner %q (known: %s)", name, strings.Join(Partitioners, ", "))
}

// Conn reaches one Kafka cluster.
type Conn struct {
	// Brokers are the bootstrap brokers (host:port).
	Brokers []string
	// Dialer dials the brokers (TLS, SASL); never nil.
	Dialer *kafka.Dialer
	// Secrets are credential values (passwords, tokens) to scrub from
	// anything shown to people.
	Secrets []string
	// Balancer maps keys to partitions in Writer; nil is FNV-1a (see
	// Balancer).
	Balancer kafka.Balancer
	// Limits bound what a fetch decodes (zero fields: DefaultLimits).
	Limits Limits

	transport  *kafka.Transport
	client     *kafka.Client
	rediscover rediscovery

	// ids asks for topic ids (TopicIDs), one request at a time.
	idsOnce sync.Once
	idsMu   sync.Mutex
	ids     *BrokerConn
}

// New returns a Conn for brokers. A nil dialer is kafka.DefaultDialer
// (plaintext, no authentication).
func New(brokers []string, dialer *kafka.Dialer) *Conn {
	if dialer == nil {
		dialer = kafka.DefaultDialer
	}
	t := &kafka.Transport{
		Dial:     dialer.DialFunc,
		SASL:     dialer.SASLMechanism,
		TLS:      dialer.TLS,
		ClientID: ClientID,
		// Read again at once when routing moves (Rediscover).
		MetadataTTL: MetadataTTL,
	}
	c := &Conn{
		Brokers:   append([]string(nil), brokers...),
		Dialer:    dialer,
		transport: t,
	}
	c.client = &kafka.Client{Addr: kafka.TCP(brokers...), Transport: c.Transport(), Timeout: 10 * time.Second}
	return c
}

// Transport is the round tripper shared by the admin client, producers
// and fetches: kafka-go's transport, whose cached metadata is read again
// when a request shows that routing moved (see Rediscover).
func (c *Conn) Transport() kafka.RoundTripper { return router{c} }

// Client is the admin client (metadata, offsets, group offsets).
func (c *Conn) Client() *kafka.Client { return c.client }

// Writer returns a producer for topic that waits for the acknowledgement
// of all in-sync replicas; records with the same key go to the same
// partition (chosen by c.Balancer). Callers tune batching.
func (c *Conn) Writer(topic string) *kafka.Writer {
	balancer := c.Balancer
	if balancer == nil {
		balancer = &kafka.Hash{}
	}
	return &kafka.Writer{
		Addr:         kafka.TCP(c.Brokers...),
		Topic:        topic,
		Balancer:     balancer,
		RequiredAcks: kafka.RequireAll,
		Transport:    c.Transport(),
	}
}

// CreateTopic creates a topic with configs (an existing one is fine) and
// waits until its partitions have leaders.
func (c *Conn) CreateTopic(ctx context.Context, name string, partitions int, configs ...kafka.ConfigEntry) error {
	resp, err := c.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: partitions, ReplicationFactor: -1, ConfigEntries: configs,
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
		parts, err := c.Partitions(ctx, name)
		if err == nil && len(parts) >= partitions {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topic %s not ready: %v", name, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// OffsetLister lists log offsets: a *kafka.Client, or a test's.
type OffsetLister interface {
	ListOffsets(context.Context, *kafka.ListOffsetsRequest) (*kafka.ListOffsetsResponse, error)
}

// Bounds returns a partition's log start offset and its end offset (the
// high watermark), asked of client in one request.
func Bounds(ctx context.Context, client OffsetLister, topic string, partition int) (start, end int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		topic: {kafka.FirstOffsetOf(partition), kafka.LastOffsetOf(partition)},
	}})
	if err != nil {
		return 0, 0, fmt.Errorf("list offsets of %s/%d: %w", topic, partition, err)
	}
	for _, po := range resp.Topics[topic] {
		if po.Partition != partition {
			continue
		}
		if po.Error != nil {
			return 0, 0, fmt.Errorf("list offsets of %s/%d: %w", topic, partition, po.Error)
		}
		return po.FirstOffset, po.LastOffset, nil
	}
	return 0, 0, fmt.Errorf("list offsets of %s/%d: partition missing from the answer", topic, partition)
}

// Partitions returns the partition ids of topic, sorted.
func (c *Conn) Partitions(ctx context.Context, topic string) ([]int, error) {
	md, err := c.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err == nil && len(md.Topics) == 1 && errors.Is(md.Topics[0].Error, kafka.UnknownTopicOrPartition) {
		// Unknown to the cached metadata, which the answer had read again
		// (Rediscover): created since, perhaps by another client.
		md, err = c.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	}
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	if len(md.Topics) != 1 {
		return nil, fmt.Errorf("metadata of %s: topic missing", topic)
	}
	if md.Topics[0].Error != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, md.Topics[0].Error)
	}
	parts := make([]int, 0, len(md.Topics[0].Partitions))
	for _, p := range md.Topics[0].Partitions {
		parts = append(parts, p.ID)
	}
	sort.Ints(parts)
	return parts, nil
}

// Ends returns the end offset (high watermark) of every partition of
// topic.
func (c *Conn) Ends(ctx context.Context, topic string) (map[int]int64, error) {
	return c.listOffsets(ctx, topic, kafka.LastOffsetOf, func(po kafka.PartitionOffsets) int64 { return po.LastOffset })
}

// Starts returns the log start offset of every partition of topic.
func (c *Conn) Starts(ctx context.Context, topic string) (map[int]int64, error) {
	return c.listOffsets(ctx, topic, kafka.FirstOffsetOf, func(po kafka.PartitionOffsets) int64 { return po.FirstOffset })
}

func (c *Conn) listOffsets(ctx context.Context, topic string, ask func(int) kafka.OffsetRequest, answer func(kafka.PartitionOffsets) int64) (map[int]int64, error) {
	parts, err := c.Partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, p := range parts {
		req.Topics[topic] = append(req.Topics[topic], ask(p))
	}
	resp, err := c.client.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	out := map[int]int64{}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("list offsets of %s/%d: %w", topic, po.Partition, po.Error)
		}
		out[po.Partition] = answer(po)
	}
	return out, nil
}

// Committed returns the group's committed offsets for topic (partitions
// without a commit are absent). A group-level error in the answer is an
// error, not "nothing committed", except GROUP_ID_NOT_FOUND.
func (c *Conn) Committed(ctx context.Context, group, topic string) (map[int]int64, error) {
	parts, err := c.Partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	out := map[int]int64{}
	if errors.Is(err, kafka.GroupIdNotFound) {
		return out, nil // a group that never committed (some brokers say so)
	}
	if err != nil {
		return nil, fmt.Errorf("committed offsets of group %s: %w", group, err)
	}
	for _, p := range resp.Topics[topic] {
		if p.Error == nil && p.CommittedOffset >= 0 {
			out[p.Partition] = p.CommittedOffset
		}
	}
	return out, nil
}

// Produce writes msgs to topic and waits for the acknowledgement.
func (c *Conn) Produce(ctx context.Context, topic string, msgs ...kafka.Message) error {
	w := c.Writer(topic)
	w.BatchTimeout = 5 * time.Millisecond
	w.BatchSize = 500
	defer w.Close()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("produce to %s: %w", topic, err)
	}
	return nil
}

// ReadFrom returns the records of topic from offset from[p] of each
// partition p (the log start for a partition not in from) up to the end
// offsets at the time of the call, ordered by partition and offset.
func (c *Conn) ReadFrom(ctx context.Context, topic string, from map[int]int64) ([]kafka.Message, error) {
	ends, err := c.Ends(ctx, topic)
	if err != nil {
		return nil, err
	}
	starts, err := c.Starts(ctx, topic)
	if err != nil {
		return nil, err
	}
	read := map[int]int64{} // partitions with records left to read, from where
	for p, end := range ends {
		if start := max(from[p], starts[p]); start < end {
			read[p] = start
		}
	}
	var out []kafka.Message
	if len(read) > 0 {
		err = c.Follow(ctx, topic, maps.Clone(read), func(m kafka.Message) bool {
			if _, ok := read[m.Partition]; !ok {
				return true // past its end meanwhile
			}
			out = append(out, m)
			if m.Offset+1 >= ends[m.Partition] {
				delete(read, m.Partition)
			}
			return len(read) > 0
		})
	}
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Partition != out[j].Partition {
			return out[i].Partition < out[j].Partition
		}
		return out[i].Offset < out[j].Offset
	})
	return out, nil
}

// Follow reads the partitions of topic named in from, each from its offset
// there, and hands every record to fn as it arrives (in order within a
// partition) until fn returns false or ctx ends. It reads like the worker,
// through a Fetcher: committed records only, transaction markers and
// aborted transactions passed over. An offset past a partition's end waits
// for the log to reach it; one below its start (deleted by retention)
// reads from the start. It returns nil when fn stopped it,
// ctx's error when ctx ended first, or the first read error.
func (c *Conn) Follow(ctx context.Context, topic string, from map[int]int64, fn func(kafka.Message) bool) error {
	ctx, cancel := context.WithCancel(ctx)
	records := make(chan kafka.Message)
	failed := make(chan error, len(from))
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait() // every fetch loop has returned
	}()
	for p, off := range from {
		f := c.Fetcher(topic, p, off, 100*time.Millisecond)
		wg.Go(func() {
			for {
				res, err := f.Fetch(ctx)
				var pe *PartitionError
				if errors.As(err, &pe) && pe.Err == kafka.OffsetOutOfRange {
					if starts, serr := c.Starts(ctx, topic); serr == nil && f.Next < starts[p] {
						f.Next = starts[p]
						continue
					}
					select { // past the end: wait for the log to reach it
					case <-ctx.Done():
						return
					case <-time.After(f.maxWait):
					}
					continue
				}
				if err != nil {
					// A read cut by ctx's deadline can fail a moment before
					// ctx itself says it ended: that is the end, not an error.
					if dl, ok := ctx.Deadline(); ctx.Err() == nil && (!ok || time.Now().Before(dl)) {
						failed <- fmt.Errorf("read %s/%d: %w", topic, p, err)
					}
					return
				}
				for _, m := range res.Records {
					select {
					case records <- m:
					case <-ctx.Done():
						return
					}
				}
			}
		})
	}
	for {
		select {
		case m := <-records:
			if !fn(m) {
				return nil
			}
		case err := <-failed:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// TopicConfig returns the value of one configuration of topic ("" when
// the broker reports none).
func (c *Conn) TopicConfig(ctx context.Context, topic, name string) (string, error) {
	resp, err := c.client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{name},
	}}})
	if err != nil {
		return "", fmt.Errorf("describe the configuration of %s: %w", topic, err)
	}
	for _, r := range resp.Resources {
		if r.Error != nil {
			return "", fmt.Errorf("describe the configuration of %s: %w", topic, r.Error)
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName == name {
				return e.ConfigValue, nil
			}
		}
	}
	return "", nil
}
