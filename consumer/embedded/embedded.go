package embedded

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Broker is a running in-process broker.
type Broker struct {
	// Brokers are its bootstrap addresses.
	Brokers []string
	// Fake is the kfake cluster, for fault injection in tests.
	Fake *kfake.Cluster
}

// Start starts a one-broker cluster; opts are added to the defaults (one
// broker, group session timeouts down to 500ms).
func Start(opts ...kfake.Opt) (*Broker, error) {
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(500 * time.Millisecond)}, opts...)
	fc, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start in-process Kafka broker: %w", err)
	}
	return &Broker{Brokers: fc.ListenAddrs(), Fake: fc}, nil
}

// Close stops the broker.
func (b *Broker) Close() { b.Fake.Close() }
