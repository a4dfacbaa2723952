// Package kafkaconn is the one place that builds segmentio/kafka-go clients
// for a Kafka cluster: the dialer, the transport, the admin client,
// producers, and the one fetch path every reader uses (Fetcher: committed
// records only, on kafka-go's protocol layer; Follow and ReadFrom read
// through it; the worker's partitions share one long-polled Fetch per
// broker through a Mux). The worker and every command reach Kafka
// through a Conn, so a connection setting (TLS, SASL) applies to all of
// them alike.
//
// It also offers the few admin calls the commands need (create a topic,
// list partitions, end offsets, a group's committed offsets). It knows
// nothing of events or of the API.
package kafkaconn
