//go:build !noembedded && !lean

package main

import "github.com/timbroadcast/timbroadcast/consumer/embedded"

// embeddedBuilt reports whether this build has the demo's in-process broker.
const embeddedBuilt = true

// startEmbedded starts the demo's in-process Kafka-protocol broker (kfake)
// and returns its addresses and its stop.
func startEmbedded() ([]string, func(), error) {
	b, err := embedded.Start()
	if err != nil {
		return nil, nil, err
	}
	return b.Brokers, b.Close, nil
}
