package main_test

import (
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

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
