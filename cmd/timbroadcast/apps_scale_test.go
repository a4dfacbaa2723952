package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// TestHundredApps: one process serves 100 apps at 1 call/s each (the
// emulator hosts them behind one endpoint, each with its own key, limiter
// and dedupe), 10 events each over 6 partitions, routed by the mapping's
// field app. Every app gets its 10 calls within 1.5x the ideal 10 s of
// the first call, with no 10023, each event once, in order; the peak RSS
// stays under 128 MB. It logs the connections the emulator accepted: the
// apps share theirs, so they follow the calls at once (not asserted: on a
// loaded host all 100 apps' calls can be in flight together). The worker is the release build even under -race
// (releaseBinary): the race detector's cost is not the product's.
func TestHundredApps(t *testing.T) {
	needBinary(t)
	const apps, perApp = 100, 10
	names := make([]string, apps)
	for i := range names {
		names[i] = fmt.Sprintf("t%03d", i)
	}
	// The emulator's limit allows calls 0.9 s apart (LimiterSpacing): it
	// runs in this test process, under -race and beside other packages'
	// tests, and would otherwise see calls a period apart come nearer by
	// its own lateness. The pacing itself is checked from the deliveries'
	// times below (the median spacing of each app's calls).
	ae := newAppsEnv(t, 6, 1, names, nil, "", func(o *sendertest.Options) { o.Limiter = sendertest.LimiterSpacing })
	ae.env["TIM_MAP"] = `{MsgBody: .MsgBody, app: .tenant}`
	want := map[string][]string{}
	var msgs []kafka.Message
	for n := range perApp / 2 {
		for _, name := range names {
			for _, k := range []string{"a", "b"} {
				text := fmt.Sprintf("%s%s-%d", name, k, n)
				v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{sender.Text(text)}, "tenant": name})
				msgs = append(msgs, kafka.Message{Key: []byte(name + k), Value: v})
				want[name] = append(want[name], text)
			}
		}
	}
	if err := ae.kc.Produce(context.Background(), ae.topic, msgs...); err != nil {
		t.Fatal(err)
	}
	w := startWorkerOf(t, releaseBinary(t), ae.env)
	status := fmt.Sprintf("/proc/%d/status", w.cmd.Process.Pid)
	var peak float64
	delivered := func() int {
		n := 0
		for _, name := range names { // counters only: the emulator shares this process
			n += ae.emu.App(ae.ids[name]).Stats().Elements
		}
		return n
	}
	var first time.Time
	deadline := time.Now().Add(2 * time.Minute)
	for delivered() < apps*perApp {
		if first.IsZero() && delivered() > 0 {
			first = time.Now()
		}
		peak = max(peak, procStatus(status)["VmHWM"])
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events delivered after 2 minutes", delivered(), apps*perApp)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(first)
	peak = max(peak, procStatus(status)["VmHWM"])
	limited := 0
	var gaps []time.Duration
	for _, name := range names {
		limited += ae.emu.App(ae.ids[name]).Stats().ByCode[sender.CodeFrequencyLimit]
		ae.checkOnceInOrder(t, name, want[name])
		ds := ae.emu.App(ae.ids[name]).Delivered()
		for i := 1; i < len(ds); i++ {
			gaps = append(gaps, ds[i].At.Sub(ds[i-1].At))
		}
	}
	slices.Sort(gaps)
	if len(gaps) > 0 {
		median := gaps[len(gaps)/2]
		t.Logf("each app's calls: median %s apart (1%% over a second: the schedule's margin), least %s", median.Round(time.Millisecond),
			gaps[0].Round(time.Millisecond))
		if median < time.Second {
			t.Errorf("each app's calls a median %s apart, want at least a second (1 call/s)", median)
		}
	}
	t.Logf("%d apps x %d events: the last delivered %s after the first (ideal %ds at 1 call/s each); %d x 10023; peak RSS %.1f MB; %d connections to the endpoint",
		apps, perApp, took.Round(time.Millisecond), perApp-1, limited, peak, ae.emu.Conns())
	if took > time.Duration(perApp)*1500*time.Millisecond {
		t.Errorf("took %s, want at most 1.5x the ideal %ds", took.Round(time.Millisecond), perApp)
	}
	dumpLogs(t, w, "10023", 10)
	dumpLogs(t, w, "WARN", 10)
	switch {
	case limited > 0 && raceEnabled:
		// The emulator runs in this race-instrumented test process, beside
		// the other packages' tests: its own lateness can bring two calls
		// a period apart nearer than 0.9 s. The pacing is checked above.
		t.Logf("%d answers 10023 under -race (not asserted: the emulator's timing)", limited)
	case limited > 0:
		t.Errorf("%d answers 10023, want none", limited)
	}
	if _, err := os.Stat(status); err == nil && peak > 128 {
		t.Errorf("peak RSS %.1f MB, want at most 128", peak)
	}
}

func dumpLogs(t *testing.T, w *worker, substr string, n int) {
	for _, l := range strings.Split(w.logs.String(), "\n") {
		if strings.Contains(l, substr) && n > 0 {
			t.Log(l)
			n--
		}
	}
}

// BenchmarkIdleApps starts the worker (the release build) with 1 and
// with 1,000 apps configured and nothing to send, one process and three
// replicas, and reports, once they are in their group: the resident memory
// and goroutines (of one replica), CPU used over 5 idle seconds (per
// replica), the time from start to ready (all of them), and then
// produce-to-call of single events of one app (p50 and max of 10; with
// three replicas the app's calls go through the claims log). The
// differences per configured app are what an idle app costs:
//
//	go test -run '^$' -bench IdleApps -benchtime 1x ./cmd/timbroadcast
func BenchmarkIdleApps(b *testing.B) {
	for _, c := range []struct{ apps, replicas int }{{1, 1}, {1000, 1}, {1, 3}, {1000, 3}} {
		name := fmt.Sprintf("apps-%d", c.apps)
		if c.replicas > 1 {
			name += fmt.Sprintf("-replicas-%d", c.replicas)
		}
		b.Run(name, func(b *testing.B) {
			n := c.apps
			for range b.N {
				names := make([]string, n)
				for i := range names {
					names[i] = fmt.Sprintf("t%04d", i)
				}
				ae := newAppsEnv(b, 6, 1, names, nil, names[0])
				ae.env["HTTP_PPROF"] = "on"
				start := time.Now()
				var ws []*worker
				var addrs []string
				for range c.replicas {
					w := startWorkerOf(b, releaseBinary(b), ae.env)
					ws, addrs = append(ws, w), append(addrs, waitHTTPAddr(b, w))
				}
				for i, addr := range addrs {
					for {
						if code, _ := status(b, "http://"+addr+"/readyz"); code == 200 {
							break
						}
						if time.Since(start) > time.Minute {
							b.Fatalf("not ready after a minute:\n%s", ws[i].logs.String())
						}
						time.Sleep(10 * time.Millisecond)
					}
				}
				ready := time.Since(start)
				time.Sleep(2 * time.Second) // past the start
				cpu := func() (d time.Duration) {
					for _, w := range ws {
						d += procCPU(b, w.cmd.Process.Pid)
					}
					return d
				}
				cpu0 := cpu()
				time.Sleep(5 * time.Second)
				used := cpu() - cpu0
				rss := procStatus(fmt.Sprintf("/proc/%d/status", ws[0].cmd.Process.Pid))["VmRSS"]
				var goroutines int
				fmt.Sscanf(get(b, "http://"+addrs[0]+"/debug/pprof/goroutine?debug=1"), "goroutine profile: total %d", &goroutines)
				// Produce to call, idle: one event of one app at a time.
				var lat []time.Duration
				for i := range 10 {
					sent := time.Now()
					if err := ae.kc.Produce(context.Background(), ae.topic, event("k", fmt.Sprintf("idle-%d", i), names[n-1])); err != nil {
						b.Fatal(err)
					}
					app := ae.emu.App(ae.ids[names[n-1]])
					for app.Stats().Delivered <= i {
						if time.Since(sent) > 10*time.Second {
							b.Fatal("an idle event not delivered in 10 s")
						}
						time.Sleep(100 * time.Microsecond)
					}
					lat = append(lat, app.Delivered()[i].At.Sub(sent))
					time.Sleep(1100 * time.Millisecond) // its app's rate: 1 call/s
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "idle-p50-ms")
				b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "idle-max-ms")
				b.ReportMetric(rss, "rss-MB")
				b.ReportMetric(float64(goroutines), "goroutines")
				b.ReportMetric(used.Seconds()/5*100/float64(c.replicas), "idle-cpu-%")
				b.ReportMetric(ready.Seconds(), "s-to-ready")
			}
		})
	}
}

// procRead is how many bytes process pid has read (rchar: every read
// call's, its sockets' included).
func procRead(tb testing.TB, pid int) int64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		tb.Skip("no /proc/PID/io on this platform")
	}
	var n int64
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "rchar: "); ok {
			fmt.Sscan(v, &n)
		}
	}
	return n
}

// procCPU is the CPU time process pid has used (user and system).
func procCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Skip("no /proc on this platform")
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	var utime, stime int64
	fmt.Sscan(f[11], &utime)
	fmt.Sscan(f[12], &stime)
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ 100
}

// BenchmarkThousandApps: 1,000 apps at 1 call/s each (1,000 calls/s in
// all), 20 events each over 24 partitions routed by the mapping's app,
// served by three replicas (the release build) on the in-process broker,
// the emulator hosting the apps behind one endpoint. Over ten seconds of
// steady state it reports the calls/s reached, the replicas' CPU per call
// and what they allocated per call (bytes, objects, garbage collections),
// the broker's requests per call (by kind, logged), the 10023 answers
// (in the first seconds, while the group forms, and in the steady state),
// what each replica reads (bytes a second, and per call of the group),
// the time from start to the first call, and the machine's share the
// test process (broker and emulator) took, and logs the connections made
// to the API; then, every replica stopped and one started again over
// that history (the delivered log's entries of
// 1,000 apps over the 24 partitions, the claims log's), 1.5 s after the
// apps' last call, the time to its first call. BENCH_LIMITER picks the
// emulator's rate-limit model (sendertest.Limiters; default bucket);
// BENCH_KEYS=app keys each app's events by its name (one partition per
// app) instead of spreading them over the partitions; BENCH_APPS sets the
// number of apps (a machine less loaded shows the CPU a call costs
// without contention), BENCH_REPLICAS the number of replicas (1: a lone
// member, which paces by its own calls and claims nothing: the cost of a
// call without the claims log); BENCH_GOGC, BENCH_GOMAXPROCS and
// BENCH_GODEBUG set the replicas' GOGC, GOMAXPROCS and GODEBUG
// (memprofilerate=8192: an allocation profile fine enough to see a call's
// allocations), BENCH_COMMIT_INTERVAL their KAFKA_COMMIT_INTERVAL; RSS_PROFILE_DIR, if set, gets a CPU profile of each
// replica and what the first allocated before and after it:
//
//	go test -run '^$' -bench ThousandApps -benchtime 1x -v ./cmd/timbroadcast
func BenchmarkThousandApps(b *testing.B) {
	const perApp = 20
	apps, replicas := 1000, 3
	if n, err := strconv.Atoi(os.Getenv("BENCH_APPS")); err == nil && n > 0 {
		apps = n
	}
	if n, err := strconv.Atoi(os.Getenv("BENCH_REPLICAS")); err == nil && n > 0 {
		replicas = n
	}
	for range b.N {
		names := make([]string, apps)
		for i := range names {
			names[i] = fmt.Sprintf("t%04d", i)
		}
		var tune []func(*sendertest.Options)
		if os.Getenv("BENCH_LIMITER") != "" {
			tune = append(tune, func(o *sendertest.Options) { o.Limiter = os.Getenv("BENCH_LIMITER") })
		}
		ae := newAppsEnv(b, 24, 1, names, nil, "", tune...)
		ae.env["TIM_MAP"] = `{MsgBody: .MsgBody, app: .tenant}`
		// The session timeout of a deployment, not the tests' second: three
		// replicas and the broker on two cores under a full load miss a
		// heartbeat by more than a second now and then, and each such miss
		// is a rebalance in the measured window.
		ae.env["KAFKA_SESSION_TIMEOUT"], ae.env["KAFKA_HEARTBEAT_INTERVAL"], ae.env["KAFKA_REBALANCE_TIMEOUT"] = "10s", "500ms", "10s"
		if os.Getenv("RSS_PROFILE_DIR") != "" {
			ae.env["HTTP_PPROF"] = "on"
		}
		if g := os.Getenv("BENCH_GODEBUG"); g != "" {
			ae.env["GODEBUG"] = g
		}
		if g := os.Getenv("BENCH_GOGC"); g != "" {
			ae.env["GOGC"] = g
		}
		if g := os.Getenv("BENCH_COMMIT_INTERVAL"); g != "" {
			ae.env["KAFKA_COMMIT_INTERVAL"] = g
		}
		if g := os.Getenv("BENCH_GOMAXPROCS"); g != "" {
			ae.env["GOMAXPROCS"] = g
		}
		rc := consumertest.CountRequests(ae.kc)
		var msgs []kafka.Message
		for n := range perApp {
			for _, name := range names {
				v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{sender.Text(fmt.Sprintf("%s-%d", name, n))}, "tenant": name})
				key := fmt.Sprintf("%s-%d", name, n) // each app's events over the partitions
				if os.Getenv("BENCH_KEYS") == "app" {
					key = name // each app's events in one partition
				}
				msgs = append(msgs, kafka.Message{Key: []byte(key), Value: v})
			}
		}
		if err := ae.kc.Produce(context.Background(), ae.topic, msgs...); err != nil {
			b.Fatal(err)
		}
		delivered := func() int {
			n := 0
			for _, name := range names {
				n += ae.emu.App(ae.ids[name]).Stats().Delivered
			}
			return n
		}
		start := time.Now()
		var ws []*worker
		for range replicas {
			ws = append(ws, startWorkerOf(b, releaseBinary(b), ae.env))
		}
		for delivered() == 0 {
			if time.Since(start) > time.Minute {
				b.Fatal("no call in a minute")
			}
			time.Sleep(5 * time.Millisecond)
		}
		first := time.Since(start)
		time.Sleep(4 * time.Second) // the group settles, the backlog flows
		cpu := func() (d time.Duration) {
			for _, w := range ws {
				d += procCPU(b, w.cmd.Process.Pid)
			}
			return d
		}
		self := func() time.Duration { return procCPU(b, os.Getpid()) }
		limitedNow := func() int {
			n := 0
			for _, name := range names {
				n += ae.emu.App(ae.ids[name]).Stats().ByCode[sender.CodeFrequencyLimit]
			}
			return n
		}
		limitedAtStart := limitedNow()
		read := func() (n int64) {
			for _, w := range ws {
				n += procRead(b, w.cmd.Process.Pid)
			}
			return n
		}
		claimsEnd := func() int64 {
			ends, err := ae.kc.Ends(context.Background(), ae.topic+".slots")
			if err != nil {
				b.Fatal(err)
			}
			return ends[0]
		}
		// What the replicas allocated (the Go collector's counters on
		// /metrics: the garbage collector's work follows them), read
		// outside the CPU window.
		addrs := make([]string, len(ws))
		for i, w := range ws {
			addrs[i] = waitHTTPAddr(b, w)
		}
		goStats := func() (st [4]float64) {
			for _, addr := range addrs {
				for _, line := range strings.Split(get(b, "http://"+addr+"/metrics"), "\n") {
					for i, name := range []string{"go_memstats_alloc_bytes_total ", "go_memstats_mallocs_total ", "go_gc_duration_seconds_count ", "go_sched_gomaxprocs_threads "} {
						if v, ok := strings.CutPrefix(line, name); ok {
							f, _ := strconv.ParseFloat(v, 64)
							st[i] += f
						}
					}
				}
			}
			return st
		}
		mem0 := goStats()
		calls0, cpu0, self0, req0, read0, claims0, t0 := delivered(), cpu(), self(), rc.Snapshot(), read(), claimsEnd(), time.Now()
		if dir := os.Getenv("RSS_PROFILE_DIR"); dir != "" {
			// A CPU profile of each replica in the steady state
			// (thousand-apps-N.cpu: go tool pprof merges them), and what the
			// first allocated before and after it (go tool pprof
			// -diff_base).
			addr := waitHTTPAddr(b, ws[0])
			before := get(b, "http://"+addr+"/debug/pprof/allocs")
			var profiling sync.WaitGroup
			profs, errs := make([]string, len(ws)), make([]error, len(ws))
			for i, w := range ws {
				url := "http://" + waitHTTPAddr(b, w) + "/debug/pprof/profile?seconds=8"
				profiling.Go(func() {
					res, err := http.Get(url)
					if err == nil {
						var p []byte
						p, err = io.ReadAll(res.Body)
						_ = res.Body.Close()
						profs[i] = string(p)
					}
					errs[i] = err
				})
			}
			profiling.Wait()
			if err := errors.Join(errs...); err != nil {
				b.Fatal(err)
			}
			files := map[string]string{"thousand-apps-before.allocs": before, "thousand-apps.allocs": get(b, "http://"+addr+"/debug/pprof/allocs")}
			for i, p := range profs {
				files[fmt.Sprintf("thousand-apps-%d.cpu", i)] = p
			}
			for name, p := range files {
				if err := os.WriteFile(dir+"/"+name, []byte(p), 0o644); err != nil {
					b.Fatal(err)
				}
			}
		}
		time.Sleep(10*time.Second - time.Since(t0))
		calls, used, selfUsed, readBytes, claimRecords, window := delivered()-calls0, cpu()-cpu0, self()-self0, read()-read0, claimsEnd()-claims0, time.Since(t0)
		reqs, total := consumertest.Since(req0, rc.Snapshot())
		limitedSteady := limitedNow() - limitedAtStart
		mem := goStats()
		procsAt := [2]float64{mem0[3], mem[3]} // the replicas' Ps, in all, at the window's ends
		for i := range mem {
			mem[i] -= mem0[i]
		}
		b.Logf("%d calls in %s: %v broker requests (%d in all); %d connections to the API in all", calls, window.Round(time.Millisecond), reqs, total, ae.emu.Conns())

		// A restart with that history: every replica stopped once all is
		// delivered, one more event per app, one replica started.
		for delivered() < apps*perApp {
			if time.Since(start) > 3*time.Minute {
				b.Fatalf("%d of %d delivered after 3 minutes", delivered(), apps*perApp)
			}
			time.Sleep(20 * time.Millisecond)
		}
		ae.kc.WaitCommitted(b, ae.env["KAFKA_GROUP_ID"], ae.topic, time.Minute)
		// Stopped (SIGTERM: they leave the group), so the replica started
		// next waits for no session to time out: what it waits for is
		// reading the logs' history.
		for _, w := range ws {
			if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				b.Fatal(err)
			}
		}
		for _, w := range ws {
			select {
			case <-w.done:
			case <-time.After(30 * time.Second):
				b.Fatalf("a replica still running 30 s after SIGTERM\n%s", w.logs.String())
			}
		}
		msgs = msgs[:0]
		for _, name := range names {
			v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{sender.Text(name + "-again")}, "tenant": name})
			msgs = append(msgs, kafka.Message{Key: []byte(name + "-again"), Value: v})
		}
		if err := ae.kc.Produce(context.Background(), ae.topic, msgs...); err != nil {
			b.Fatal(err)
		}
		before := delivered()
		var lastCall time.Time // the apps' last call before the restart
		for _, name := range names {
			for _, d := range ae.emu.App(ae.ids[name]).Delivered() {
				if d.At.After(lastCall) {
					lastCall = d.At
				}
			}
		}
		// Started a period and a half after the apps' last call: what is
		// measured is reading the history, not an app's period since its
		// last call (the rate holds across a restart, logged below).
		time.Sleep(time.Until(lastCall.Add(1500 * time.Millisecond)))
		restart := time.Now()
		startWorkerOf(b, releaseBinary(b), ae.env)
		for delivered() == before {
			if time.Since(restart) > time.Minute {
				b.Fatal("no call in a minute after the restart")
			}
			time.Sleep(5 * time.Millisecond)
		}
		b.Logf("restarted %s after the apps' last call; first call %s after the restart",
			restart.Sub(lastCall).Round(time.Millisecond), time.Since(restart).Round(time.Millisecond))
		b.ReportMetric(time.Since(restart).Seconds(), "s-to-first-call-after-restart")
		b.ReportMetric(float64(calls)/window.Seconds(), "calls/s")
		b.ReportMetric(float64(used.Microseconds())/float64(max(calls, 1)), "cpu-µs/call")
		b.ReportMetric(float64(total)/float64(max(calls, 1)), "requests/call")
		// What the replicas allocated per call of the group (bytes and
		// objects), and their garbage collections in the window.
		b.ReportMetric(mem[0]/1024/float64(max(calls, 1)), "alloc-KB/call")
		b.ReportMetric(mem[1]/float64(max(calls, 1)), "allocs/call")
		b.ReportMetric(mem[2], "gc-cycles")
		b.ReportMetric(procsAt[0], "gomaxprocs-start")
		b.ReportMetric(procsAt[1], "gomaxprocs-end")
		// What each replica reads (the claims log's records of every app,
		// its partitions' records, the delivered log and the API's
		// answers), per second and per call made by the group.
		b.ReportMetric(float64(readBytes)/float64(len(ws))/window.Seconds()/1e6, "MB-read/s/replica")
		b.ReportMetric(float64(readBytes)/float64(len(ws))/float64(max(calls, 1)), "bytes-read/call/replica")
		// The claims log's records (claims, and calls recorded at their
		// departure), which every replica reads.
		b.ReportMetric(float64(claimRecords)/float64(max(calls, 1)), "claims-records/call")
		b.ReportMetric(float64(limitedAtStart), "10023s-start")
		b.ReportMetric(float64(limitedSteady), "10023s-steady")
		b.ReportMetric(first.Seconds(), "s-to-first-call")
		b.ReportMetric(selfUsed.Seconds()/window.Seconds()*100, "broker+emulator-cpu-%")
		b.ReportMetric(used.Seconds()/window.Seconds()*100, "replicas-cpu-%")
		// The replicas' CPU over the broker's and the emulator's, which do
		// about the same work per call whatever the build: a figure that
		// follows the build, not how fast this shared machine runs at the
		// moment (one run's CPU per call differs from the next by a tenth
		// or more; this ratio by a few per cent).
		b.ReportMetric(used.Seconds()/max(selfUsed.Seconds(), 1e-9), "replicas/broker+emulator-cpu")
	}
}
