package schedule

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestGateOpenLetsEveryoneThrough(t *testing.T) {
	g := newGate(time.Millisecond, time.Millisecond, nil)
	for range 3 {
		probe, err := g.acquire(context.Background())
		if err != nil || probe {
			t.Fatalf("acquire on an open gate = %v, %v; want no probe, no error", probe, err)
		}
	}
}

func TestGatePauseProbeAndResume(t *testing.T) {
	var mu sync.Mutex
	var changes []bool
	g := newGate(20*time.Millisecond, 40*time.Millisecond, func(p bool) {
		mu.Lock()
		changes = append(changes, p)
		mu.Unlock()
	})
	cause := errors.New("10007 no permission")
	wait, started := g.pause(cause, 0)
	if !started || wait <= 0 {
		t.Fatalf("first pause: started %v, wait %v", started, wait)
	}
	if _, started := g.pause(cause, 0); started {
		t.Error("second pause reported as a start")
	}
	if paused, _, got := g.state(); !paused || got != cause {
		t.Fatalf("state = %v, %v; want paused by %v", paused, got, cause)
	}

	// Before the next probe is due nobody gets through.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if _, err := g.acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire during the backoff = %v, want the context's deadline", err)
	}

	// Once it is due, exactly one caller probes; the others wait for it.
	probe, err := g.acquire(context.Background())
	if err != nil || !probe {
		t.Fatalf("acquire after the backoff = %v, %v; want the probe", probe, err)
	}
	waiter := make(chan bool, 1)
	go func() {
		p, _ := g.acquire(context.Background())
		waiter <- p
	}()
	select {
	case <-waiter:
		t.Fatal("a second caller got through while the probe was out")
	case <-time.After(60 * time.Millisecond):
	}
	if d := g.probeDone(true); d <= 0 {
		t.Errorf("probeDone(true) reported paused-for %v", d)
	}
	select {
	case p := <-waiter:
		if p {
			t.Error("the waiter became a probe after the gate opened")
		}
	case <-time.After(time.Second):
		t.Fatal("the waiter was not let through when the gate opened")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 2 || !changes[0] || changes[1] {
		t.Errorf("onPause calls %v, want [true false]", changes)
	}
}

func TestGateFailedProbeLetsAnotherProbe(t *testing.T) {
	g := newGate(time.Millisecond, time.Millisecond, nil)
	g.pause(errors.New("paused"), 0)
	time.Sleep(2 * time.Millisecond)
	if probe, _ := g.acquire(context.Background()); !probe {
		t.Fatal("no probe")
	}
	g.probeDone(false) // the probe ended without an answer
	if paused, _, _ := g.state(); !paused {
		t.Fatal("a probe without an answer opened the gate")
	}
	probe, err := g.acquire(context.Background())
	if err != nil || !probe {
		t.Fatalf("next acquire = %v, %v; want another probe", probe, err)
	}
}

// With a claims log the pause is the group's: a member's pause and resume
// are published; another member's pause record closes the gate and leaves
// the probing to its writer until a takeover interval past the probe it
// announced; its resume record opens the gate.
func TestGateGroupPause(t *testing.T) {
	var mu sync.Mutex
	var published []claimRecord
	g := newGate(20*time.Millisecond, 40*time.Millisecond, nil)
	g.member, g.takeover = "me", 30*time.Millisecond
	g.publish = func(r claimRecord) {
		mu.Lock()
		published = append(published, r)
		mu.Unlock()
	}

	// Another member was paused and probes in 50 ms: nobody here gets
	// through before that plus the takeover interval.
	start := time.Now()
	g.remote(claimRecord{By: "other", Pause: &pauseRecord{Code: 10007, Info: "off", Next: start.Add(50 * time.Millisecond).UnixNano()}})
	if paused, _, cause := g.state(); !paused || cause == nil {
		t.Fatal("another member's pause record did not close the gate")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
	_, err := g.acquire(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire while the other member probes = %v, want to wait", err)
	}
	// It fell silent: this member takes the probing over.
	probe, err := g.acquire(context.Background())
	if err != nil || !probe {
		t.Fatalf("acquire past the takeover = %v, %v; want the probe", probe, err)
	}
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Errorf("took the probing over after %v, want after the announced probe plus the takeover (80ms)", d)
	}
	// Its probe clears: the resume is published for the group.
	g.probeDone(true)
	mu.Lock()
	if len(published) != 1 || !published[0].Resume || published[0].By != "me" {
		t.Errorf("published %+v, want one resume by me", published)
	}
	mu.Unlock()

	// This member's own pause is published with its next probe; another
	// member's resume opens the gate.
	g.pause(errors.New("paused"), 0)
	mu.Lock()
	last := published[len(published)-1]
	mu.Unlock()
	if last.Pause == nil || last.By != "me" || last.Pause.Next <= time.Now().UnixNano() {
		t.Errorf("published %+v, want a pause by me with its next probe ahead", last)
	}
	g.remote(claimRecord{By: "other", Resume: true})
	if paused, _, _ := g.state(); paused {
		t.Error("another member's resume record did not open the gate")
	}
}

// An operator's hold with an end (pause --for) closes the gate, with no
// probe, until its time is up; one without waits for its release.
func TestGateHoldEnds(t *testing.T) {
	g := newGate(time.Millisecond, 10*time.Millisecond, nil)
	var seen []bool
	g.onHold = func(h *holdState) { seen = append(seen, h != nil) }
	start := time.Now()
	g.setHold(&holdState{By: "alice", Since: start.UnixNano(), Until: start.Add(150 * time.Millisecond).UnixNano()})
	if !g.closed() {
		t.Fatal("a hold did not close the gate")
	}
	probe, err := g.acquire(context.Background())
	if err != nil || probe {
		t.Fatalf("acquire = %v, %v; want the gate open after the hold, no probe", probe, err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("the gate opened %v into a hold of 150ms", d)
	}
	g.setHold(&holdState{By: "bob", Since: time.Now().UnixNano()})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := g.acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("acquire during a hold until resumed = %v, want to wait", err)
	}
	g.setHold(nil)
	if g.closed() {
		t.Error("a released hold kept the gate closed")
	}
	if len(seen) != 3 || !seen[0] || !seen[1] || seen[2] {
		t.Errorf("onHold saw %v, want [true true false]", seen)
	}
}
