package group_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/group"
)

// config is a member of group over topic with short timeouts.
func config(groupID, topic, instance string) group.Config {
	return group.Config{Group: groupID, InstanceID: instance, Topics: []string{topic},
		SessionTimeout: 3 * time.Second, RebalanceTimeout: 2 * time.Second, HeartbeatInterval: 100 * time.Millisecond}
}

// assigned is the partitions of topic in gen, sorted.
func assigned(gen *group.Generation, topic string) []int {
	out := slices.Clone(gen.Assigned[topic])
	slices.Sort(out)
	return out
}

// joined is a Join's outcome.
type joined struct {
	gen *group.Generation
	err error
}

// joinAsync joins m in the background (a join answers once every member
// has joined) and returns its outcome.
func joinAsync(ctx context.Context, m *group.Member) <-chan joined {
	out := make(chan joined, 1)
	go func() {
		g, err := m.Join(ctx)
		out <- joined{g, err}
	}()
	return out
}

// TestMembers: a member alone gets every partition; a second member's join
// ends the first's generation at its next heartbeat (ErrRebalance); both
// join the next generation and split the partitions; after the second
// leaves, the first's heartbeats end its generation again and it gets all
// back. Offsets committed in a generation read back with their metadata.
func TestMembers(t *testing.T) {
	kc := consumertest.StartFake(t)
	topic := kc.Topic(t, "members", 4)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := group.New(kc.Conn, config("g-"+topic, topic, ""))
	defer a.Close()
	gen, err := a.Join(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !gen.Leader || !slices.Equal(assigned(gen, topic), []int{0, 1, 2, 3}) {
		t.Fatalf("alone: %+v, want the leader with partitions 0-3", gen)
	}
	parts, err := a.Partitions(ctx, []string{topic})
	if err != nil || !slices.Equal(parts[topic], []int{0, 1, 2, 3}) {
		t.Fatalf("Partitions = %v, %v; want 0-3", parts, err)
	}
	if _, err := a.Partitions(ctx, []string{"no-such-topic"}); err == nil {
		t.Error("Partitions of a missing topic: no error")
	}

	commit := &kafka.OffsetCommitRequest{GroupID: gen.Group, GenerationID: int(gen.ID), MemberID: gen.MemberID,
		Topics: map[string][]kafka.OffsetCommit{topic: {{Partition: 2, Offset: 7, Metadata: "m"}}}}
	if resp, err := a.OffsetCommit(ctx, commit); err != nil || resp.Topics[topic][0].Error != nil {
		t.Fatalf("OffsetCommit = %+v, %v", resp, err)
	}
	got, err := a.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: gen.Group, Topics: map[string][]int{topic: {2}}})
	if err != nil || len(got.Topics[topic]) != 1 || got.Topics[topic][0].CommittedOffset != 7 || got.Topics[topic][0].Metadata != "m" {
		t.Fatalf("OffsetFetch = %+v, %v; want offset 7 with metadata m", got, err)
	}

	// A second member joins: the first learns it from its heartbeat.
	ended := make(chan error, 1)
	hctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { ended <- a.Heartbeats(hctx, gen) }()
	b := group.New(kc.Conn, config("g-"+topic, topic, ""))
	defer b.Close()
	bj := joinAsync(ctx, b)
	if err := <-ended; !errors.Is(err, group.ErrRebalance) {
		t.Fatalf("the first member's heartbeats ended with %v, want ErrRebalance", err)
	}
	gen2, err := a.Join(ctx)
	if err != nil {
		t.Fatal(err)
	}
	j := <-bj
	if j.err != nil {
		t.Fatal(j.err)
	}
	both := append(assigned(gen2, topic), assigned(j.gen, topic)...)
	slices.Sort(both)
	if gen2.ID != j.gen.ID || len(gen2.Assigned[topic]) != 2 || !slices.Equal(both, []int{0, 1, 2, 3}) {
		t.Fatalf("two members: %+v and %+v, want one generation splitting 0-3 two and two", gen2, j.gen)
	}
	// A commit with the old generation is refused.
	if resp, err := a.OffsetCommit(ctx, commit); err == nil && resp.Topics[topic][0].Error == nil {
		t.Error("a commit of the previous generation was accepted")
	}

	// The second leaves: the first rejoins and gets every partition.
	go func() { ended <- a.Heartbeats(hctx, gen2) }()
	b.Leave(ctx)
	if err := <-ended; !errors.Is(err, group.ErrRebalance) {
		t.Fatalf("after a leave, the heartbeats ended with %v, want ErrRebalance", err)
	}
	gen3, err := a.Join(ctx)
	if err != nil || !slices.Equal(assigned(gen3, topic), []int{0, 1, 2, 3}) {
		t.Fatalf("after the leave: %+v, %v; want partitions 0-3", gen3, err)
	}
}

// TestStaticMember: a static member that restarts (a new Member, the same
// instance id, no leave) gets its partitions back without ending the other
// member's generation; a third process joining with the same instance id
// fences the running one, whose heartbeats end with ErrFenced.
func TestStaticMember(t *testing.T) {
	kc := consumertest.StartFake(t)
	topic := kc.Topic(t, "static", 4)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// a joins alone; b's join ends a's generation (seen by its heartbeat);
	// both join the next one, which is then stable.
	a := group.New(kc.Conn, config("g-"+topic, topic, "a"))
	defer a.Close()
	first, err := a.Join(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hctx, stop := context.WithCancel(ctx)
	defer stop()
	ended := make(chan error, 1)
	go func() { ended <- a.Heartbeats(hctx, first) }()
	b := group.New(kc.Conn, config("g-"+topic, topic, "b"))
	bj := joinAsync(ctx, b)
	if err := <-ended; !errors.Is(err, group.ErrRebalance) {
		t.Fatalf("the first member's heartbeats ended with %v, want ErrRebalance", err)
	}
	genA, err := a.Join(ctx)
	if err != nil {
		t.Fatal(err)
	}
	jb := <-bj
	if jb.err != nil {
		t.Fatal(jb.err)
	}
	genB := jb.gen
	if genA.ID != genB.ID {
		t.Fatalf("a in generation %d, b in %d; want one", genA.ID, genB.ID)
	}
	go func() { ended <- a.Heartbeats(hctx, genA) }()

	// b restarts: a new process, the same instance id, no LeaveGroup.
	b.Leave(ctx) // a static member never leaves: this sends nothing
	b.Close()
	b2 := group.New(kc.Conn, config("g-"+topic, topic, "b"))
	defer b2.Close()
	genB2, err := b2.Join(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(assigned(genB2, topic), assigned(genB, topic)) {
		t.Errorf("the restarted static member got %v, want its partitions back (%v)", assigned(genB2, topic), assigned(genB, topic))
	}
	select {
	case err := <-ended:
		t.Fatalf("the other member's generation ended (%v): a static restart must not rebalance", err)
	case <-time.After(500 * time.Millisecond): // five heartbeats
	}

	// A second process with a's instance id fences a.
	a2 := group.New(kc.Conn, config("g-"+topic, topic, "a"))
	defer a2.Close()
	if _, err := a2.Join(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-ended; !errors.Is(err, group.ErrFenced) {
		t.Fatalf("the fenced member's heartbeats ended with %v, want ErrFenced", err)
	}
}
