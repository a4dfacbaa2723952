package main

import (
	"context"
	"math"
	"os"
	"runtime"
	"time"

	"go.uber.org/zap"
)

// procs follows the process's CPU use with GOMAXPROCS, unless GOMAXPROCS
// is set: the worker is paced I/O, a call costing a fifth of a
// millisecond, so it mostly needs a fraction of one CPU, and every P it
// does not need costs it CPU of its own. Each hand-off between goroutines
// (a grant, an answer read, a commit) wakes an idle P's thread, which
// spins looking for work and sleeps again; at a thousand calls a second
// over three replicas that was a sixth of the replicas' CPU
// (BenchmarkThousandApps with GOMAXPROCS=1 against the default). So the
// worker starts with the runtime's default (the CPUs, or the container's
// limit: the ceiling), goes down one P at a time while it uses less than
// procsDown of the Ps it would keep, and up at once to what it uses over
// procsUp of a P: a busy worker has every P it can use within a second.
type procs struct {
	ceiling  int
	interval time.Duration
	cpu      func() (time.Duration, bool) // the process's CPU time so far
	set      func(int)
	log      *zap.Logger
}

// Where procs moves: up once a look finds the Ps busier than procsUp
// each, down after procsCalm looks in a row under procsDown each of one
// P fewer.
const (
	procsUp   = 0.6
	procsDown = 0.3
	procsCalm = 5
)

// newProcs returns the governor of this process, or nil when GOMAXPROCS
// is set (the operator's choice stands) or the system gives no CPU time.
func newProcs(log *zap.Logger) *procs {
	if os.Getenv("GOMAXPROCS") != "" {
		return nil
	}
	if _, ok := processCPU(); !ok {
		return nil
	}
	return &procs{ceiling: runtime.GOMAXPROCS(0), interval: time.Second, cpu: processCPU,
		set: func(n int) { runtime.GOMAXPROCS(n) }, log: log}
}

// run looks every interval until ctx ends.
func (p *procs) run(ctx context.Context) {
	if p == nil || p.ceiling <= 1 {
		return
	}
	n, calm := p.ceiling, 0
	t := time.NewTicker(p.interval)
	defer t.Stop()
	last, _ := p.cpu()
	lastAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			used, ok := p.cpu()
			if !ok || !now.After(lastAt) {
				continue
			}
			cores := float64(used-last) / float64(now.Sub(lastAt))
			last, lastAt = used, now
			next, c := nextProcs(n, p.ceiling, cores, calm)
			calm = c
			if next != n {
				p.log.Debug("GOMAXPROCS follows the CPU used", zap.Int("from", n), zap.Int("to", next), zap.Float64("cores_used", cores))
				n = next
				p.set(n)
			}
		}
	}
}

// nextProcs is the GOMAXPROCS after a look that found cores used at n
// Ps, with calm looks before it under the lower mark; and the calm looks
// counted now.
func nextProcs(n, ceiling int, cores float64, calm int) (int, int) {
	if cores > procsUp*float64(n) && n < ceiling {
		return min(ceiling, int(math.Ceil(cores/procsUp))), 0
	}
	if n > 1 && cores < procsDown*float64(n-1) {
		if calm+1 >= procsCalm {
			return n - 1, 0
		}
		return n, calm + 1
	}
	return n, 0
}
