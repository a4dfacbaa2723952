package kafkaconn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/consumer"
	"github.com/segmentio/kafka-go/protocol/describegroups"
)

// Group is a consumer group as its coordinator describes it.
type Group struct {
	ID      string
	State   string // Stable, PreparingRebalance, CompletingRebalance, Empty, Dead
	Members []GroupMember
}

// GroupMember is one member of a group.
type GroupMember struct {
	MemberID   string
	InstanceID string // "" for a dynamic member
	ClientID   string
	ClientHost string
	// Assigned are its partitions, by topic.
	Assigned map[string][]int
}

// DescribeGroup describes group: its state and members, with each
// member's group instance id and assigned partitions (DescribeGroups v4,
// over a kept connection to the coordinator).
func (c *Conn) DescribeGroup(ctx context.Context, group string) (*Group, error) {
	fc, err := c.client.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{Key: group, KeyType: kafka.CoordinatorKeyTypeConsumer})
	if err == nil && fc.Error != nil {
		err = fc.Error
	}
	if err != nil {
		return nil, fmt.Errorf("find the coordinator of group %s: %w", group, err)
	}
	b := c.Broker(fmt.Sprintf("%s:%d", fc.Coordinator.Host, fc.Coordinator.Port))
	defer b.Close()
	msg, err := b.RoundTrip(ctx, &describegroups.Request{Groups: []string{group}})
	if err != nil {
		return nil, fmt.Errorf("describe group %s: %w", group, err)
	}
	resp := msg.(*describegroups.Response)
	if len(resp.Groups) != 1 {
		return nil, fmt.Errorf("describe group %s: %d groups in the answer", group, len(resp.Groups))
	}
	rg := resp.Groups[0]
	if rg.ErrorCode != 0 {
		return nil, fmt.Errorf("describe group %s: %w", group, kafka.Error(rg.ErrorCode))
	}
	g := &Group{ID: rg.GroupID, State: rg.GroupState}
	for _, m := range rg.Members {
		gm := GroupMember{MemberID: m.MemberID, InstanceID: m.GroupInstanceID, ClientID: m.ClientID, ClientHost: m.ClientHost}
		var err error
		if gm.Assigned, err = DecodeAssignment(m.MemberAssignment); err != nil {
			gm.Assigned = map[string][]int{} // another client's protocol: shown without partitions
		}
		g.Members = append(g.Members, gm)
	}
	sort.Slice(g.Members, func(i, j int) bool {
		if g.Members[i].InstanceID != g.Members[j].InstanceID {
			return g.Members[i].InstanceID < g.Members[j].InstanceID
		}
		return g.Members[i].MemberID < g.Members[j].MemberID
	})
	return g, nil
}

// CommittedOffset is a group's committed offset of one partition, with
// its metadata.
type CommittedOffset struct {
	Offset   int64 // -1 when nothing is committed
	Metadata string
}

// CommittedWithMetadata returns group's committed offsets of every
// partition of topic, with the metadata stored with each.
func (c *Conn) CommittedWithMetadata(ctx context.Context, group, topic string) (map[int]CommittedOffset, error) {
	parts, err := c.Partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := map[int]CommittedOffset{}
	for _, p := range parts {
		out[p] = CommittedOffset{Offset: -1}
	}
	resp, err := c.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if errors.Is(err, kafka.GroupIdNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("committed offsets of group %s: %w", group, err)
	}
	for _, po := range resp.Topics[topic] {
		if po.Error == nil {
			out[po.Partition] = CommittedOffset{Offset: po.CommittedOffset, Metadata: po.Metadata}
		}
	}
	return out, nil
}

// OffsetsAt returns, per partition of topic, the offset of the first
// record written at or after t (the end offset when there is none).
func (c *Conn) OffsetsAt(ctx context.Context, topic string, t time.Time) (map[int]int64, error) {
	ends, err := c.Ends(ctx, topic)
	if err != nil {
		return nil, err
	}
	at, err := c.listOffsets(ctx, topic, func(p int) kafka.OffsetRequest { return kafka.TimeOffsetOf(p, t) },
		func(po kafka.PartitionOffsets) int64 {
			for off := range po.Offsets {
				return off
			}
			return -1
		})
	if err != nil {
		return nil, err
	}
	for p, off := range at {
		if off < 0 {
			at[p] = ends[p]
		}
	}
	return at, nil
}

// protocolVersion is the version a consumer-protocol blob starts with,
// capped at the highest kafka-go decodes (later versions only add fields).
func protocolVersion(b []byte) int16 {
	if len(b) < 2 {
		return 0
	}
	return min(int16(binary.BigEndian.Uint16(b)), consumer.MaxVersionSupported)
}

// DecodeSubscription decodes a member's consumer-protocol subscription
// (the protocol metadata of its JoinGroup).
func DecodeSubscription(b []byte) (consumer.Subscription, error) {
	var sub consumer.Subscription
	err := protocol.Unmarshal(b, protocolVersion(b), &sub)
	return sub, err
}

// DecodeAssignment decodes a consumer-protocol assignment (what SyncGroup
// answers and DescribeGroups lists) into partitions by topic, sorted.
func DecodeAssignment(b []byte) (map[string][]int, error) {
	out := map[string][]int{}
	if len(b) == 0 {
		return out, nil // nothing assigned
	}
	var a consumer.Assignment
	if err := protocol.Unmarshal(b, protocolVersion(b), &a); err != nil {
		return nil, fmt.Errorf("decode the assignment: %w", err)
	}
	for _, tp := range a.AssignedPartitions {
		for _, p := range tp.Partitions {
			out[tp.Topic] = append(out[tp.Topic], int(p))
		}
	}
	for _, ps := range out {
		sort.Ints(ps)
	}
	return out, nil
}
