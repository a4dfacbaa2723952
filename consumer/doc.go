// Package consumer owns Kafka for timbroadcast: per-partition order,
// offset commits, the dead-letter producer, rebalances and shutdown. It
// turns each record into an event, hands it to its app's Sender, and
// commits the record's offset only once its outcome is final: the API
// answered OK, or the dead-letter write was acknowledged by all in-sync
// replicas.
//
// A record's path, from its fetch to its commit, goes through four files
// of this package in this order and comes back to none of them:
//
//	partition.go   one owned partition: its sessions, the pump that
//	               fetches (a kafkaconn.Mux stream: one long poll per
//	               broker for all partitions) and decodes each record
//	               once (package decode), the router that finds its app
//	               (package apps)
//	stream.go      one app's share of a partition: the record handed to
//	               it (handOff), kept in order (bounded; read again past
//	               the bound), the calls planned: plain, merge (packing),
//	               resumed; what the delivered log knows at its start
//	settle.go      the one way every call goes: a turn of the call
//	               schedule (package schedule: pause gate, slot), the
//	               send; delivered, dead-lettered or split; every write
//	               before a commit (writeHeld)
//	commit.go      the committer, the one place that decides a commit:
//	               the lowest offset no stream has settled, the calls in
//	               flight as metadata (package offsets commits it), each
//	               after one write of what the streams settled to the
//	               delivered log, what settles meanwhile going together
//
// What the path calls on its way is a package of its own, each read on
// its own terms: call (a record, a call, and the observer each call
// carries: spans, metrics, outcome logs), apps (the apps served, a
// record's route), decode, delivered (the delivered log), health (holds,
// read failures, notes for /readyz), kafkaconn (fetches, the budget of
// bytes held), lows (streams ordered by their low), metrics, offsets,
// schedule (the call schedule the group shares), wire (the formats
// shared with producers and operators). It does not own the group
// membership (package group) or the API (package sender).
//
// The rest of the package is the worker around the path:
//
//	config.go      Config, its defaults (DefaultConfig) and rules (Validate)
//	worker.go      the worker's life: New, Run (a group.Member's
//	               generations), readiness
//	appsupdate.go  the apps file changed live (UpdateApps, read again
//	               every Config.AppsReload)
//	deadletter.go  the dead-letter write (a record that can never be sent)
//	receipt.go     the receipt write (Config.ReceiptTopic)
//	topics.go      topicPartition
package consumer
