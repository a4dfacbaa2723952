package kafkaconn

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/listoffsets"
	meta "github.com/segmentio/kafka-go/protocol/metadata"
	"github.com/segmentio/kafka-go/protocol/produce"
)

// Routing: kafka-go's transport routes every request by the cluster
// metadata it caches, and reads that metadata again on a timer only
// (Transport.MetadataTTL; a routing error does not). An idle worker should
// ask the cluster as little as a plain consumer does, so the cache is kept
// for MetadataTTL (five minutes, as Kafka's metadata.max.age.ms) and read
// again at once when a request shows that routing moved: an error that is
// not the caller's ending, or an answer naming a partition that has
// another leader now or is unknown. Reading again starts a new connection
// pool (Transport.CloseIdleConnections drops the pools; requests in flight
// end on theirs), at most once per rediscoverEvery.

// MetadataTTL is how long the transport trusts its cached cluster
// metadata (brokers, leaders, partition counts) while nothing fails.
// kafka-go reads it again after a random part of it.
const MetadataTTL = 5 * time.Minute

// rediscoverEvery is the least time between two reads of the metadata
// that a routing error forces.
const rediscoverEvery = time.Second

// router is the round tripper every request of a Conn goes through: the
// transport, watched for routing errors.
type router struct{ c *Conn }

// RoundTrip sends req with the transport, and reads the cluster's
// metadata again when the outcome says routing moved.
func (r router) RoundTrip(ctx context.Context, addr net.Addr, req kafka.Request) (kafka.Response, error) {
	resp, err := r.c.transport.RoundTrip(ctx, addr, req)
	if (err != nil && ctx.Err() == nil && !isAnswerError(err)) || movedInAnswer(resp) {
		r.c.Rediscover()
	}
	return resp, err
}

// isAnswerError reports whether err is a Kafka error code a broker
// answered with as a whole (routing is right; the answer is not).
func isAnswerError(err error) bool {
	var code kafka.Error
	return errors.As(err, &code) && !routingCode(int16(code))
}

// routingCode reports whether a partition's error code means the request
// went to the wrong broker or names a partition the cache does not hold.
func routingCode(code int16) bool {
	switch kafka.Error(code) {
	case kafka.UnknownTopicOrPartition, kafka.LeaderNotAvailable, kafka.NotLeaderForPartition,
		kafka.FencedLeaderEpoch, kafka.UnknownLeaderEpoch, kafka.BrokerNotAvailable, kafka.ReplicaNotAvailable, kafka.KafkaStorageError:
		return true
	}
	return false
}

// movedInAnswer reports whether an answer names a partition whose leader
// moved (fetch, produce and list offsets), or a metadata answer (from the
// cache) names a topic or partition it does not know: created since, by
// another client perhaps.
func movedInAnswer(resp protocol.Message) bool {
	switch r := resp.(type) {
	case *meta.Response:
		for _, t := range r.Topics {
			if t.ErrorCode == int16(kafka.UnknownTopicOrPartition) {
				return true
			}
		}
	case *answer:
		if routingCode(r.errorCode) {
			return true
		}
		for _, t := range r.topics {
			for _, p := range t.partitions {
				if routingCode(p.errorCode) {
					return true
				}
			}
		}
	case *produce.Response:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				if routingCode(p.ErrorCode) {
					return true
				}
			}
		}
	case *listoffsets.Response:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				if routingCode(p.ErrorCode) {
					return true
				}
			}
		}
	}
	return false
}

// rediscovery limits forced reads of the metadata.
type rediscovery struct {
	mu   sync.Mutex
	last time.Time
	n    int
}

// Rediscover makes the next request read the cluster's metadata again
// (brokers, leaders, partitions) instead of trusting the cache, at most
// once per second: a request that failed for routing calls it, and so
// does anything that saw a partition's leader move.
func (c *Conn) Rediscover() {
	c.rediscover.mu.Lock()
	now := time.Now()
	if now.Sub(c.rediscover.last) < rediscoverEvery {
		c.rediscover.mu.Unlock()
		return
	}
	c.rediscover.last = now
	c.rediscover.n++
	c.rediscover.mu.Unlock()
	c.transport.CloseIdleConnections()
}

// Rediscoveries is how many times the metadata was read again because
// routing moved.
func (c *Conn) Rediscoveries() int {
	c.rediscover.mu.Lock()
	defer c.rediscover.mu.Unlock()
	return c.rediscover.n
}
