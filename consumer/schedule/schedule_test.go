package schedule

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// recorder is an Observer that keeps what it saw.
type recorder struct{ paused []bool }

func (r *recorder) Paused(p bool)          { r.paused = append(r.paused, p) }
func (r *recorder) Slot(string)            {}
func (r *recorder) Share(float64, float64) {}
func (r *recorder) Held(bool, Hold)        {}

// TestTurns: without a rate a turn leaves after the caller's own pacing;
// a turn answered with a pause closes the gate (the observer sees it) and
// the next turn is the one probe, after the backoff; a probe released
// without an answer lets another caller probe; a probe that is sent opens
// the gate; a turn ends once (a second end changes nothing).
func TestTurns(t *testing.T) {
	paced := 0
	obs := &recorder{}
	s, err := New(Config{PauseInitial: 20 * time.Millisecond, PauseMax: 40 * time.Millisecond, Observer: obs,
		Pace: func(context.Context) error { paced++; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if s.Paced() {
		t.Fatal("a schedule without a rate keeps slots")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p := Partition{Topic: "t", Partition: 0}
	turn, err := s.Take(ctx, p, false)
	if err != nil || turn.Probe() || paced != 1 || time.Since(turn.Leave) > time.Second {
		t.Fatalf("open gate: %+v, %v, paced %d; want a turn now, after the caller's pacing", turn, err, paced)
	}
	wait, started := turn.Paused(errors.New("10007"), 0)
	if !started || wait <= 0 {
		t.Fatalf("Paused = %v, %v; want the pause started with a wait", wait, started)
	}
	if again, started := turn.Paused(errors.New("again"), time.Hour); again != 0 || started {
		t.Error("a second end of a turn changed the gate")
	}
	if paused, _, cause := s.Paused(); !paused || cause.Error() != "10007" {
		t.Fatalf("after a pause: paused %v (%v)", paused, cause)
	}

	probe, err := s.Take(ctx, p, false)
	if err != nil || !probe.Probe() {
		t.Fatalf("the turn after the backoff = %+v, %v; want the probe", probe, err)
	}
	// While the probe is out nobody else gets a turn.
	short, stop := context.WithTimeout(ctx, 60*time.Millisecond)
	if _, err := s.Take(short, p, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second caller during the probe = %v, want to wait", err)
	}
	stop()
	probe.Released()
	probe.Sent() // ended already: must not open the gate
	if paused, _, _ := s.Paused(); !paused {
		t.Fatal("a released probe opened the gate")
	}
	second, err := s.Take(ctx, p, true)
	if err != nil || !second.Probe() {
		t.Fatalf("after a released probe: %+v, %v; want another probe", second, err)
	}
	if d := second.Sent(); d <= 0 {
		t.Errorf("the probe's answer opened the gate after %v, want the pause's length", d)
	}
	if paused, _, _ := s.Paused(); paused {
		t.Fatal("a sent probe did not open the gate")
	}
	if len(obs.paused) != 2 || !obs.paused[0] || obs.paused[1] {
		t.Errorf("the observer saw %v, want [true false]", obs.paused)
	}
}

// Apps that have nothing to send cost no goroutine and no timer: 200
// paced apps on one claims log run on the log's one granter, and none of
// them is in its heap while idle; a call of one app has it stepped, and
// it leaves the heap once the app is idle again.
func TestScheduleIdleAppsCostNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	l := NewLog(LogConfig{Store: newMemSlots(nil), Logger: zap.NewNop()})
	var runs sync.WaitGroup
	defer func() {
		cancel()
		runs.Wait()
	}()
	base := runtime.NumGoroutine()
	var scheds []*Schedule
	for i := range 200 {
		s, err := New(Config{App: uint64(1400000000 + i), Rate: 50, Log: l, Refresh: 200 * time.Millisecond,
			PauseInitial: 20 * time.Millisecond, PauseMax: 40 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		s.SetMine([]Partition{{Topic: "t", Partition: 0}})
		s.SetView([]Partition{{Topic: "t", Partition: 0}}, nil)
		scheds = append(scheds, s)
	}
	runs.Go(func() { l.Run(ctx) })
	for _, s := range scheds {
		runs.Go(func() { s.Run(ctx) }) // as the worker runs it: it returns at once
	}
	settled := func(what string, want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d goroutines, want at most %d (the log's reader, writer and granter, no loop per app)", what, runtime.NumGoroutine(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		for {
			l.granter.mu.Lock()
			due := len(l.granter.due)
			l.granter.mu.Unlock()
			if due == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d apps in the granter's heap, want none", what, due)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	settled("200 idle apps", base+4)
	turn, err := scheds[7].Take(ctx, Partition{Topic: "t", Partition: 0}, false)
	if err != nil {
		t.Fatal(err)
	}
	turn.Sent()
	settled("after one app's call", base+4)
}
