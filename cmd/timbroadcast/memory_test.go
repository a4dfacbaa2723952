package main_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// BenchmarkPeakRSS measures the real binary's peak resident memory (its
// VmHWM, read until it exits) delivering 90 events, and draining a 20,000
// event backlog in merge mode, at TIM_RATE=50 on three partitions. It
// reports the peak and its parts when delivery ended: anonymous memory
// (heap, stacks) and file-backed pages (the binary's code and data), and
// the CPU time the worker used in all:
//
//	go test -run '^$' -bench PeakRSS -benchtime 1x ./cmd/timbroadcast
//
// (Not the rusage maxrss of the child: Linux carries the parent's high
// water mark into a child started with vfork, as os/exec does, so that
// figure includes the test process.) TIMBROADCAST_BINARY=path measures
// another build. RSS_PROFILE_DIR=dir also saves heap profiles of each run
// there (HTTP_PPROF), taken at the first call and when all events are
// delivered, for go tool pprof. The lean/ cases measure the build with
// the tag lean (make build-lean).
func BenchmarkPeakRSS(b *testing.B) {
	for _, c := range []struct {
		name   string
		perKey int // events per key, six keys
		extra  map[string]string
	}{
		{"90-events", 15, map[string]string{}},
		{"20000-merge-backlog", 3334, map[string]string{"TIM_MERGE": "on"}},
		{"lean/90-events", 15, map[string]string{}},
		{"lean/20000-merge-backlog", 3334, map[string]string{"TIM_MERGE": "on"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			bin := binary
			if strings.HasPrefix(c.name, "lean/") {
				bin = leanBinary(b)
			}
			var peak, anon, file, cpu float64
			for range b.N {
				c.extra["TIM_RATE"] = "50"
				dir := os.Getenv("RSS_PROFILE_DIR")
				if dir != "" {
					c.extra["HTTP_PPROF"] = "on"
				}
				ce := newCrashEnv(b, 3, c.perKey, sendertest.Options{}, c.extra)
				w := startWorkerOf(b, bin, ce.env)
				addr := waitHTTPAddr(b, w)
				status := fmt.Sprintf("/proc/%d/status", w.cmd.Process.Pid)
				if _, err := os.Stat(status); err != nil {
					b.Skip("no /proc on this platform")
				}
				profile := func(name string) {
					if dir != "" {
						if err := os.WriteFile(dir+"/"+strings.ReplaceAll(c.name, "/", "-")+name, []byte(get(b, "http://"+addr+"/debug/pprof/heap")), 0o644); err != nil {
							b.Fatal(err)
						}
					}
				}
				deadline := time.Now().Add(5 * time.Minute)
				for first := true; len(deliveredTextsOf(ce.emu)) < len(ce.want); {
					if first && len(deliveredTextsOf(ce.emu)) > 0 {
						first = false
						profile(".first.heap")
					}
					if time.Now().After(deadline) {
						b.Fatalf("%d of %d events delivered after 5 minutes", len(deliveredTextsOf(ce.emu)), len(ce.want))
					}
					time.Sleep(20 * time.Millisecond)
				}
				profile(".heap")
				m := procStatus(status)
				anon, file = m["RssAnon"], m["RssFile"]
				_ = w.cmd.Process.Signal(syscall.SIGTERM)
				peak = m["VmHWM"]
				for exited := false; !exited; {
					select {
					case <-w.done:
						exited = true
					default:
						if v := procStatus(status)["VmHWM"]; v > peak {
							peak = v
						}
						time.Sleep(time.Millisecond)
					}
				}
				st := w.cmd.ProcessState
				cpu = float64(st.UserTime()+st.SystemTime()) / float64(time.Millisecond)
				b.Logf("%s: %d events, peak RSS %.1f MB (at the end: %.1f MB anonymous, %.1f MB file-backed), %.0f ms CPU",
					c.name, len(ce.want), peak, anon, file, cpu)
			}
			b.ReportMetric(cpu, "cpu-ms")
			b.ReportMetric(peak, "peak-MB")
			b.ReportMetric(anon, "anon-MB")
			b.ReportMetric(file, "file-MB")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// procStatus reads the memory lines of a /proc/PID/status file, in MB.
func procStatus(path string) map[string]float64 {
	out := map[string]float64{}
	st, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for _, l := range strings.Split(string(st), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[2] == "kB" {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				out[strings.TrimSuffix(f[0], ":")] = v / 1024
			}
		}
	}
	return out
}

// TestPprof: with HTTP_PPROF=on the worker serves Go's profiles next to
// /metrics (a heap profile go tool pprof reads, an index of the others on
// an unknown name); off, by default, it serves none.
func TestPprof(t *testing.T) {
	ce := newCrashEnv(t, 1, 1, sendertest.Options{}, map[string]string{"HTTP_PPROF": "on"})
	addr := waitHTTPAddr(t, startWorker(t, ce.env))
	heap := get(t, "http://"+addr+"/debug/pprof/heap")
	if len(heap) < 2 || heap[0] != 0x1f || heap[1] != 0x8b {
		t.Errorf("heap profile is not a gzipped profile: %q", heap[:min(len(heap), 20)])
	}
	if text := get(t, "http://"+addr+"/debug/pprof/goroutine?debug=1"); !strings.Contains(text, "goroutine profile") {
		t.Errorf("goroutine?debug=1 = %.80q, want the text profile", text)
	}
	if code, body := status(t, "http://"+addr+"/debug/pprof/nope"); code != 404 || !strings.Contains(body, "heap") {
		t.Errorf("unknown profile: %d %q, want 404 listing the known ones", code, body)
	}
	ce.env["HTTP_PPROF"] = "off"
	off := waitHTTPAddr(t, startWorker(t, ce.env))
	if code, _ := status(t, "http://"+off+"/debug/pprof/heap"); code != 404 {
		t.Errorf("HTTP_PPROF=off: /debug/pprof/heap answered %d, want 404", code)
	}
}
