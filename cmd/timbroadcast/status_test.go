package main_test

import (
	"context"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

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
