package main_test

import (
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// measureSpan is the steady-state window of the rate tests:
// REPLICA_MEASURE_SECONDS=30 measures longer (the figures in the README).
func measureSpan() time.Duration {
	if v, err := strconv.Atoi(os.Getenv("REPLICA_MEASURE_SECONDS")); err == nil && v > 0 {
		return time.Duration(v) * time.Second
	}
	return 6 * time.Second
}

// rateUnder runs n replicas of the real binary against an emulator that
// enforces rate calls/s with the given limiter model, and returns the
// accepted calls per second and the share answered 10023 over the steady
// state.
func rateUnder(t *testing.T, limiter string, replicas, partitions, keys int, rate float64) (float64, float64) {
	t.Helper()
	events := int(rate*measureSpan().Seconds())*2 + 200
	ce := replicaEnvWith(t, partitions, events, sendertest.Options{Rate: rate, Limiter: limiter}, keys,
		map[string]string{"TIM_RATE": strconv.FormatFloat(rate, 'f', -1, 64)})
	workers, addrs := startReplicas(t, ce.env, replicas)
	deadline := time.Now().Add(30 * time.Second)
	for settled := false; !settled; {
		total := 0.0
		for _, a := range addrs {
			total += metricValue(t, a, "timbroadcast_assigned_partitions")
		}
		settled = total == float64(partitions) && ce.emu.Stats().Delivered > 0
		if time.Now().After(deadline) {
			t.Fatal("the replicas did not settle")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // past the first schedule refreshes
	start := ce.emu.Stats()
	span := measureSpan()
	time.Sleep(span)
	end := ce.emu.Stats()
	for _, w := range workers {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		<-w.done
		if os.Getenv("RATE_DEBUG") != "" {
			t.Logf("worker log:\n%s", w.logs.String())
		}
	}
	noneTwice(t, ce.emu)
	calls := end.Calls - start.Calls
	accepted := end.ByCode[0] - start.ByCode[0]
	limited := end.ByCode[10023] - start.ByCode[10023]
	perSecond := float64(accepted) / span.Seconds()
	share := 0.0
	if calls > 0 {
		share = float64(limited) / float64(calls)
	}
	t.Logf("%s limiter, %d replica(s), %d partition(s), %d key(s): %d calls in %v, %.2f accepted/s of %g (%.0f%%), %d answered 10023 (%.1f%%)",
		limiter, replicas, partitions, keys, calls, span, perSecond, rate, 100*perSecond/rate, limited, 100*share)
	return perSecond, share
}

// TestReplicasUseTheWholeRate: three replicas on six partitions, every
// partition with a backlog, under every limiter model: at least 90% of
// the app's rate accepted and at most 1% answered 10023.
func TestReplicasUseTheWholeRate(t *testing.T) {
	for _, lim := range sendertest.Limiters {
		t.Run(lim, func(t *testing.T) {
			got, limited := rateUnder(t, lim, 3, 6, 60, 5)
			if got < 0.9*5 || limited > 0.01 {
				t.Errorf("%.2f calls/s accepted (want >= 4.5), %.1f%% answered 10023 (want <= 1%%)", got, 100*limited)
			}
		})
	}
}

// TestReplicasSkewedBacklog: the whole backlog on one of six partitions
// (one hot key): its owner gets every slot; at least 85% of the rate.
func TestReplicasSkewedBacklog(t *testing.T) {
	for _, lim := range sendertest.Limiters {
		t.Run(lim, func(t *testing.T) {
			got, limited := rateUnder(t, lim, 3, 6, 1, 5)
			if got < 0.85*5 || limited > 0.01 {
				t.Errorf("%.2f calls/s accepted (want >= 4.25), %.1f%% answered 10023", got, 100*limited)
			}
		})
	}
}
