package main

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestNextProcs: up at once to what the CPU used needs, down one P at a
// time after procsCalm calm looks, never past the ceiling or under one.
func TestNextProcs(t *testing.T) {
	for _, tc := range []struct {
		n, ceiling int
		cores      float64
		calm       int
		want, c    int
	}{
		{4, 4, 0.05, 0, 4, 1},             // calm, counted
		{4, 4, 0.05, procsCalm - 1, 3, 0}, // calm long enough: one fewer
		{1, 4, 0.05, 3, 1, 0},             // one is the floor
		{1, 4, 0.9, 0, 2, 0},              // busy: up
		{1, 4, 1.0, 0, 2, 0},              // a full P: two
		{2, 8, 1.9, 2, 4, 0},              // up to what it uses, the calm forgotten
		{2, 2, 1.9, 0, 2, 0},              // the ceiling holds
		{2, 4, 0.5, 3, 2, 0},              // between the marks: stays, calm reset
		{3, 4, 0.5, 4, 2, 0},              // 0.5 < 0.3*2: down
	} {
		if got, c := nextProcs(tc.n, tc.ceiling, tc.cores, tc.calm); got != tc.want || c != tc.c {
			t.Errorf("nextProcs(%d, %d, %.2f, %d) = %d, %d; want %d, %d", tc.n, tc.ceiling, tc.cores, tc.calm, got, c, tc.want, tc.c)
		}
	}
}

// TestProcsFollowsCPU: the loop, on a CPU clock of its own, goes down to
// one P while idle, up when the process gets busy, and stops with its
// context.
func TestProcsFollowsCPU(t *testing.T) {
	const interval = 5 * time.Millisecond
	var busy atomic.Bool
	var mu sync.Mutex
	var cpu time.Duration
	last := time.Now()
	var sets []int
	setCh := make(chan int, 100)
	p := &procs{ceiling: 4, interval: interval, log: zap.NewNop(),
		cpu: func() (time.Duration, bool) {
			mu.Lock()
			defer mu.Unlock()
			now := time.Now()
			if busy.Load() { // three cores' worth
				cpu += 3 * now.Sub(last)
			} else { // a twentieth of one
				cpu += now.Sub(last) / 20
			}
			last = now
			return cpu, true
		},
		set: func(n int) { sets = append(sets, n); setCh <- n },
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.run(ctx) })
	wait := func(want int) {
		t.Helper()
		for {
			select {
			case n := <-setCh:
				if n == want {
					return
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("GOMAXPROCS never set to %d", want)
			}
		}
	}
	wait(1)
	busy.Store(true)
	wait(4)
	cancel()
	wg.Wait()
	for i := 1; i < len(sets); i++ {
		if sets[i] < sets[i-1]-1 {
			t.Fatalf("went down by more than one P at a time: %v", sets)
		}
	}
	if sets[0] != 3 {
		t.Fatalf("sets %v: the first step from the ceiling of 4 must be to 3", sets)
	}
}

// TestProcsLeavesGOMAXPROCS: a GOMAXPROCS set by the operator stands.
func TestProcsLeavesGOMAXPROCS(t *testing.T) {
	t.Setenv("GOMAXPROCS", "2")
	if p := newProcs(zap.NewNop()); p != nil {
		t.Fatal("the governor runs though GOMAXPROCS is set")
	}
	t.Setenv("GOMAXPROCS", "")
	if p := newProcs(zap.NewNop()); p == nil {
		t.Fatal("no governor without GOMAXPROCS")
	}
}
