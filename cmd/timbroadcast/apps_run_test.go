package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// appsEnv is several apps behind one emulated endpoint, an apps file
// naming them, and a run environment that uses it.
type appsEnv struct {
	kc    *consumertest.Cluster
	emu   *sendertest.Apps
	topic string
	dlq   string
	env   map[string]string
	ids   map[string]int
}

// newAppsEnv hosts apps (name -> SDKAppID) at rate calls/s each, with an
// apps file whose extra YAML per app comes from more (name -> lines);
// tune, if any, changes each app's emulator options.
func newAppsEnv(t testing.TB, partitions int, rate float64, names []string, more map[string]string, defaultApp string,
	tune ...func(*sendertest.Options)) *appsEnv {
	t.Helper()
	kc := consumertest.Start(t)
	ae := &appsEnv{kc: kc, ids: map[string]int{}, topic: kc.Topic(t, "apps", partitions), dlq: kc.Topic(t, "apps-dlq", 1)}
	dir := t.TempDir()
	var opts []sendertest.Options
	var file strings.Builder
	file.WriteString("apps:\n")
	for i, name := range names {
		id := 1400000101 + i
		ae.ids[name] = id
		k := "key-of-" + name
		o := sendertest.Options{AppID: id, Admin: admin, SecretKey: k, Rate: rate}
		for _, f := range tune {
			f(&o)
		}
		opts = append(opts, o)
		if err := os.WriteFile(filepath.Join(dir, name+".key"), []byte(k+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&file, "  - name: %s\n    sdkappid: %d\n    admin: %s\n    secret_key_file: %s\n    endpoint: ENDPOINT\n    rate: %g\n%s",
			name, id, admin, filepath.Join(dir, name+".key"), rate, more[name])
	}
	if defaultApp != "" {
		fmt.Fprintf(&file, "default_app: %s\n", defaultApp)
	}
	ae.emu = sendertest.NewApps(opts...)
	t.Cleanup(ae.emu.Close)
	path := filepath.Join(dir, "apps.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(file.String(), "ENDPOINT", ae.emu.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	ae.env = baseEnv(kc.Brokers, ae.topic, ae.dlq, "")
	for _, k := range []string{"TIM_SDKAPPID", "TIM_ADMIN", "TIM_SECRET_KEY", "TIM_ENDPOINT", "TIM_RATE"} {
		delete(ae.env, k)
	}
	ae.env["TIM_APPS_FILE"] = path
	return ae
}

// event is a text event for app (its header naming it, when app is set).
func event(key, text, app string) kafka.Message {
	v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{sender.Text(text)}})
	m := kafka.Message{Key: []byte(key), Value: v}
	if app != "" {
		m.Headers = []kafka.Header{{Key: wire.HeaderApp, Value: []byte(app)}}
	}
	return m
}

// texts are the texts app delivered, in order.
func (ae *appsEnv) texts(name string) []string {
	var out []string
	for _, d := range ae.emu.App(ae.ids[name]).Delivered() {
		for _, el := range d.Elements() {
			var c sender.TextElem
			_ = json.Unmarshal(el.MsgContent, &c)
			out = append(out, c.Text)
		}
	}
	return out
}

// waitRecorded waits until the delivered log holds every record of the
// named apps (by key prefix, as event keys them) as settled: a replica
// killed after that resends none of them. The emulator has a call as soon
// as it answers; the replica records it a moment later.
func (ae *appsEnv) waitRecorded(t *testing.T, names ...string) {
	t.Helper()
	ctx := context.Background()
	recs, err := ae.kc.ReadAll(ctx, ae.topic)
	if err != nil {
		t.Fatal(err)
	}
	type at struct {
		app       string
		partition int
	}
	last := map[at]int64{} // each app's last offset in each partition
	for _, m := range recs {
		for _, name := range names {
			if strings.HasPrefix(string(m.Key), name) {
				last[at{fmt.Sprint(ae.ids[name]), m.Partition}] = max(last[at{fmt.Sprint(ae.ids[name]), m.Partition}], m.Offset)
			}
		}
	}
	waitFor(t, 30*time.Second, "the delivered log records every call", func() bool {
		entries, err := ae.kc.ReadAll(ctx, ae.topic+".delivered")
		if err != nil {
			return false
		}
		next := map[at]wire.Watermark{}
		for _, e := range entries {
			if w, err := wire.ParseWatermark(e.Key, e.Value); err == nil && w.Topic == ae.topic {
				k := at{w.App, w.Partition}
				next[k] = next[k].Apply(w)
			}
		}
		for k, off := range last {
			if next[k].Next <= off {
				return false
			}
		}
		return true
	})
}

// checkOnceInOrder asserts app delivered want exactly once each, in key
// order (texts "<key>-<n>").
func (ae *appsEnv) checkOnceInOrder(t *testing.T, name string, want []string) {
	t.Helper()
	got := ae.texts(name)
	count, last := map[string]int{}, map[string]int{}
	for _, g := range got {
		count[g]++
		var k string
		var n int
		if _, err := fmt.Sscanf(strings.Replace(g, "-", " ", 1), "%s %d", &k, &n); err == nil {
			if p, ok := last[k]; ok && n < p {
				t.Errorf("app %s: %s after %s-%d", name, g, k, p)
			}
			last[k] = n
		}
	}
	for _, w := range want {
		if count[w] != 1 {
			t.Errorf("app %s: %s delivered %d times, want once", name, w, count[w])
		}
	}
	if len(got) != len(want) {
		t.Errorf("app %s: %d delivered, want %d", name, len(got), len(want))
	}
}

// TestSeveralAppsPausedAppHoldsNone: three apps share a topic of two
// partitions, served by two replicas; one app answers 10007 (broadcast
// switched off) for a while. The other two deliver all of theirs at
// their own rates meanwhile, nothing of the paused app is sent or
// dead-lettered; once it is switched on, every event reached its own app
// once, in order, and the group commits everything.
func TestSeveralAppsPausedAppHoldsNone(t *testing.T) {
	needBinary(t)
	t.Parallel()
	ae := newAppsEnv(t, 2, 5, []string{"live-a", "live-b", "live-c"}, nil, "")
	ae.emu.App(ae.ids["live-c"]).SetFaults(sendertest.Faults{FeatureOff: true})
	want := map[string][]string{}
	var msgs []kafka.Message
	const perKey = 15
	for i := range perKey {
		for ki, key := range []string{"k1", "k2"} {
			for ai, name := range []string{"live-a", "live-b", "live-c"} {
				text := fmt.Sprintf("%s%s-%d", name[len(name)-1:], key, i)
				named := name
				if ai == 1 && ki == 1 {
					named = fmt.Sprint(ae.ids[name]) // by SDKAppID
				}
				msgs = append(msgs, event(name+key, text, named))
				want[name] = append(want[name], text)
			}
		}
	}
	if err := ae.kc.Produce(context.Background(), ae.topic, msgs...); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ws, _ := startReplicas(t, ae.env, 2)
	waitFor(t, 60*time.Second, "apps a and b delivered", func() bool {
		return len(ae.texts("live-a")) >= len(want["live-a"]) && len(ae.texts("live-b")) >= len(want["live-b"])
	})
	took := time.Since(start)
	for _, name := range []string{"live-a", "live-b"} {
		rate := float64(len(want[name])) / took.Seconds()
		t.Logf("app %s: %d events in %s while live-c was switched off: %.2f calls/s of 5", name, len(want[name]), took.Round(time.Millisecond), rate)
		if n := ae.emu.App(ae.ids[name]).Stats().ByCode[sender.CodeFrequencyLimit]; n > 0 {
			t.Errorf("app %s answered 10023 %d times", name, n)
		}
	}
	if got := len(ae.texts("live-c")); got != 0 {
		t.Errorf("the switched-off app delivered %d", got)
	}
	if dl, _ := ae.kc.ReadAll(context.Background(), ae.dlq); len(dl) != 0 {
		t.Errorf("%d dead letters while an app was switched off, want none", len(dl))
	}
	// A restart of every replica while live-c is still off: what the
	// others delivered above the commit live-c holds is known again
	// (already_delivered), not sent again. Killed once the delivered log
	// has their last calls: killed before, a replica resends what it had
	// no time to record (the server dedupes it), which is not what this
	// test is about.
	ae.waitRecorded(t, "live-a", "live-b")
	for _, w := range ws {
		w.kill(t)
	}
	ws, _ = startReplicas(t, ae.env, 2)
	time.Sleep(3 * time.Second)
	for _, name := range []string{"live-a", "live-b"} {
		if st := ae.emu.App(ae.ids[name]).Stats(); st.Duplicates > 0 {
			t.Errorf("app %s after the restart: %d calls sent again (deduped)", name, st.Duplicates)
		}
	}
	ae.emu.App(ae.ids["live-c"]).SetFaults(sendertest.Faults{})
	waitFor(t, 90*time.Second, "app c delivered", func() bool { return len(ae.texts("live-c")) >= len(want["live-c"]) })
	ae.kc.WaitCommitted(t, ae.env["KAFKA_GROUP_ID"], ae.topic, 60*time.Second)
	for _, name := range []string{"live-a", "live-b", "live-c"} {
		ae.checkOnceInOrder(t, name, want[name])
	}
	_ = ws
}

// TestSeveralAppsRouting: a record's app by its topic, the mapping's
// field app, the header (by name and by SDKAppID) or the default; one
// naming an app the file lacks is dead-lettered unknown_app, one naming
// another app on a topic of its own app wrong_app.
func TestSeveralAppsRouting(t *testing.T) {
	needBinary(t)
	t.Parallel()
	kcOwn := ""
	ae := newAppsEnv(t, 1, 50, []string{"alpha", "beta"}, nil, "alpha")
	kcOwn = ae.kc.Topic(t, "beta-own", 1)
	// beta's own topic: rewrite the file with it.
	path := ae.env["TIM_APPS_FILE"]
	b, _ := os.ReadFile(path)
	body := strings.Replace(string(b), "    rate: 50\n", "    rate: 50\n    topics: ["+kcOwn+"]\n", 2)
	body = strings.Replace(body, "    rate: 50\n    topics: ["+kcOwn+"]\n", "    rate: 50\n", 1) // alpha keeps none
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	ae.env["TIM_MAP"] = `{MsgBody: .MsgBody} + (if .tenant then {app: .tenant} else {} end)`
	mapped := func(text, tenant string) kafka.Message {
		v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{sender.Text(text)}, "tenant": tenant})
		return kafka.Message{Key: []byte("m"), Value: v}
	}
	shared := []kafka.Message{
		event("h", "by-header-name", "beta"),
		event("h", "by-header-id", fmt.Sprint(ae.ids["beta"])),
		event("d", "by-default", ""),
		mapped("by-mapping", "beta"),
		event("u", "unknown", "gamma"),
	}
	if err := ae.kc.Produce(context.Background(), ae.topic, shared...); err != nil {
		t.Fatal(err)
	}
	own := []kafka.Message{event("o", "by-topic", ""), event("o", "wrong", "alpha"), event("o", "own-named", "beta")}
	if err := ae.kc.Produce(context.Background(), kcOwn, own...); err != nil {
		t.Fatal(err)
	}
	startWorker(t, ae.env)
	waitFor(t, 60*time.Second, "routed", func() bool {
		dl, _ := ae.kc.ReadAll(context.Background(), ae.dlq)
		return len(ae.texts("beta")) >= 5 && len(ae.texts("alpha")) >= 1 && len(dl) >= 2
	})
	ae.kc.WaitCommitted(t, ae.env["KAFKA_GROUP_ID"], ae.topic, 30*time.Second)
	ae.kc.WaitCommitted(t, ae.env["KAFKA_GROUP_ID"], kcOwn, 30*time.Second)
	got := map[string]bool{}
	for _, x := range ae.texts("beta") {
		got[x] = true
	}
	for _, w := range []string{"by-header-name", "by-header-id", "by-mapping", "by-topic", "own-named"} {
		if !got[w] {
			t.Errorf("beta lacks %q (has %v)", w, ae.texts("beta"))
		}
	}
	if a := ae.texts("alpha"); len(a) != 1 || a[0] != "by-default" {
		t.Errorf("alpha delivered %v, want [by-default]", a)
	}
	dl, _ := ae.kc.ReadAll(context.Background(), ae.dlq)
	reasons := map[string]string{}
	for _, m := range dl {
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		reasons[h[wire.HeaderDLQReason]] = h[wire.HeaderDLQInfo] + " app=" + h[wire.HeaderDLQApp]
	}
	if !strings.Contains(reasons[wire.ReasonUnknownApp], `"gamma"`) {
		t.Errorf("unknown_app dead letter: %q", reasons[wire.ReasonUnknownApp])
	}
	if !strings.Contains(reasons[wire.ReasonWrongApp], "belongs to app beta") || !strings.Contains(reasons[wire.ReasonWrongApp], "app=beta") {
		t.Errorf("wrong_app dead letter: %q", reasons[wire.ReasonWrongApp])
	}

	// status: a line per app, the paused one first.
	if out, errOut, code := runCmd(t, ae.env, "", "pause", "--app", "beta", "--reason", "maintenance"); code != 0 {
		t.Fatalf("pause: exit %d: %s %s", code, out, errOut)
	}
	out, errOut, code := runCmd(t, ae.env, "", "status", "--json")
	var st struct {
		Apps []struct {
			Name      string           `json:"name"`
			State     string           `json:"state"`
			Delivered map[string]int64 `json:"delivered"`
		} `json:"apps"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Apps) != 2 {
		t.Fatalf("status --json: exit %d, %v: %s %s", code, err, out, errOut)
	}
	if a := st.Apps[0]; a.Name != "beta" || a.State != "paused" || a.Delivered[kcOwn+"/0"] != 3 {
		t.Errorf("status: first app %+v, want beta paused, delivered up to 3 in its own topic", a)
	}
	if a := st.Apps[1]; a.Name != "alpha" || a.State != "delivering" {
		t.Errorf("status: second app %+v, want alpha delivering", a)
	}
	out, _, _ = runCmd(t, ae.env, "", "status", "--app", "alpha")
	if !strings.Contains(out, "alpha") || strings.Contains(out, "\nbeta  ") {
		t.Errorf("status --app alpha:\n%s", out)
	}
}
