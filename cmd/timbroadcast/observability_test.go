package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// dashboardMetrics returns the metrics the Grafana dashboard queries:
// those of several apps (timbroadcast_app_*, with an apps file) and the
// others.
func dashboardMetrics(t *testing.T) (apps, others map[string]bool) {
	t.Helper()
	b, err := os.ReadFile("../../deploy/grafana/timbroadcast.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	apps, others = map[string]bool{}, map[string]bool{}
	name := regexp.MustCompile(`timbroadcast_[a-z0-9_]+`)
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, n := range name.FindAllString(tg.Expr, -1) {
				if strings.HasPrefix(n, "timbroadcast_app_") {
					apps[n] = true
				} else {
					others[n] = true
				}
			}
		}
	}
	return apps, others
}

// checkMetricsExist reports each of names that the metrics page lacks.
func checkMetricsExist(t *testing.T, metrics string, names map[string]bool) {
	t.Helper()
	for n := range names {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(n) + `[{ ]`).MatchString(metrics) {
			t.Errorf("the dashboard queries %s, which the worker's /metrics lacks", n)
		}
	}
}

// TestDashboardMetricsExist: every metric the Grafana dashboard queries is
// in /metrics of a running worker that delivered, dead-lettered, wrote
// receipts and had a commit refused (the per-app ones: in
// TestAppPausedAlertInPrometheus, whose worker has an apps file).
func TestDashboardMetricsExist(t *testing.T) {
	needBinary(t)
	_, queried := dashboardMetrics(t)
	if len(queried) < 15 {
		t.Fatalf("the dashboard queries %d metrics, want the lot", len(queried))
	}

	ce := newCrashEnv(t, 3, 5, sendertest.Options{}, nil)
	ce.env["KAFKA_RECEIPT_TOPIC"] = ce.kc.Topic(t, "receipts", 1)
	if err := ce.kc.Produce(context.Background(), ce.topic, kafka.Message{Key: []byte("x"), Value: []byte("not json")}); err != nil {
		t.Fatal(err)
	}
	var refuse atomic.Bool
	var refused atomic.Int64
	refuseCommits(ce.kc, 30, &refuse, &refused)
	refuse.Store(true)
	w := startWorker(t, ce.env)
	addr := waitHTTPAddr(t, w)
	for refused.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	refuse.Store(false)
	ce.waitCommitted(t, time.Minute)
	checkMetricsExist(t, get(t, "http://"+addr+"/metrics"), queried)
}

// freePort returns a free loopback port.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// promAlert is an alert as Prometheus's API lists it.
type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

// alertsNamed returns the alerts called name in Prometheus at base.
func alertsNamed(base, name string) []promAlert {
	resp, err := http.Get(base + "/api/v1/alerts")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil
	}
	var out []promAlert
	for _, a := range body.Data.Alerts {
		if a.Labels["alertname"] == name {
			out = append(out, a)
		}
	}
	return out
}

// alertState returns the state of alert name in Prometheus at base
// ("firing", "pending" or "" when inactive).
func alertState(t *testing.T, base, name string) string {
	t.Helper()
	if as := alertsNamed(base, name); len(as) > 0 {
		return as[0].State
	}
	return ""
}

// startPrometheus runs a real Prometheus (Debian's prometheus package;
// .ci/run installs it) scraping the worker at addr every second with
// deploy/prometheus/alerts.yaml, its `for` durations cut to 2 s. It
// returns its base URL and its log; it skips the test when Prometheus is
// not installed.
func startPrometheus(t *testing.T, addr string) (string, *consumertest.SyncBuffer) {
	t.Helper()
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (apt-get install prometheus; .ci/run does): the alert rules are not run against a real Prometheus here")
	}
	dir := t.TempDir()
	rules, err := os.ReadFile("../../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	short := regexp.MustCompile(`(?m)^(\s+for:) \d+m$`).ReplaceAll(rules, []byte("$1 2s"))
	if err := os.WriteFile(filepath.Join(dir, "alerts.yaml"), short, 0o644); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [alerts.yaml]
scrape_configs:
  - job_name: timbroadcast
    static_configs: [{targets: ["%s"]}]
`, addr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	logs := &consumertest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	return fmt.Sprintf("http://127.0.0.1:%d", port), logs
}

// TestPausedAlertInPrometheus runs a real Prometheus (Debian's prometheus
// package; .ci/run installs it) scraping a real worker every second with
// deploy/prometheus/alerts.yaml (its `for` durations cut to 2 s): through an
// app-wide pause (10007), TimbroadcastPaused fires; when the pause ends,
// it clears.
func TestPausedAlertInPrometheus(t *testing.T) {
	needBinary(t)
	if _, err := exec.LookPath("prometheus"); err != nil {
		t.Skip("prometheus not installed (apt-get install prometheus; .ci/run does): the alert rules are not run against a real Prometheus here")
	}
	ce := newCrashEnv(t, 1, 2, sendertest.Options{}, nil)
	w := startWorker(t, ce.env)
	addr := waitHTTPAddr(t, w)
	ce.waitCommitted(t, time.Minute)
	base, logs := startPrometheus(t, addr)
	waitState := func(want func(string) bool, what string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			if want(alertState(t, base, "TimbroadcastPaused")) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("TimbroadcastPaused never %s; prometheus log:\n%s", what, logs.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	time.Sleep(3 * time.Second) // a few scrapes of a healthy worker
	if s := alertState(t, base, "TimbroadcastPaused"); s != "" {
		t.Fatalf("TimbroadcastPaused is %s before any pause", s)
	}
	ce.emu.SetFaults(sendertest.Faults{FeatureOff: true})
	if err := ce.kc.Produce(context.Background(), ce.topic, kafka.Message{Key: []byte("a"),
		Value: []byte(`{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"during the pause"}}]}`)}); err != nil {
		t.Fatal(err)
	}
	waitState(func(s string) bool { return s == "firing" }, "fired")
	ce.emu.SetFaults(sendertest.Faults{})
	waitState(func(s string) bool { return s == "" }, "cleared")
	ce.waitCommitted(t, time.Minute)
}

// TestAppPausedAlertInPrometheus: two apps, one of them switched off
// (10007). In a real Prometheus scraping the worker, TimbroadcastAppPaused
// fires naming that app, and only it, while the other delivers; the
// worker's /metrics holds every per-app metric the dashboard queries (the
// switched-off app's oldest waiting record among them); once the app is
// switched on, the alert clears and nothing of it waits any more.
func TestAppPausedAlertInPrometheus(t *testing.T) {
	needBinary(t)
	if _, err := exec.LookPath("prometheus"); err != nil {
		t.Skip("prometheus not installed (apt-get install prometheus; .ci/run does): the alert rules are not run against a real Prometheus here")
	}
	ae := newAppsEnv(t, 1, 50, []string{"live-a", "live-b"}, nil, "live-a")
	ae.emu.App(ae.ids["live-b"]).SetFaults(sendertest.Faults{FeatureOff: true})
	w := startWorker(t, ae.env)
	addr := waitHTTPAddr(t, w)
	base, logs := startPrometheus(t, addr)
	if err := ae.kc.Produce(context.Background(), ae.topic, event("b", "b-0", "live-b"), event("a", "a-0", "live-a")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "live-a delivered", func() bool { return len(ae.texts("live-a")) == 1 })

	apps, _ := dashboardMetrics(t)
	if len(apps) < 3 {
		t.Fatalf("the dashboard queries %d per-app metrics, want its Apps row", len(apps))
	}
	// live-a's record settles (delivered log, commit) a moment after the
	// emulator has it: then its series goes, live-b's stays.
	var metrics string
	deadline := time.Now().Add(10 * time.Second)
	for {
		metrics = get(t, "http://"+addr+"/metrics")
		if !strings.Contains(metrics, `timbroadcast_app_oldest_waiting_timestamp_seconds{app="live-a"}`) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkMetricsExist(t, metrics, apps)
	if !strings.Contains(metrics, `timbroadcast_app_oldest_waiting_timestamp_seconds{app="live-b"}`) ||
		strings.Contains(metrics, `timbroadcast_app_oldest_waiting_timestamp_seconds{app="live-a"}`) {
		t.Errorf("oldest waiting record: want a series for live-b (switched off) and none for live-a (settled):\n%s",
			grepLines(metrics, "oldest_waiting"))
	}

	deadline = time.Now().Add(60 * time.Second)
	for {
		var firing []string
		for _, a := range alertsNamed(base, "TimbroadcastAppPaused") {
			if a.State == "firing" {
				firing = append(firing, a.Labels["app"])
			}
		}
		if len(firing) == 1 && firing[0] == "live-b" {
			break
		}
		if len(firing) > 0 && (len(firing) > 1 || firing[0] != "live-b") {
			t.Fatalf("TimbroadcastAppPaused fires for %v, want live-b alone", firing)
		}
		if time.Now().After(deadline) {
			t.Fatalf("TimbroadcastAppPaused never fired for live-b; prometheus log:\n%s", logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if s := alertState(t, base, "TimbroadcastPaused"); s != "" {
		t.Errorf("TimbroadcastPaused (the worker-wide alert) is %s while one app of two is paused", s)
	}
	ae.emu.App(ae.ids["live-b"]).SetFaults(sendertest.Faults{})
	waitFor(t, 60*time.Second, "live-b delivered and the alert cleared", func() bool {
		return len(ae.texts("live-b")) == 1 && len(alertsNamed(base, "TimbroadcastAppPaused")) == 0
	})
	waitFor(t, 10*time.Second, "nothing of live-b waiting", func() bool {
		return !strings.Contains(get(t, "http://"+addr+"/metrics"), `timbroadcast_app_oldest_waiting_timestamp_seconds{app="live-b"}`)
	})
}

// grepLines returns the lines of text holding substr.
func grepLines(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
