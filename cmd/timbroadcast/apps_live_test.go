package main_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

// appsFileWithout returns the apps file text without the apps named
// drop.
func appsFileWithout(text string, drop ...string) string {
	parts := strings.Split(text, "  - name: ")
	out := parts[0]
	for _, p := range parts[1:] {
		name, _, _ := strings.Cut(p, "\n")
		keep := true
		for _, d := range drop {
			keep = keep && name != d
		}
		if keep {
			out += "  - name: " + p
		}
	}
	return out
}

// logsHold reports whether every worker's log holds s.
func logsHold(ws []*worker, s string) bool {
	for _, w := range ws {
		if !strings.Contains(w.logs.String(), s) {
			return false
		}
	}
	return true
}

// TestAppsFileChangedLive: two replicas read the apps file again while
// they run (TIM_APPS_RELOAD). An app added to it is served within 10 s by
// the same processes, its calls paced by both together through the claims
// log (at its rate, no 10023); a rate raised is followed; an app removed
// gets no call more (its records are dead-lettered unknown_app); a file
// that no longer parses keeps the apps as they were, says so on /readyz
// (200) and timbroadcast_apps_file_valid, and the apps go on delivering.
func TestAppsFileChangedLive(t *testing.T) {
	needBinary(t)
	t.Parallel()
	// The emulator lets every app make 20 calls/s; the file starts them at 5.
	ae := newAppsEnv(t, 2, 20, []string{"alpha", "beta", "gamma"}, nil, "")
	path := ae.env["TIM_APPS_FILE"]
	full, _ := os.ReadFile(path)
	at5 := strings.ReplaceAll(string(full), "    rate: 20\n", "    rate: 5\n")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path+".tmp", []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil { // as a ConfigMap update swaps it
			t.Fatal(err)
		}
	}
	write(appsFileWithout(at5, "gamma"))
	ae.env["TIM_APPS_RELOAD"] = "500ms"
	ws, addrs := startReplicas(t, ae.env, 2)
	produce := func(app string, n int, from int) []string {
		t.Helper()
		var msgs []kafka.Message
		var want []string
		for i := range n {
			key := fmt.Sprintf("%s%d", app, i%4)
			text := fmt.Sprintf("%s-%d", key, from+i/4)
			msgs = append(msgs, event(key, text, app))
			want = append(want, text)
		}
		if err := ae.kc.Produce(context.Background(), ae.topic, msgs...); err != nil {
			t.Fatal(err)
		}
		return want
	}
	wantAlpha := produce("alpha", 4, 0)
	waitFor(t, 30*time.Second, "alpha delivered", func() bool { return len(ae.texts("alpha")) == 4 })

	// Added: gamma, at 5 calls/s.
	added := time.Now()
	write(appsFileWithout(at5))
	waitFor(t, 10*time.Second, "gamma served by both replicas", func() bool { return logsHold(ws, "serving an app added to the apps file") })
	t.Logf("gamma served by both replicas %s after the file changed", time.Since(added).Round(time.Millisecond))
	start := time.Now()
	wantGamma := produce("gamma", 40, 0)
	waitFor(t, 60*time.Second, "gamma delivered", func() bool { return len(ae.texts("gamma")) >= 40 })
	rate := 39 / time.Since(start).Seconds()
	limited := ae.emu.App(ae.ids["gamma"]).Stats().ByCode[sender.CodeFrequencyLimit]
	t.Logf("gamma (added live): 40 calls at %.2f calls/s of 5, %d x 10023", rate, limited)
	if rate > 5.5 {
		t.Errorf("gamma at %.2f calls/s: the two replicas did not pace it together (5)", rate)
	}
	ae.checkOnceInOrder(t, "gamma", wantGamma)

	// A rate raised: alpha from 5 to 20.
	write(appsFileWithout(strings.Replace(at5, "    rate: 5\n", "    rate: 20\n", 1)))
	waitFor(t, 10*time.Second, "alpha's new rate read", func() bool { return logsHold(ws, "the app's rate changed in the apps file") })
	start = time.Now()
	wantAlpha = append(wantAlpha, produce("alpha", 60, 1)...)
	waitFor(t, 60*time.Second, "alpha delivered", func() bool { return len(ae.texts("alpha")) >= 64 })
	rate = 59 / time.Since(start).Seconds()
	t.Logf("alpha after its rate was raised to 20: %.2f calls/s", rate)
	if rate < 10 {
		t.Errorf("alpha at %.2f calls/s after its rate was raised from 5 to 20", rate)
	}
	ae.checkOnceInOrder(t, "alpha", wantAlpha)

	// Removed: beta.
	write(appsFileWithout(at5, "beta"))
	waitFor(t, 10*time.Second, "beta removed", func() bool { return logsHold(ws, "app removed from the apps file") })
	produce("beta", 1, 0)
	waitFor(t, 30*time.Second, "beta's record dead-lettered", func() bool {
		dl, _ := ae.kc.ReadAll(context.Background(), ae.dlq)
		return len(dl) == 1
	})
	dl, _ := ae.kc.ReadAll(context.Background(), ae.dlq)
	for _, h := range dl[0].Headers {
		if h.Key == wire.HeaderDLQReason && string(h.Value) != wire.ReasonUnknownApp {
			t.Errorf("beta's record dead-lettered %s, want %s", h.Value, wire.ReasonUnknownApp)
		}
	}
	if n := len(ae.texts("beta")); n != 0 {
		t.Errorf("beta, removed, delivered %d", n)
	}

	// A file that no longer parses: the apps as before go on.
	write("apps:\n  - name: alpha\n    sdkappid: [oops\n")
	waitFor(t, 10*time.Second, "the broken file noticed", func() bool {
		return logsHold(ws, "the apps file (TIM_APPS_FILE) cannot be read again")
	})
	for _, addr := range addrs {
		if v := metricValue(t, addr, "timbroadcast_apps_file_valid"); v != 0 {
			t.Errorf("timbroadcast_apps_file_valid is %v with a broken file, want 0", v)
		}
		code, body := status(t, "http://"+addr+"/readyz")
		if code != 200 || !strings.Contains(body, "the apps file cannot be read again") || !strings.Contains(body, "line") {
			t.Errorf("/readyz with a broken apps file: %d\n%s", code, body)
		}
	}
	wantGamma = append(wantGamma, produce("gamma", 4, 10)...)
	waitFor(t, 30*time.Second, "gamma delivers with the file broken", func() bool { return len(ae.texts("gamma")) >= 44 })
	ae.checkOnceInOrder(t, "gamma", wantGamma)
	write(appsFileWithout(at5, "beta"))
	waitFor(t, 10*time.Second, "the file read again", func() bool {
		for _, addr := range addrs {
			if metricValue(t, addr, "timbroadcast_apps_file_valid") != 1 {
				return false
			}
		}
		return true
	})
	ae.kc.WaitCommitted(t, ae.env["KAFKA_GROUP_ID"], ae.topic, 60*time.Second)
}

// TestUrgentLanePerApp: two apps at 2 calls/s each, both with a backlog
// of 60 events over 3 partitions; urgent events of alpha alone, on the
// urgent topic, overtake alpha's backlog (each sent within 1.5 s of being
// produced; behind the backlog it would wait 30 s), and beta keeps its
// whole rate meanwhile: one app's urgent lane is its own.
func TestUrgentLanePerApp(t *testing.T) {
	needBinary(t)
	t.Parallel()
	ae := newAppsEnv(t, 3, 2, []string{"alpha", "beta"}, nil, "")
	urgentTopic := ae.kc.Topic(t, "urgent", 1)
	ae.env["KAFKA_URGENT_TOPIC"] = urgentTopic
	var bulk []kafka.Message
	for i := range 60 {
		for _, app := range []string{"alpha", "beta"} {
			key := fmt.Sprintf("%s%d", app, i%6)
			bulk = append(bulk, event(key, fmt.Sprintf("%s-%d", key, i/6), app))
		}
	}
	if err := ae.kc.Produce(context.Background(), ae.topic, bulk...); err != nil {
		t.Fatal(err)
	}
	startWorker(t, ae.env)
	waitFor(t, 30*time.Second, "both backlogs flowing", func() bool { return len(ae.texts("alpha")) >= 2 && len(ae.texts("beta")) >= 2 })
	betaStart, start := len(ae.texts("beta")), time.Now()
	w := ae.kc.Writer(urgentTopic)
	w.BatchTimeout = time.Millisecond
	for i := range 4 {
		text := fmt.Sprintf("urgent-%d", i)
		produced := time.Now()
		if err := w.WriteMessages(context.Background(), event("u", text, "alpha")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "urgent event delivered", func() bool { return slices.Contains(ae.texts("alpha"), text) })
		took := time.Since(produced)
		t.Logf("alpha's urgent event %d sent %s after it was produced", i, took.Round(time.Millisecond))
		if took > 1500*time.Millisecond {
			t.Errorf("alpha's urgent event %d waited %s behind its app's backlog, want at most 1.5 s", i, took)
		}
		time.Sleep(time.Second)
	}
	beta := float64(len(ae.texts("beta"))-betaStart) / time.Since(start).Seconds()
	t.Logf("beta meanwhile: %.2f calls/s of 2", beta)
	if beta < 1.6 {
		t.Errorf("beta at %.2f calls/s while alpha's urgent events went: another app's urgent lane slowed it", beta)
	}
	for _, app := range []string{"alpha", "beta"} {
		if n := ae.emu.App(ae.ids[app]).Stats().ByCode[sender.CodeFrequencyLimit]; n > 0 {
			t.Errorf("app %s answered 10023 %d times", app, n)
		}
	}
}
