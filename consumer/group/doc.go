// Package group is the worker's membership of its consumer group: join,
// sync (the leader assigns), heartbeats, leave, the commit and fetch of
// the group's offsets, and fencing. It speaks kafka-go's protocol layer
// itself because kafka-go's ConsumerGroup cannot be a static member
// (KIP-345: its JoinGroup is v1/v2 and it always sends LeaveGroup), looks
// the coordinator up for every request and sends heartbeats to any broker.
//
// The member finds the coordinator once (again only on NOT_COORDINATOR or
// a broken connection) and sends every group request over one kept
// connection to it: JoinGroup, SyncGroup (the leader assigns with
// kafka-go's balancers, range then round robin), Heartbeat, OffsetCommit,
// OffsetFetch, LeaveGroup, and the Metadata its assignment reads. With
// Config.InstanceID it is static: a restart within the session timeout gets
// its partitions back without a rebalance, it never sends LeaveGroup, and
// FENCED_INSTANCE_ID (another process joined with the same id) is fatal
// (ErrFenced). Rebalance and generation errors rejoin; nothing else does.
//
// It knows no event: the pipeline from fetch to commit is the consumer
// package's.
package group
