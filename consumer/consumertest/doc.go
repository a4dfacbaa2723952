// Package consumertest gives tests a Kafka to talk to over TCP: franz-go's
// in-process kfake broker by default, the brokers named by KAFKA_BROKERS,
// or a testcontainers Kafka when TEST_KAFKA=container. It is for tests
// only (it imports testing and, for containers, Docker's client); the
// product's own embedded broker is package embedded.
package consumertest
