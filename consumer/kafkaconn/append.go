package kafkaconn

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// Appender appends records to one partition of a topic, acknowledged by
// all in-sync replicas, writing the records of concurrent callers in one
// produce request (a group commit): a write goes at once when none is on
// its way, and the writes that come meanwhile go together in the next
// request. So an idle write waits for nothing, and a thousand streams
// each writing after every call make a few requests a second, not a
// thousand. A kafka.Writer with BatchSize 1 makes one request per write;
// a larger BatchSize makes every write wait for its BatchTimeout.
type Appender struct {
	client    *kafka.Client
	topic     string
	partition int

	mu      sync.Mutex
	queue   []*appendWrite
	busy    bool
	closed  bool
	writing sync.WaitGroup // the flush loop, while it runs
}

// appendWrite is one caller's records, and where its outcome goes.
type appendWrite struct {
	msgs []kafka.Message
	done chan error
}

// Bounds of one request: far under Kafka's default batch limit (1 MiB),
// so a request is never refused for its size.
const (
	appendMaxRecords = 1000
	appendMaxBytes   = 512 << 10
	// appendTimeout bounds one request.
	appendTimeout = 10 * time.Second
)

// Appender returns the appender of partition of topic.
func (c *Conn) Appender(topic string, partition int) *Appender {
	return &Appender{client: c.client, topic: topic, partition: partition}
}

// WriteMessages appends msgs (their key, value, headers and time) and
// waits for their acknowledgement. When ctx ends first it returns ctx's
// error; the records may still be written.
func (a *Appender) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	w := &appendWrite{msgs: msgs, done: make(chan error, 1)}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return fmt.Errorf("append to %s: the appender is closed", a.topic)
	}
	a.queue = append(a.queue, w)
	if !a.busy {
		a.busy = true
		a.writing.Go(a.flush)
	}
	a.mu.Unlock()
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flush writes what is queued, a request at a time, until nothing is.
func (a *Appender) flush() {
	for {
		a.mu.Lock()
		n, records, size := 0, 0, 0
		for n < len(a.queue) {
			r, b := len(a.queue[n].msgs), bytesOf(a.queue[n].msgs)
			if n > 0 && (records+r > appendMaxRecords || size+b > appendMaxBytes) {
				break // the next request takes it
			}
			n, records, size = n+1, records+r, size+b
		}
		if n == 0 {
			a.busy = false
			a.mu.Unlock()
			return
		}
		batch := a.queue[:n:n]
		a.queue = a.queue[n:]
		a.mu.Unlock()
		err := a.produce(batch)
		for _, w := range batch {
			w.done <- err
		}
	}
}

// produce writes the records of batch in one request.
func (a *Appender) produce(batch []*appendWrite) error {
	var recs []kafka.Record
	for _, w := range batch {
		for _, m := range w.msgs {
			hs := make([]kafka.Header, len(m.Headers))
			copy(hs, m.Headers)
			recs = append(recs, kafka.Record{Time: m.Time, Key: bytesOrNil(m.Key), Value: bytesOrNil(m.Value), Headers: hs})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
	defer cancel()
	resp, err := a.client.Produce(ctx, &kafka.ProduceRequest{
		Topic: a.topic, Partition: a.partition, RequiredAcks: kafka.RequireAll, Records: kafka.NewRecordReader(recs...),
	})
	if err == nil {
		err = resp.Error
	}
	if err != nil {
		return fmt.Errorf("append to %s/%d: %w", a.topic, a.partition, err)
	}
	return nil
}

// Close waits for the writes on their way; later ones are refused.
func (a *Appender) Close() error {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.writing.Wait()
	return nil
}

// bytesOf estimates the size msgs take in a request.
func bytesOf(msgs []kafka.Message) int {
	n := 0
	for _, m := range msgs {
		n += len(m.Key) + len(m.Value) + 64
		for _, h := range m.Headers {
			n += len(h.Key) + len(h.Value)
		}
	}
	return n
}

// bytesOrNil is b as a record's key or value (nil: none).
func bytesOrNil(b []byte) kafka.Bytes {
	if b == nil {
		return nil
	}
	return kafka.NewBytes(b)
}
