package embedded

import (
	"fmt"
	"net"
	"sync/atomic"
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
// broker, group session timeouts down to 500ms). Topics configured
// message.timestamp.type=LogAppendTime get the broker's time on every
// record, as on Kafka (logappend.go).
func Start(opts ...kfake.Opt) (*Broker, error) {
	plain := &atomic.Bool{}
	plain.Store(true)
	listen := func(network, address string) (net.Listener, error) {
		l, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		return stampListener{Listener: l, plain: plain}, nil
	}
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(500 * time.Millisecond), kfake.ListenFn(listen)}, opts...)
	fc, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start in-process Kafka broker: %w", err)
	}
	followTimestampType(fc, plain)
	return &Broker{Brokers: fc.ListenAddrs(), Fake: fc}, nil
}

// Close stops the broker.
func (b *Broker) Close() { b.Fake.Close() }
