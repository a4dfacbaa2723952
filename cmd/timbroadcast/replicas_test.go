package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// replicaEnv is a topic with a backlog and an emulator, for several worker
// processes in one group.
func replicaEnv(t testing.TB, partitions, events int, emuRate float64, extra map[string]string) *crashEnv {
	tt, ok := t.(*testing.T)
	if !ok {
		panic("replicaEnv needs a *testing.T")
	}
	ce := newCrashEnv(tt, partitions, 0, sendertest.Options{Rate: emuRate}, extra)
	var msgs []kafka.Message
	for i := range events {
		k := fmt.Sprintf("key%02d", i%60) // 60 keys: every partition gets some
		text := fmt.Sprintf("%s-%d", k, i/60)
		v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{sender.Text(text)}})
		msgs = append(msgs, kafka.Message{Key: []byte(k), Value: v})
		ce.want = append(ce.want, text)
	}
	if err := ce.kc.Produce(context.Background(), ce.topic, msgs...); err != nil {
		t.Fatal(err)
	}
	return ce
}

// startReplicas starts n workers and returns them with their HTTP addresses.
func startReplicas(t *testing.T, env map[string]string, n int) ([]*worker, []string) {
	t.Helper()
	var workers []*worker
	var addrs []string
	for range n {
		w := startWorker(t, env)
		workers = append(workers, w)
		addrs = append(addrs, waitHTTPAddr(t, w))
	}
	return workers, addrs
}

// metricValue reads one sample from a worker's /metrics.
func metricValue(t *testing.T, addr, name string) float64 {
	t.Helper()
	body := get(t, "http://"+addr+"/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// noneTwice asserts no event was delivered more than once (the backlog may
// be unfinished).
func noneTwice(t *testing.T, emu *sendertest.Server) int {
	t.Helper()
	seen := map[string]bool{}
	for _, d := range emu.Delivered() {
		for _, el := range d.Elements() {
			var c sender.TextElem
			_ = json.Unmarshal(el.MsgContent, &c)
			if seen[c.Text] {
				t.Errorf("%q delivered twice", c.Text)
			}
			seen[c.Text] = true
		}
	}
	return len(seen)
}

// TestReplicasShareRate: three workers in one group on a 6-partition topic
// pace at TIM_RATE × their share: each owns 2 partitions and paces at 5/3
// calls/s, and the emulator (limit 5 calls/s) answers almost no 10023.
func TestReplicasShareRate(t *testing.T) {
	ce := replicaEnv(t, 6, 600, 5, map[string]string{"TIM_RATE": "5"})
	workers, addrs := startReplicas(t, ce.env, 3)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok := true
		for _, a := range addrs {
			if metricValue(t, a, "timbroadcast_assigned_partitions") != 2 {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the three workers did not settle on 2 partitions each")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// REPLICA_MEASURE_SECONDS=30 measures longer (the figure in README).
	span := 6 * time.Second
	if v, err := strconv.Atoi(os.Getenv("REPLICA_MEASURE_SECONDS")); err == nil && v > 0 {
		span = time.Duration(v) * time.Second
	}
	start := ce.emu.Stats()
	time.Sleep(span)
	end := ce.emu.Stats()
	for _, a := range addrs {
		if s := metricValue(t, a, "timbroadcast_rate_share_ratio"); s < 0.33 || s > 0.34 {
			t.Errorf("share %v, want 1/3", s)
		}
		if r := metricValue(t, a, "timbroadcast_effective_rate_calls_per_second"); r <= 0 || r > 5.0/3+0.01 {
			t.Errorf("effective rate %v, want at most 5/3", r)
		}
	}
	calls := end.Calls - start.Calls
	limited := end.ByCode[10023] - start.ByCode[10023]
	t.Logf("steady state: %d calls in %v (%.2f/s of 5), %d answered 10023", calls, span, float64(calls)/span.Seconds(), limited)
	if calls == 0 || float64(limited) > 0.02*float64(calls) {
		t.Errorf("%d of %d calls answered 10023, want at most 2%%", limited, calls)
	}
	for _, w := range workers {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		<-w.done
	}
	noneTwice(t, ce.emu)
}

// TestTakeover: one partition, three replicas: SIGKILL the active one; a
// standby takes over; nothing lost, nothing delivered twice.
func TestTakeover(t *testing.T) {
	t.Run("plain", func(t *testing.T) { takeover(t, map[string]string{"TIM_RATE": "30"}) })
	t.Run("merge", func(t *testing.T) {
		takeover(t, map[string]string{"TIM_RATE": "30", "TIM_MERGE": "on", "TIM_MERGE_MAX_BYTES": "300"})
	})
}

func takeover(t *testing.T, extra map[string]string) {
	ce := replicaEnv(t, 1, 150, 0, extra)
	workers, addrs := startReplicas(t, ce.env, 3)
	for len(ce.emu.Delivered()) < 10 {
		time.Sleep(10 * time.Millisecond)
	}
	active := -1
	for i, a := range addrs {
		if metricValue(t, a, "timbroadcast_assigned_partitions") == 1 {
			active = i
		}
	}
	if active < 0 {
		t.Fatal("no active replica")
	}
	workers[active].kill(t)
	killedAt := time.Now()
	before := len(ce.emu.Delivered())
	for len(ce.emu.Delivered()) == before {
		if time.Since(killedAt) > time.Minute {
			t.Fatal("no standby took over within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("takeover: deliveries resumed %v after SIGKILL of the active replica (KAFKA_SESSION_TIMEOUT=%s)",
		time.Since(killedAt).Round(time.Millisecond), ce.env["KAFKA_SESSION_TIMEOUT"])
	ce.waitCommitted(t, time.Minute)
	for i, w := range workers {
		if i != active {
			_ = w.cmd.Process.Signal(syscall.SIGTERM)
			<-w.done
		}
	}
	ce.check(t)
}

// TestRollingRestart: SIGTERM each of three replicas in turn, starting a
// replacement each time: nothing lost, nothing delivered twice.
func TestRollingRestart(t *testing.T) {
	ce := replicaEnv(t, 6, 300, 0, map[string]string{"TIM_RATE": "60"})
	workers := []*worker{startWorker(t, ce.env), startWorker(t, ce.env), startWorker(t, ce.env)}
	for i := range workers {
		for n := len(ce.emu.Delivered()); len(ce.emu.Delivered()) < n+15; {
			time.Sleep(10 * time.Millisecond)
		}
		if err := workers[i].cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := <-workers[i].done; err != nil {
			t.Errorf("worker %d exit: %v", i, err)
		}
		workers[i] = startWorker(t, ce.env)
	}
	ce.waitCommitted(t, 2*time.Minute)
	for _, w := range workers {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		<-w.done
	}
	ce.check(t)
}
