// Package consumer owns Kafka for timbroadcast: consumer-group membership,
// per-partition order, offset commits, the dead-letter producer, rebalances
// and shutdown. It turns each record into an event (package wire), hands it
// to a Sender, and commits the record's offset only once its outcome is
// final: the API answered OK, or the dead-letter write was acknowledged by
// all in-sync replicas.
//
// It does not own the API (package sender), the formats it shares with
// producers and operators (package wire) or message identity (package
// dedupe).
//
// Files follow one record from fetch to commit:
//
//	worker.go      the worker's life: configuration, New, Run, readiness, rate share
//	partition.go   one owned partition: fetching, the plain and merge loops
//	deliver.go     one call to its final outcome: retries, pauses, outcomes
//	deadletter.go  the dead-letter write
//	offsets.go     commits and the in-flight record read back on resume
//	gate.go        the pause gate shared by all partitions
//	metrics.go     Prometheus metrics
package consumer
