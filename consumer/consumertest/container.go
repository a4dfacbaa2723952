package consumertest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tckafka "github.com/testcontainers/testcontainers-go/modules/kafka"
)

// ContainerImage is the Kafka image started by testcontainers (KRaft).
const ContainerImage = "confluentinc/confluent-local:7.5.0"

// startContainer starts a single-node Kafka in Docker. It fails (and the
// caller skips) when no Docker daemon is reachable.
func startContainer(tb testing.TB) (c *Cluster, err error) {
	tb.Helper()
	defer func() {
		// testcontainers panics when it finds no Docker at all.
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("docker unavailable: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kc, err := tckafka.Run(ctx, ContainerImage, tckafka.WithClusterID("timbroadcast-test"))
	if err != nil {
		if kc != nil {
			_ = testcontainers.TerminateContainer(kc)
		}
		return nil, fmt.Errorf("start Kafka container: %w", err)
	}
	brokers, err := kc.Brokers(ctx)
	if err != nil {
		_ = testcontainers.TerminateContainer(kc)
		return nil, fmt.Errorf("read the Kafka container's brokers: %w", err)
	}
	out := NewExternal(brokers)
	out.Kind = "container"
	out.stop = func() { _ = testcontainers.TerminateContainer(kc) }
	return out, nil
}
