package main_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// refuseCommits makes the kfake broker answer offset commits with code
// while refuse is set, counting them in refused.
func refuseCommits(kc *consumertest.Cluster, code int16, refuse *atomic.Bool, refused *atomic.Int64) {
	kc.Fake.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		kc.Fake.KeepControl()
		if !refuse.Load() {
			return nil, nil, false
		}
		refused.Add(1)
		r := req.(*kmsg.OffsetCommitRequest)
		resp := r.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
}

// countJoins counts JoinGroup requests while count is set.
func countJoins(kc *consumertest.Cluster, count *atomic.Bool, joins *atomic.Int64) {
	kc.Fake.ControlKey(int16(kmsg.JoinGroup), func(kmsg.Request) (kmsg.Response, error, bool) {
		if count.Load() {
			joins.Add(1)
		}
		return nil, nil, false // observe only: the broker answers
	})
}

// TestCommitRefusedByACL: offset commits refused with
// GROUP_AUTHORIZATION_FAILED for 8 s (an operator's ACL mistake) hold the
// partitions: no rejoin loop, /readyz says stuck once TIM_STUCK_AFTER has
// passed and names the refusal, nothing is sent twice; once the ACL is
// fixed everything is delivered once and committed.
func TestCommitRefusedByACL(t *testing.T) {
	needBinary(t)
	ce := newCrashEnv(t, 3, 20, sendertest.Options{}, map[string]string{"TIM_STUCK_AFTER": "1s", "TIM_RATE": "50"})
	var refuse, counting atomic.Bool
	var refused, joins atomic.Int64
	refuseCommits(ce.kc, 30, &refuse, &refused) // GROUP_AUTHORIZATION_FAILED
	countJoins(ce.kc, &counting, &joins)
	refuse.Store(true)
	w := startWorker(t, ce.env)
	addr := waitHTTPAddr(t, w)

	// The fault window starts with the first refused commit.
	deadline := time.Now().Add(30 * time.Second)
	for refused.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no commit was refused within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	counting.Store(true)
	faultStart := time.Now()
	var stuckBody string
	for time.Since(faultStart) < 8*time.Second {
		if code, body := status(t, "http://"+addr+"/readyz"); code != 200 && strings.Contains(body, "offset commit refused") {
			stuckBody = body
		}
		time.Sleep(100 * time.Millisecond)
	}
	counting.Store(false)
	stuck := metricValue(t, addr, "timbroadcast_stuck_partitions")
	failures := metricValue(t, addr, `timbroadcast_commit_failures_total{error="Group Authorization Failed"}`)
	refuse.Store(false)
	if stuckBody == "" {
		t.Errorf("/readyz never reported the refused commits as stuck during the fault")
	} else {
		t.Logf("/readyz during the fault: %s", strings.ReplaceAll(stuckBody, "\n", " | "))
	}
	if stuck < 1 {
		t.Errorf("timbroadcast_stuck_partitions = %v during the fault, want at least 1", stuck)
	}
	if failures < 1 {
		t.Errorf("timbroadcast_commit_failures_total{error=\"Group Authorization Failed\"} = %v, want > 0", failures)
	}
	if n := joins.Load(); n > 1 {
		t.Errorf("%d JoinGroup requests during the fault, want at most 1: a refused commit must not churn the group", n)
	}
	if !strings.Contains(w.logs.String(), "grant it READ on the group") {
		t.Errorf("no error log naming the ACL to grant; logs:\n%s", w.logs.String())
	}
	sentDuringFault := len(ce.emu.Delivered())

	ce.waitCommitted(t, 60*time.Second)
	ce.check(t)
	noneTwice(t, ce.emu)
	if code, body := status(t, "http://"+addr+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %q after the fault cleared, want 200", code, body)
	}
	t.Logf("fault for 8s: %d commits refused, %d joins, %d calls during the fault; %d calls for %d events in all",
		refused.Load(), joins.Load(), sentDuringFault, len(ce.emu.Delivered()), len(ce.want))
}
