//go:build noembedded || lean

package main

import "errors"

// embeddedBuilt reports whether this build has the demo's in-process
// broker: not with the tag noembedded or lean, which spares the binary
// kfake (1.3 MB of resident memory). The demo then needs --brokers.
const embeddedBuilt = false

// startEmbedded is never reached in this build: parseDemo asks for --brokers.
func startEmbedded() ([]string, func(), error) {
	return nil, nil, errors.New("the in-process broker is not in this build")
}
