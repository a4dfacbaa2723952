// Package embedded runs an in-process Kafka-protocol broker (franz-go's
// kfake) on a loopback port: the broker of `timbroadcast demo` and of the
// tests. Clients reach it over TCP like any broker. It keeps everything in
// memory and is not for production data.
package embedded
