package main_test

import (
	"encoding/json"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// BenchmarkPeakRSS measures the real binary's peak resident memory (the
// kernel's maxrss at exit) delivering 90 events, and draining a 20,000
// event backlog in merge mode, at TIM_RATE=50 on three partitions:
//
//	go test -run '^$' -bench PeakRSS -benchtime 1x ./cmd/timbroadcast
//
// RSS_PROFILE_DIR=dir also writes a heap profile of each run there
// (TIM_DEBUG_HEAP_PROFILE), for go tool pprof.
func BenchmarkPeakRSS(b *testing.B) {
	for _, c := range []struct {
		name   string
		perKey int // events per key, six keys
		extra  map[string]string
	}{
		{"90-events", 15, map[string]string{}},
		{"20000-merge-backlog", 3334, map[string]string{"TIM_MERGE": "on"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var mb float64
			for range b.N {
				c.extra["TIM_RATE"] = "50"
				if dir := os.Getenv("RSS_PROFILE_DIR"); dir != "" {
					c.extra["TIM_DEBUG_HEAP_PROFILE"] = dir + "/" + c.name + ".heap"
				}
				ce := newCrashEnv(b, 3, c.perKey, sendertest.Options{}, c.extra)
				w := startWorker(b, ce.env)
				deadline := time.Now().Add(5 * time.Minute)
				for delivered(ce) < len(ce.want) {
					if time.Now().After(deadline) {
						b.Fatalf("%d of %d events delivered after 5 minutes", delivered(ce), len(ce.want))
					}
					time.Sleep(50 * time.Millisecond)
				}
				_ = w.cmd.Process.Signal(syscall.SIGTERM)
				<-w.done
				ru, ok := w.cmd.ProcessState.SysUsage().(*syscall.Rusage)
				if !ok {
					b.Skip("no rusage on this platform")
				}
				mb = float64(ru.Maxrss) / 1024 // KiB on Linux
				b.Logf("%s: %d events, peak RSS %.1f MB", c.name, len(ce.want), mb)
			}
			b.ReportMetric(mb, "peak-MB")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// delivered counts the text elements the emulator received.
func delivered(ce *crashEnv) int {
	n := 0
	for _, d := range ce.emu.Delivered() {
		for _, el := range d.Elements() {
			var c sender.TextElem
			if json.Unmarshal(el.MsgContent, &c) == nil {
				n++
			}
		}
	}
	return n
}
