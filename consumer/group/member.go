package group

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/consumer"
	"github.com/segmentio/kafka-go/protocol/heartbeat"
	"github.com/segmentio/kafka-go/protocol/joingroup"
	"github.com/segmentio/kafka-go/protocol/leavegroup"
	meta "github.com/segmentio/kafka-go/protocol/metadata"
	"github.com/segmentio/kafka-go/protocol/offsetcommit"
	"github.com/segmentio/kafka-go/protocol/offsetfetch"
	"github.com/segmentio/kafka-go/protocol/syncgroup"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
)

// ErrFenced says another process joined the group with this member's
// group instance id: two replicas share the id. The worker stops; it never
// rejoins in a loop against the other.
var ErrFenced = errors.New("fenced: another member of the group joined with the same group instance id")

// ErrRebalance ends a generation so the member rejoins: the coordinator
// started a rebalance, or the generation is no longer current.
var ErrRebalance = errors.New("the group is rebalancing")

// Generation is one generation of the group, as this member joined it.
type Generation struct {
	ID       int32
	Group    string
	MemberID string
	// Leader is whether this member assigned the generation's partitions.
	Leader bool
	// Assigned are this member's partitions, by topic.
	Assigned map[string][]int
}

// Config is a member's group and how it keeps its place there.
type Config struct {
	// Group is the group id.
	Group string
	// InstanceID makes the member static (KIP-345); "" is a dynamic one.
	InstanceID string
	// Topics are the topics the member subscribes to.
	Topics []string
	// SessionTimeout, RebalanceTimeout and HeartbeatInterval are the group
	// protocol's.
	SessionTimeout, RebalanceTimeout, HeartbeatInterval time.Duration
	// Logger logs what the member does; nil logs nothing.
	Logger *zap.Logger
}

// Member is this process's membership of the consumer group. Its methods
// may be called from several goroutines.
type Member struct {
	conn       *kafkaconn.Conn
	group      string
	instanceID string // "" for a dynamic member
	topics     []string
	session    time.Duration
	rebalance  time.Duration
	heartbeat  time.Duration
	balancers  []kafka.GroupBalancer
	log        *zap.Logger

	mu       sync.Mutex
	coord    *kafkaconn.BrokerConn
	memberID string
}

// New returns a member of cfg.Group that reaches the cluster over conn;
// it joins at Join.
func New(conn *kafkaconn.Conn, cfg Config) *Member {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Member{
		conn: conn, group: cfg.Group, instanceID: cfg.InstanceID, topics: cfg.Topics,
		session: cfg.SessionTimeout, rebalance: cfg.RebalanceTimeout, heartbeat: cfg.HeartbeatInterval,
		// kafka-go's ConsumerGroup offers these two, range first: a group
		// upgraded replica by replica keeps a protocol in common.
		balancers: []kafka.GroupBalancer{kafka.RangeGroupBalancer{}, kafka.RoundRobinGroupBalancer{}},
		log:       log,
	}
}

// coordinator returns the kept connection to the group's coordinator,
// looking it up first if need be.
func (m *Member) coordinator(ctx context.Context) (*kafkaconn.BrokerConn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.coord != nil {
		return m.coord, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := m.conn.Client().FindCoordinator(ctx, &kafka.FindCoordinatorRequest{Key: m.group, KeyType: kafka.CoordinatorKeyTypeConsumer})
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err != nil {
		return nil, fmt.Errorf("find the coordinator of group %q: %w", m.group, err)
	}
	addr := fmt.Sprintf("%s:%d", resp.Coordinator.Host, resp.Coordinator.Port)
	m.coord = m.conn.Broker(addr)
	m.log.Debug("group coordinator found", zap.String("coordinator", addr), zap.Int("node", resp.Coordinator.NodeID))
	return m.coord, nil
}

// lostCoordinator forgets the coordinator c (it moved, or its connection
// broke): the next request looks it up again.
func (m *Member) lostCoordinator(c *kafkaconn.BrokerConn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.coord == c && c != nil {
		c.Close()
		m.coord = nil
	}
}

// roundTrip sends req to the coordinator and returns the answer and the
// connection it came over (its Version says how it was encoded). A broken
// connection makes the next request look the coordinator up again.
func (m *Member) roundTrip(ctx context.Context, req protocol.Message) (protocol.Message, *kafkaconn.BrokerConn, error) {
	c, err := m.coordinator(ctx)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.RoundTrip(ctx, req)
	if err != nil {
		m.lostCoordinator(c)
		return nil, nil, err
	}
	return resp, c, nil
}

// Partitions returns the partition ids of topics, asked of the
// coordinator over the kept connection rather than read from the
// transport's cache (kept for minutes while nothing fails): the leader's
// assignment, its watch for added partitions and the schedule's view see
// a topic's partitions as the cluster has them now.
func (m *Member) Partitions(ctx context.Context, topics []string) (map[string][]int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg, _, err := m.roundTrip(ctx, &meta.Request{TopicNames: topics})
	if err != nil {
		return nil, fmt.Errorf("read the partitions of %v: %w", topics, err)
	}
	resp, ok := msg.(*meta.Response)
	if !ok {
		return nil, fmt.Errorf("read the partitions of %v: unexpected answer %T", topics, msg)
	}
	out := map[string][]int{}
	for _, t := range resp.Topics {
		if t.ErrorCode != 0 {
			return nil, fmt.Errorf("topic %s: %w", t.Name, kafka.Error(t.ErrorCode))
		}
		ids := make([]int, 0, len(t.Partitions))
		for _, p := range t.Partitions {
			ids = append(ids, int(p.PartitionIndex))
		}
		sort.Ints(ids)
		out[t.Name] = ids
	}
	for _, t := range topics {
		if _, ok := out[t]; !ok {
			return nil, fmt.Errorf("topic %s: %w", t, kafka.UnknownTopicOrPartition)
		}
	}
	return out, nil
}

// heartbeatError is the error code of a Heartbeat answer. kafka-go's
// heartbeat.Response declares ErrorCode before ThrottleTimeMs, but from v1
// on the wire carries throttle_time_ms first; decoded in kafka-go's order,
// the answer's error code lands in the low 16 bits of ThrottleTimeMs (and
// ErrorCode holds the throttle's high bits, zero in practice). Without
// this, every REBALANCE_IN_PROGRESS reads as success and the member is
// dropped from the group at the rebalance timeout.
func heartbeatError(r *heartbeat.Response, version int16) int16 {
	if version >= 1 {
		return int16(uint16(uint32(r.ThrottleTimeMs)))
	}
	return r.ErrorCode
}

// coordinatorMoved reports whether code, answered over via, says the
// coordinator is elsewhere or not ready, and forgets via if so (not a
// newer coordinator another request has found meanwhile).
func (m *Member) coordinatorMoved(via *kafkaconn.BrokerConn, code int16) bool {
	switch kafka.Error(code) {
	case kafka.NotCoordinatorForGroup, kafka.GroupCoordinatorNotAvailable:
		m.lostCoordinator(via)
		return true
	case kafka.GroupLoadInProgress:
		return true
	}
	return false
}

func (m *Member) id() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.memberID
}

func (m *Member) setID(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.memberID = id
}

// subscription is this member's protocol metadata: the same bytes on every
// join of every process of one configuration, as a static member's
// restart without a rebalance needs.
func (m *Member) subscription() ([]joingroup.RequestProtocol, error) {
	var out []joingroup.RequestProtocol
	for _, b := range m.balancers {
		ud, err := b.UserData()
		if err != nil {
			return nil, err
		}
		meta, err := protocol.Marshal(0, consumer.Subscription{Version: 0, Topics: m.topics, UserData: ud})
		if err != nil {
			return nil, err
		}
		out = append(out, joingroup.RequestProtocol{Name: b.ProtocolName(), Metadata: meta})
	}
	return out, nil
}

// Join joins the group and returns the new generation: JoinGroup (again
// with the member id the coordinator assigns, KIP-394), the leader's
// assignment, SyncGroup.
func (m *Member) Join(ctx context.Context) (*Generation, error) {
	protocols, err := m.subscription()
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		if attempt > 10 {
			return nil, errors.New("join: the group kept rebalancing")
		}
		// The coordinator answers a JoinGroup when the rebalance completes:
		// up to the rebalance timeout.
		jctx, cancel := context.WithTimeout(ctx, m.rebalance+10*time.Second)
		msg, via, err := m.roundTrip(jctx, &joingroup.Request{
			GroupID: m.group, SessionTimeoutMS: int32(m.session / time.Millisecond),
			RebalanceTimeoutMS: int32(m.rebalance / time.Millisecond), MemberID: m.id(), GroupInstanceID: m.instanceID,
			ProtocolType: "consumer", Protocols: protocols,
		})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("join group %q: %w", m.group, err)
		}
		jr := msg.(*joingroup.Response)
		switch code := jr.ErrorCode; kafka.Error(code) {
		case 0:
		case kafka.MemberIDRequired:
			m.setID(jr.MemberID)
			continue
		case kafka.UnknownMemberId:
			m.setID("")
			continue
		case kafka.RebalanceInProgress:
			continue
		case kafka.FencedInstanceID:
			return nil, ErrFenced
		default:
			m.coordinatorMoved(via, code)
			return nil, fmt.Errorf("join group %q: %w", m.group, kafka.Error(code))
		}
		m.setID(jr.MemberID)
		gen := &Generation{ID: jr.GenerationID, Group: m.group, MemberID: jr.MemberID, Leader: jr.LeaderID == jr.MemberID}
		var assignments []syncgroup.RequestAssignment
		if gen.Leader {
			if assignments, err = m.assign(ctx, jr.ProtocolName, jr.Members); err != nil {
				return nil, fmt.Errorf("assign partitions: %w", err)
			}
		}
		sctx, cancel := context.WithTimeout(ctx, m.rebalance+10*time.Second)
		msg, via, err = m.roundTrip(sctx, &syncgroup.Request{
			GroupID: m.group, GenerationID: gen.ID, MemberID: gen.MemberID, GroupInstanceID: m.instanceID, Assignments: assignments,
		})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("sync group %q: %w", m.group, err)
		}
		sr := msg.(*syncgroup.Response)
		switch code := sr.ErrorCode; kafka.Error(code) {
		case 0:
		case kafka.RebalanceInProgress, kafka.IllegalGeneration:
			continue
		case kafka.UnknownMemberId:
			m.setID("")
			continue
		case kafka.FencedInstanceID:
			return nil, ErrFenced
		default:
			m.coordinatorMoved(via, code)
			return nil, fmt.Errorf("sync group %q: %w", m.group, kafka.Error(code))
		}
		if gen.Assigned, err = kafkaconn.DecodeAssignment(sr.Assignments); err != nil {
			return nil, fmt.Errorf("sync group %q: %w", m.group, err)
		}
		return gen, nil
	}
}

// assign runs the balancer the group chose over the members' subscriptions
// and the topics' partitions. Members are known to the balancer by their
// group instance id when they have one, so static members keep their
// partitions across restarts (their member ids change).
func (m *Member) assign(ctx context.Context, protocolName string, members []joingroup.ResponseMember) ([]syncgroup.RequestAssignment, error) {
	var balancer kafka.GroupBalancer
	for _, b := range m.balancers {
		if b.ProtocolName() == protocolName {
			balancer = b
		}
	}
	if balancer == nil {
		return nil, fmt.Errorf("the group chose protocol %q, which this member does not offer", protocolName)
	}
	byName := map[string]string{} // balancer's name -> member id
	var gms []kafka.GroupMember
	topics := map[string]bool{}
	for _, jm := range members {
		sub, err := kafkaconn.DecodeSubscription(jm.Metadata)
		if err != nil {
			return nil, fmt.Errorf("member %s's subscription: %w", jm.MemberID, err)
		}
		name := jm.MemberID
		if jm.GroupInstanceID != "" {
			name = jm.GroupInstanceID
		}
		byName[name] = jm.MemberID
		gms = append(gms, kafka.GroupMember{ID: name, Topics: sub.Topics, UserData: sub.UserData})
		for _, t := range sub.Topics {
			topics[t] = true
		}
	}
	names := make([]string, 0, len(topics))
	for t := range topics {
		names = append(names, t)
	}
	sort.Strings(names)
	byTopic, err := m.Partitions(ctx, names)
	if err != nil {
		return nil, err
	}
	var partitions []kafka.Partition
	for _, t := range names {
		for _, id := range byTopic[t] {
			partitions = append(partitions, kafka.Partition{Topic: t, ID: id})
		}
	}
	var out []syncgroup.RequestAssignment
	for name, byTopic := range balancer.AssignGroups(gms, partitions) {
		a := consumer.Assignment{Version: 0}
		topicNames := make([]string, 0, len(byTopic))
		for t := range byTopic {
			topicNames = append(topicNames, t)
		}
		sort.Strings(topicNames)
		for _, t := range topicNames {
			ps := make([]int32, len(byTopic[t]))
			for i, p := range byTopic[t] {
				ps[i] = int32(p)
			}
			a.AssignedPartitions = append(a.AssignedPartitions, consumer.TopicPartition{Topic: t, Partitions: ps})
		}
		b, err := protocol.Marshal(0, a)
		if err != nil {
			return nil, err
		}
		out = append(out, syncgroup.RequestAssignment{MemberID: byName[name], Assignment: b})
	}
	return out, nil
}

// Heartbeats keeps gen alive until ctx ends; it returns the error that
// ended the generation: ErrRebalance, ErrFenced, or a session lost to
// failing heartbeats.
func (m *Member) Heartbeats(ctx context.Context, gen *Generation) error {
	t := time.NewTicker(m.heartbeat)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, max(m.heartbeat, time.Second))
		msg, via, err := m.roundTrip(hctx, &heartbeat.Request{GroupID: m.group, GenerationID: gen.ID, MemberID: gen.MemberID,
			GroupInstanceID: m.instanceID})
		cancel()
		code := int16(0)
		if err == nil {
			code = heartbeatError(msg.(*heartbeat.Response), via.Version(protocol.Heartbeat))
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil && code == 0:
			lastOK = time.Now()
			continue
		case err == nil && kafka.Error(code) == kafka.FencedInstanceID:
			return ErrFenced
		case err == nil && (kafka.Error(code) == kafka.RebalanceInProgress || kafka.Error(code) == kafka.IllegalGeneration):
			return ErrRebalance
		case err == nil && kafka.Error(code) == kafka.UnknownMemberId:
			m.setID("")
			return ErrRebalance
		case err == nil && !m.coordinatorMoved(via, code):
			m.log.Warn("heartbeat answered with an error", zap.Error(kafka.Error(code)))
		case err != nil:
			m.log.Warn("heartbeat failed", zap.Error(err))
		}
		if time.Since(lastOK) > m.session {
			return fmt.Errorf("no heartbeat accepted for the session timeout (%s): %w", m.session, ErrRebalance)
		}
	}
}

// Leave leaves the group (dynamic members only: a static member keeps its
// place for a restart, KIP-345).
func (m *Member) Leave(ctx context.Context) {
	id := m.id()
	if m.instanceID != "" || id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// LeaveGroup v0 (kafkaconn caps it there): kafka-go's response type
	// has the same field-order slip as its heartbeat's from v1 on, and a
	// dynamic member needs nothing newer.
	msg, _, err := m.roundTrip(ctx, &leavegroup.Request{GroupID: m.group, MemberID: id,
		Members: []leavegroup.RequestMember{{MemberID: id}}})
	if err == nil && msg.(*leavegroup.Response).ErrorCode != 0 {
		err = kafka.Error(msg.(*leavegroup.Response).ErrorCode)
	}
	if err != nil {
		m.log.Warn("leaving the group failed; its partitions move after the session timeout", zap.Error(err))
	}
	m.setID("")
}

// Close closes the coordinator connection.
func (m *Member) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.coord != nil {
		m.coord.Close()
		m.coord = nil
	}
}

// OffsetCommit commits over the coordinator connection, with this
// member's group instance id (OffsetCommit v7).
func (m *Member) OffsetCommit(ctx context.Context, r *kafka.OffsetCommitRequest) (*kafka.OffsetCommitResponse, error) {
	req := &offsetcommit.Request{GroupID: r.GroupID, GenerationID: int32(r.GenerationID), MemberID: r.MemberID,
		RetentionTimeMs: -1, GroupInstanceID: m.instanceID}
	for topic, commits := range r.Topics {
		rt := offsetcommit.RequestTopic{Name: topic}
		for _, c := range commits {
			rt.Partitions = append(rt.Partitions, offsetcommit.RequestPartition{PartitionIndex: int32(c.Partition),
				CommittedOffset: c.Offset, CommittedLeaderEpoch: -1, CommittedMetadata: c.Metadata})
		}
		req.Topics = append(req.Topics, rt)
	}
	msg, via, err := m.roundTrip(ctx, req)
	if err != nil {
		return nil, err
	}
	out := &kafka.OffsetCommitResponse{Topics: map[string][]kafka.OffsetCommitPartition{}}
	for _, t := range msg.(*offsetcommit.Response).Topics {
		for _, p := range t.Partitions {
			var perr error
			if p.ErrorCode != 0 {
				m.coordinatorMoved(via, p.ErrorCode)
				perr = kafka.Error(p.ErrorCode)
			}
			out.Topics[t.Name] = append(out.Topics[t.Name], kafka.OffsetCommitPartition{Partition: int(p.PartitionIndex), Error: perr})
		}
	}
	return out, nil
}

// OffsetFetch reads committed offsets over the coordinator connection.
func (m *Member) OffsetFetch(ctx context.Context, r *kafka.OffsetFetchRequest) (*kafka.OffsetFetchResponse, error) {
	req := &offsetfetch.Request{GroupID: r.GroupID}
	for topic, parts := range r.Topics {
		rt := offsetfetch.RequestTopic{Name: topic}
		for _, p := range parts {
			rt.PartitionIndexes = append(rt.PartitionIndexes, int32(p))
		}
		req.Topics = append(req.Topics, rt)
	}
	msg, via, err := m.roundTrip(ctx, req)
	if err != nil {
		return nil, err
	}
	resp := msg.(*offsetfetch.Response)
	out := &kafka.OffsetFetchResponse{Topics: map[string][]kafka.OffsetFetchPartition{}}
	if resp.ErrorCode != 0 {
		m.coordinatorMoved(via, resp.ErrorCode)
		out.Error = kafka.Error(resp.ErrorCode)
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			var perr error
			if p.ErrorCode != 0 {
				m.coordinatorMoved(via, p.ErrorCode)
				perr = kafka.Error(p.ErrorCode)
			}
			out.Topics[t.Name] = append(out.Topics[t.Name], kafka.OffsetFetchPartition{Partition: int(p.PartitionIndex),
				CommittedOffset: p.CommittedOffset, Metadata: p.Metadata, Error: perr})
		}
	}
	return out, nil
}
