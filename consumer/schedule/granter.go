package schedule

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// granter runs the grant loops of every app of a claims log on one
// goroutine (Log.Run), with one timer: an app is stepped (pacer.step) when
// it is poked (a caller waits, a record of it was read, a call left) or
// when the time it asked for comes. A thousand apps busy at once cost one
// goroutine and one timer, not a thousand of each, and the wake-ups of
// apps due together are one; an idle app is in neither the ready list nor
// the timer's heap.
type granter struct {
	local clockwork.Clock
	// idle bounds how long the granter sleeps with nothing due (0: until
	// poked).
	idle time.Duration

	mu sync.Mutex
	// ready are the apps poked since the last round, in order.
	ready []*pacer
	// due are the apps waiting for a time, earliest first.
	due  dueHeap
	wake chan struct{}
}

func newGranter(local clockwork.Clock) *granter {
	return &granter{local: local, wake: make(chan struct{}, 1)}
}

// poke has p stepped at the granter's next round.
func (g *granter) poke(p *pacer) {
	g.mu.Lock()
	if !p.queued {
		p.queued = true
		g.ready = append(g.ready, p)
	}
	g.mu.Unlock()
	wake(g.wake)
}

// run steps the apps as they are poked or due until ctx ends.
func (g *granter) run(ctx context.Context) {
	var (
		timer clockwork.Timer
		batch []*pacer
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		now := g.local.Now()
		g.mu.Lock()
		batch, g.ready = g.ready, batch[:0]
		for _, p := range batch {
			p.queued = false
			if p.dueIdx >= 0 {
				heap.Remove(&g.due, p.dueIdx) // stepped now; placed again after
			}
		}
		for len(g.due) > 0 && !g.due[0].dueAt.After(now) {
			batch = append(batch, heap.Pop(&g.due).(*pacer))
		}
		g.mu.Unlock()
		// Every app of the batch is out of the heap; only this loop puts
		// one back.
		for _, p := range batch {
			wait, active := p.step()
			if active {
				at := g.local.Now().Add(wait) // after the step: a long round must not bring it forward
				g.mu.Lock()
				p.dueAt = at
				heap.Push(&g.due, p)
				g.mu.Unlock()
			}
		}
		clear(batch)
		if ctx.Err() != nil {
			return
		}
		g.mu.Lock()
		poked, sleep, timed := len(g.ready) > 0, g.idle, g.idle > 0
		if len(g.due) > 0 {
			sleep, timed = max(g.due[0].dueAt.Sub(g.local.Now()), 0), true
			if g.idle > 0 {
				sleep = min(sleep, g.idle)
			}
		}
		g.mu.Unlock()
		if poked || timed && sleep == 0 {
			continue
		}
		var tc <-chan time.Time
		if timed {
			if timer == nil {
				timer = g.local.NewTimer(sleep)
			} else {
				timer.Reset(sleep)
			}
			tc = timer.Chan()
		}
		select {
		case <-ctx.Done():
			return
		case <-g.wake:
		case <-tc:
		}
		if timer != nil {
			timer.Stop() // not a sleeper while it steps (tests count the fake clock's)
		}
	}
}

// dueHeap orders apps by the time they asked to be stepped at.
type dueHeap []*pacer

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].dueAt.Before(h[j].dueAt) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].dueIdx, h[j].dueIdx = i, j
}
func (h *dueHeap) Push(x any) {
	p := x.(*pacer)
	p.dueIdx = len(*h)
	*h = append(*h, p)
}
func (h *dueHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	p.dueIdx = -1
	return p
}
