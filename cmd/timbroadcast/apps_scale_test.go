package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/sender"
)

// TestHundredApps: one process serves 100 apps at 1 call/s each (the
// emulator hosts them behind one endpoint, each with its own key, limiter
// and dedupe), 10 events each over 6 partitions, routed by the mapping's
// field app. Every app gets its 10 calls within 1.5x the ideal 10 s of
// the first call, with no 10023, each event once, in order; the peak RSS
// stays under 128 MB. The worker is the release build even under -race
// (releaseBinary): the race detector's cost is not the product's.
func TestHundredApps(t *testing.T) {
	needBinary(t)
	const apps, perApp = 100, 10
	names := make([]string, apps)
	for i := range names {
		names[i] = fmt.Sprintf("t%03d", i)
	}
	ae := newAppsEnv(t, 6, 1, names, nil, "")
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
	for _, name := range names {
		limited += ae.emu.App(ae.ids[name]).Stats().ByCode[sender.CodeFrequencyLimit]
		ae.checkOnceInOrder(t, name, want[name])
	}
	t.Logf("%d apps x %d events: the last delivered %s after the first (ideal %ds at 1 call/s each); %d x 10023; peak RSS %.1f MB",
		apps, perApp, took.Round(time.Millisecond), perApp-1, limited, peak)
	if took > time.Duration(perApp)*1500*time.Millisecond {
		t.Errorf("took %s, want at most 1.5x the ideal %ds", took.Round(time.Millisecond), perApp)
	}
	dumpLogs(t, w, "10023", 10)
	dumpLogs(t, w, "WARN", 10)
	if limited > 0 {
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
