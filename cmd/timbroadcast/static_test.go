package main_test

import (
	"errors"
	"os/exec"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// Static membership (KIP-345) on the real binary: restarts without a
// rebalance, rolling restarts, fencing.

// staticEnv is a backlog for static members: 6 partitions, TIM_RATE 50,
// and a session timeout of 10 s, so a restart that waited for it would
// show.
func staticEnv(t testing.TB, events int) *crashEnv {
	t.Helper()
	return replicaEnvWith(t, 6, events, sendertest.Options{}, 60, map[string]string{
		"TIM_RATE": "50", "KAFKA_SESSION_TIMEOUT": "10s", "KAFKA_HEARTBEAT_INTERVAL": "500ms", "KAFKA_REBALANCE_TIMEOUT": "10s",
	})
}

// withInstance returns env with KAFKA_GROUP_INSTANCE_ID set to id.
func withInstance(env map[string]string, id string) map[string]string {
	out := map[string]string{"KAFKA_GROUP_INSTANCE_ID": id}
	for k, v := range env {
		if _, ok := out[k]; !ok {
			out[k] = v
		}
	}
	return out
}

// firstCallAfter returns how long after start the emulator got a call
// beyond calls, waiting at most timeout.
func firstCallAfter(t testing.TB, emu *sendertest.Server, calls int, start time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	for time.Since(start) < timeout {
		if emu.Stats().Calls > calls {
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("no call within %v of the restart", timeout)
	return 0
}

// restartStatic kills a static member with SIGKILL and starts it again
// at once, n times, each after it made a few calls; it returns the time
// from each start to the first call.
func restartStatic(t testing.TB, ce *crashEnv, n int) []time.Duration {
	t.Helper()
	env := withInstance(ce.env, "replica-0")
	w := startWorker(t, env)
	var delays []time.Duration
	for i := range n {
		base := ce.emu.Stats().Calls
		deadline := time.Now().Add(30 * time.Second)
		for ce.emu.Stats().Calls < base+5 {
			if time.Now().After(deadline) {
				t.Fatalf("restart %d: no calls within 30s; worker log:\n%s", i, w.logs.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
		w.kill(t)
		calls := ce.emu.Stats().Calls
		start := time.Now()
		w = startWorker(t, env)
		delays = append(delays, firstCallAfter(t, ce.emu, calls, start, 30*time.Second))
	}
	ce.waitCommitted(t, 2*time.Minute)
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-w.done; err != nil {
		t.Errorf("the last worker's exit: %v", err)
	}
	return delays
}

// TestStaticRestart: a static member SIGKILLed and started again at once,
// five times under a backlog, takes its partitions back without waiting
// for the 10 s session timeout; nothing is lost or delivered twice, order
// is kept, everything is committed.
func TestStaticRestart(t *testing.T) {
	needBinary(t)
	ce := staticEnv(t, 300)
	delays := restartStatic(t, ce, 5)
	ce.check(t)
	t.Logf("start to first call after each SIGKILL: %v", delays)
	for _, d := range delays {
		if d > 5*time.Second {
			t.Errorf("a restart took %v to its first call: it waited for the session timeout (10s)", d)
		}
	}
}

// BenchmarkStaticRestart reports the time from a static member's restart
// (after SIGKILL) to its first call: median and max of 5.
//
//	go test -run '^$' -bench StaticRestart -benchtime 1x ./cmd/timbroadcast
func BenchmarkStaticRestart(b *testing.B) {
	var delays []time.Duration
	for range b.N {
		ce := staticEnv(b, 600)
		delays = append(delays, restartStatic(b, ce, 5)...)
	}
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	b.ReportMetric(delays[len(delays)/2].Seconds()*1000, "median-ms")
	b.ReportMetric(delays[len(delays)-1].Seconds()*1000, "max-ms")
	b.ReportMetric(0, "ns/op")
}

// rollingRestart runs three static replicas at 5 calls/s and restarts
// them in turn (SIGTERM, start again), and returns the accepted calls per
// second over the rollout. Every exit must be clean.
func rollingRestart(t testing.TB) float64 {
	t.Helper()
	const rate = 5.0
	ce := replicaEnvWith(t, 6, 400, sendertest.Options{Rate: rate, Limiter: sendertest.LimiterSpacing}, 60, map[string]string{
		"TIM_RATE": "5", "KAFKA_SESSION_TIMEOUT": "10s", "KAFKA_HEARTBEAT_INTERVAL": "500ms", "KAFKA_REBALANCE_TIMEOUT": "10s",
	})
	var leaves atomic.Int64
	ce.kc.Fake.ControlKey(int16(kmsg.LeaveGroup), func(kmsg.Request) (kmsg.Response, error, bool) {
		leaves.Add(1)
		return nil, nil, false
	})
	var workers []*worker
	for i := range 3 {
		workers = append(workers, startWorker(t, withInstance(ce.env, "replica-"+string(rune('0'+i)))))
	}
	deadline := time.Now().Add(30 * time.Second)
	for ce.emu.Stats().Delivered < 5 {
		if time.Now().After(deadline) {
			t.Fatal("the replicas did not start delivering")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	start, began := ce.emu.Stats(), time.Now()
	for i, w := range workers {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		if err := <-w.done; err != nil {
			t.Errorf("replica-%d's exit on SIGTERM: %v; log:\n%s", i, err, w.logs.String())
		}
		workers[i] = startWorker(t, withInstance(ce.env, "replica-"+string(rune('0'+i))))
		time.Sleep(time.Second)
	}
	time.Sleep(time.Second)
	end, span := ce.emu.Stats(), time.Since(began)
	for i, w := range workers {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		if err := <-w.done; err != nil {
			t.Errorf("replica-%d's last exit: %v", i, err)
		}
	}
	noneTwice(t, ce.emu)
	if n := leaves.Load(); n > 0 {
		t.Errorf("%d LeaveGroup requests from static members, want none (KIP-345)", n)
	}
	accepted := float64(end.ByCode[0]-start.ByCode[0]) / span.Seconds()
	t.Logf("rolling restart of 3 static replicas over %v: %.2f accepted calls/s of %g (%.0f%%), %d answered 10023",
		span.Round(time.Millisecond), accepted, rate, 100*accepted/rate, end.ByCode[10023]-start.ByCode[10023])
	return accepted / rate
}

// TestStaticRollingRestart: three static replicas restarted in turn keep
// delivering (the others never stop for a rebalance), exit cleanly and
// deliver nothing twice. The bound is loose for a loaded CI host;
// BenchmarkRollingRestart measures.
func TestStaticRollingRestart(t *testing.T) {
	needBinary(t)
	if share := rollingRestart(t); share < 0.6 {
		t.Errorf("%.0f%% of the rate over the rollout, want at least 60%%", 100*share)
	}
}

// BenchmarkRollingRestart reports the part of the app's rate (5/s) three
// static replicas keep while restarted in turn.
//
//	go test -run '^$' -bench RollingRestart -benchtime 1x ./cmd/timbroadcast
func BenchmarkRollingRestart(b *testing.B) {
	var share float64
	for range b.N {
		share = rollingRestart(b)
	}
	b.ReportMetric(100*share, "%rate")
	b.ReportMetric(0, "ns/op")
}

// TestStaticFenced: a second process started with the same instance id
// fences the first, which exits 2 naming KAFKA_GROUP_INSTANCE_ID (two
// replicas share it) instead of rejoining in a loop; the second delivers
// the rest, nothing twice.
func TestStaticFenced(t *testing.T) {
	needBinary(t)
	ce := staticEnv(t, 150)
	env := withInstance(ce.env, "replica-0")
	first := startWorker(t, env)
	deadline := time.Now().Add(30 * time.Second)
	for ce.emu.Stats().Delivered < 5 {
		if time.Now().After(deadline) {
			t.Fatal("no delivery within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	second := startWorker(t, env)
	var err error
	select {
	case err = <-first.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the fenced process is still running 30s later; its log:\n%s", first.logs.String())
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Errorf("the fenced process exited with %v, want exit code 2", err)
	}
	if !strings.Contains(first.logs.String(), "KAFKA_GROUP_INSTANCE_ID") {
		t.Errorf("the fenced process's output does not name KAFKA_GROUP_INSTANCE_ID:\n%s", first.logs.String())
	}
	ce.waitCommitted(t, 2*time.Minute)
	ce.check(t)
	_ = second.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-second.done; err != nil {
		t.Errorf("the second process's exit: %v", err)
	}
}
