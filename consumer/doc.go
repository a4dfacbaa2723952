// Package consumer owns Kafka for timbroadcast: per-partition order, offset commits, the dead-letter producer, rebalances
// and shutdown. It turns each record into an event (package wire), hands it
// to a Sender, and commits the record's offset only once its outcome is
// final: the API answered OK, or the dead-letter write was acknowledged by
// all in-sync replicas.
//
// It does not own the group membership (package group: join,
// heartbeats, offsets' commit and fetch, fencing), the call schedule and
// pause gate the group shares (package schedule), the API (package sender), the formats it shares with
// producers and operators (package wire) or message identity (package
// dedupe).
//
// Files follow one record from fetch to commit, in the order it meets
// them:
//
//	config.go      Config, its defaults (DefaultConfig) and rules (Validate)
//	worker.go      the worker's life: New, Run (a group.Member's generations), readiness
//	apps.go        the apps served (Config.Apps) and a record's app (route)
//	appsupdate.go  the apps file changed live (UpdateApps, read again every
//	               Config.AppsReload)
//	partition.go   one owned partition: its sessions, the pump that fetches
//	               (a kafkaconn.Mux stream: one long poll per broker for all
//	               partitions) and decodes each record once, the router
//	               that hands each record to its app's stream
//	stream.go      one app's share of a partition: its records in order
//	               (bounded; read again past the bound), its low offset
//	plan.go        the loops that plan calls: plain, merge (packing), resume
//	delivered.go   the delivered log: read at a session's start (records
//	               below it are committed as already_delivered), written
//	               after every delivery, pending unknown outcomes
//	settle.go      the one path every call takes: a turn of the call
//	               schedule (package schedule: pause gate, slot), send; delivered,
//	               dead-lettered or split; receipts; commit
//	deadletter.go  the dead-letter write
//	write.go       writeHeld: every write before a commit (acks=all, held retries)
//	receipt.go     the receipt write
//	commit.go      the committer: the lowest offset no stream has settled,
//	               the calls in flight as metadata; commits (only a lost
//	               generation rejoins; any other refusal holds)
//	offsets.go     offset commits and reads, the in-flight record read back
//	observe.go     the observer each call carries: a record joining a
//	               call, attempts, outcomes, receipts, the commit, and what
//	               each makes (spans, metrics, outcome logs, Config.OnOutcome)
//	health.go      holds (sends stuck), read failures, notes for /readyz
//	wait.go        sleepCtx
//	metrics.go     Prometheus metrics
//	topics.go      topicPartition
package consumer
