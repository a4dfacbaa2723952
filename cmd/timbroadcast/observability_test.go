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

	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// TestDashboardMetricsExist: every metric the Grafana dashboard queries is
// in /metrics of a running worker that delivered, dead-lettered, wrote
// receipts and had a commit refused.
func TestDashboardMetricsExist(t *testing.T) {
	needBinary(t)
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
	queried := map[string]bool{}
	name := regexp.MustCompile(`timbroadcast_[a-z0-9_]+`)
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, n := range name.FindAllString(tg.Expr, -1) {
				queried[n] = true
			}
		}
	}
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
	metrics := get(t, "http://"+addr+"/metrics")
	for n := range queried {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(n) + `[{ ]`).MatchString(metrics) {
			t.Errorf("the dashboard queries %s, which the worker's /metrics lacks", n)
		}
	}
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

// alertState returns the state of alert name in Prometheus at base
// ("firing", "pending" or "" when inactive).
func alertState(t *testing.T, base, name string) string {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/alerts")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return ""
	}
	for _, a := range body.Data.Alerts {
		if a.Labels["alertname"] == name {
			return a.State
		}
	}
	return ""
}

// TestPausedAlertInPrometheus runs a real Prometheus (Debian's prometheus
// package; .ci/run installs it) scraping a real worker every second with
// deploy/prometheus/alerts.yaml (its `for` durations cut to 2 s): through an
// app-wide pause (10007), TimbroadcastPaused fires; when the pause ends,
// it clears.
func TestPausedAlertInPrometheus(t *testing.T) {
	needBinary(t)
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (apt-get install prometheus; .ci/run does): the alert rules are not run against a real Prometheus here")
	}
	ce := newCrashEnv(t, 1, 2, sendertest.Options{}, nil)
	w := startWorker(t, ce.env)
	addr := waitHTTPAddr(t, w)
	ce.waitCommitted(t, time.Minute)

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
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
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
