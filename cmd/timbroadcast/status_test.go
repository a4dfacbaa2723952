package main_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// statusDoc is the part of `status --json` the test reads.
type statusDoc struct {
	Group   string `json:"group"`
	Members []struct {
		MemberID   string   `json:"member_id"`
		InstanceID string   `json:"instance_id"`
		Partitions []string `json:"partitions"`
	} `json:"members"`
	Partitions []struct {
		Topic     string `json:"topic"`
		Partition int    `json:"partition"`
		Committed int64  `json:"committed"`
		End       int64  `json:"end"`
		Lag       int64  `json:"lag"`
		Owner     string `json:"owner"`
		InFlight  *struct {
			Records int64  `json:"records"`
			Random  uint32 `json:"random"`
		} `json:"in_flight"`
	} `json:"partitions"`
	DeadLetters struct {
		Total    int            `json:"total"`
		ByReason map[string]int `json:"by_reason"`
	} `json:"dead_letters_last_hour"`
}

// TestStatus: `status --json` against two running workers (merge mode, a
// slow API so merged calls are in flight) names both members and every
// partition with its owner, a lag within a few records of the truth, a
// merged call in flight, and the dead letters of the last hour; with no
// worker running it exits 1.
func TestStatus(t *testing.T) {
	needBinary(t)
	ce := replicaEnvWith(t, 6, 200, sendertest.Options{Faults: sendertest.Faults{Latency: 1500 * time.Millisecond}}, 60,
		// Static members with the static tests' group timeouts: a rebalance
		// waits for a member whose calls take 1.5 s to drain.
		map[string]string{"TIM_MERGE": "on", "TIM_MERGE_MAX_BYTES": "600", "TIM_RATE": "20",
			"KAFKA_SESSION_TIMEOUT": "10s", "KAFKA_HEARTBEAT_INTERVAL": "500ms", "KAFKA_REBALANCE_TIMEOUT": "10s"})
	if err := ce.kc.Produce(context.Background(), ce.topic, kafka.Message{Key: []byte("bad"), Value: []byte("not json")}); err != nil {
		t.Fatal(err)
	}
	w0 := startWorker(t, withInstance(ce.env, "w-0"))
	w1 := startWorker(t, withInstance(ce.env, "w-1"))
	var doc statusDoc
	deadline := time.Now().Add(40 * time.Second)
	for {
		out, stderr, code := runCmd(t, ce.env, "", "status", "--json")
		if code != 0 {
			t.Logf("status: exit %d: %s", code, stderr)
		} else if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		inFlight := 0
		for _, p := range doc.Partitions {
			if p.InFlight != nil && p.InFlight.Records > 1 {
				inFlight++
			}
		}
		if len(doc.Members) == 2 && inFlight > 0 && doc.DeadLetters.Total == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed 2 members, a merged call in flight and the dead letter: %+v", doc)
		}
		time.Sleep(200 * time.Millisecond)
	}
	committed, err := ce.kc.Committed(context.Background(), ce.env["KAFKA_GROUP_ID"], ce.topic)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := ce.kc.Ends(context.Background(), ce.topic)
	if err != nil {
		t.Fatal(err)
	}
	instances := map[string]bool{}
	for _, m := range doc.Members {
		instances[m.InstanceID] = true
	}
	if !instances["w-0"] || !instances["w-1"] {
		t.Errorf("members %+v, want instance ids w-0 and w-1", doc.Members)
	}
	if len(doc.Partitions) != 6 {
		t.Fatalf("%d partitions, want 6", len(doc.Partitions))
	}
	for _, p := range doc.Partitions {
		truth := ends[p.Partition] - committed[p.Partition]
		if p.Owner != "w-0" && p.Owner != "w-1" {
			t.Errorf("%s/%d owned by %q", p.Topic, p.Partition, p.Owner)
		}
		if d := p.Lag - truth; d < -25 || d > 25 {
			t.Errorf("%s/%d: lag %d, truth %d (read a moment later)", p.Topic, p.Partition, p.Lag, truth)
		}
	}
	if doc.DeadLetters.ByReason["invalid_json"] != 1 {
		t.Errorf("dead letters %+v, want 1 invalid_json", doc.DeadLetters)
	}
	out, _, code := runCmd(t, ce.env, "", "status")
	if code != 0 || !strings.Contains(out, "MEMBER") || !strings.Contains(out, "w-0") || !strings.Contains(out, "IN FLIGHT") {
		t.Errorf("status (table): exit %d\n%s", code, out)
	}
	t.Logf("status:\n%s", out)

	// Nobody running: exit 1.
	for _, w := range []*worker{w0, w1} {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		<-w.done
	}
	env := map[string]string{}
	for k, v := range ce.env {
		env[k] = v
	}
	env["KAFKA_GROUP_ID"] = "nobody-here"
	if out, stderr, code := runCmd(t, env, "", "status"); code != 1 || !strings.Contains(stderr, "no member") {
		t.Errorf("status of an empty group: exit %d\n%s\n%s", code, out, stderr)
	}
}

// TestStatusEscapesMembers: a member of the group whose instance id and
// client id hold terminal escape sequences (any client with the group's
// ACL chooses them) is shown escaped: `status` prints no raw ESC, and its
// JSON carries the id intact, escaped as JSON escapes it.
func TestStatusEscapesMembers(t *testing.T) {
	needBinary(t)
	ce := newCrashEnv(t, 1, 1, sendertest.Options{}, nil)
	const hostile = "\x1b[2J\x1b]0;owned\x07x"
	cl, err := kgo.NewClient(kgo.SeedBrokers(ce.kc.Brokers...), kgo.ConsumerGroup(ce.env["KAFKA_GROUP_ID"]),
		kgo.ConsumeTopics(ce.topic), kgo.InstanceID(hostile), kgo.ClientID(hostile))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	var polling sync.WaitGroup
	defer polling.Wait()
	defer cancel()
	polling.Go(func() { // polling joins the group and keeps the member in it
		for ctx.Err() == nil {
			cl.PollFetches(ctx)
		}
	})
	var out string
	for ctx.Err() == nil {
		out, _, _ = runCmd(t, ce.env, "", "status")
		if strings.Contains(out, `\x1b[2J`) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.ContainsRune(out, 0x1b) || strings.ContainsRune(out, 0x07) || !strings.Contains(out, `\x1b[2J`) {
		t.Errorf("status printed %q; want the member's ids escaped", out)
	}
	js, _, _ := runCmd(t, ce.env, "", "status", "--json")
	if strings.ContainsRune(js, 0x1b) || !strings.Contains(js, `\u001b[2J`) {
		t.Errorf("status --json printed %q; want the ids JSON-escaped", js)
	}
}
