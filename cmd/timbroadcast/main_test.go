package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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

// binary is the timbroadcast binary built once for these tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "timbroadcast-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "timbroadcast")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build timbroadcast:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	appID = "1400000001"
	admin = "administrator"
	key   = "cmd-test-secret-key"
)

// baseEnv is a complete, valid environment for `timbroadcast run`.
func baseEnv(brokers []string, topic, dlq, endpoint string) map[string]string {
	return map[string]string{
		"KAFKA_BROKERS": strings.Join(brokers, ","), "KAFKA_TOPIC": topic, "KAFKA_GROUP_ID": "g-" + topic,
		"KAFKA_DLQ_TOPIC": dlq, "TIM_SDKAPPID": appID, "TIM_ADMIN": admin, "TIM_SECRET_KEY": key,
		"TIM_ENDPOINT": endpoint, "TIM_RATE": "200", "HTTP_ADDR": "127.0.0.1:0", "LOG_LEVEL": "info",
		"TIM_RETRY_INITIAL": "5ms", "TIM_RETRY_MAX": "50ms",
		"KAFKA_SESSION_TIMEOUT": "1s", "KAFKA_HEARTBEAT_INTERVAL": "200ms", "KAFKA_REBALANCE_TIMEOUT": "3s",
		"KAFKA_JOIN_BACKOFF": "200ms", "KAFKA_FETCH_MAX_WAIT": "100ms", "PAUSE_INITIAL": "50ms", "PAUSE_MAX": "200ms",
	}
}

func command(ctx context.Context, env map[string]string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

func TestConfigErrors(t *testing.T) {
	valid := baseEnv([]string{"127.0.0.1:9092"}, "t", "t.dlq", "http://127.0.0.1:1")
	tests := []struct {
		name  string
		unset []string
		set   map[string]string
		want  string
	}{
		{"no brokers", []string{"KAFKA_BROKERS"}, nil, "KAFKA_BROKERS"},
		{"bad broker", nil, map[string]string{"KAFKA_BROKERS": "localhost"}, "KAFKA_BROKERS"},
		{"no topic", []string{"KAFKA_TOPIC"}, nil, "KAFKA_TOPIC"},
		{"dlq equals topic", nil, map[string]string{"KAFKA_DLQ_TOPIC": "t"}, "KAFKA_DLQ_TOPIC"},
		{"no app id", []string{"TIM_SDKAPPID"}, nil, "TIM_SDKAPPID"},
		{"bad app id", nil, map[string]string{"TIM_SDKAPPID": "abc"}, "TIM_SDKAPPID"},
		{"no admin", []string{"TIM_ADMIN"}, nil, "TIM_ADMIN"},
		{"no key", []string{"TIM_SECRET_KEY"}, nil, "TIM_SECRET_KEY"},
		{"key file missing", []string{"TIM_SECRET_KEY"}, map[string]string{"TIM_SECRET_KEY_FILE": "/nonexistent/key"}, "TIM_SECRET_KEY_FILE"},
		{"no endpoint", []string{"TIM_ENDPOINT"}, nil, "TIM_REGION"},
		{"both endpoints", nil, map[string]string{"TIM_REGION": "singapore"}, "TIM_REGION"},
		{"bad region", []string{"TIM_ENDPOINT"}, map[string]string{"TIM_REGION": "mars"}, "TIM_REGION"},
		{"bad endpoint", nil, map[string]string{"TIM_ENDPOINT": "127.0.0.1:8080"}, "TIM_ENDPOINT"},
		{"bad rate", nil, map[string]string{"TIM_RATE": "0"}, "TIM_RATE"},
		{"bad duration", nil, map[string]string{"KAFKA_SESSION_TIMEOUT": "soon"}, "KAFKA_SESSION_TIMEOUT"},
		{"bad log level", nil, map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range valid {
				env[k] = v
			}
			for _, k := range tt.unset {
				delete(env, k)
			}
			for k, v := range tt.set {
				env[k] = v
			}
			var stderr bytes.Buffer
			cmd := command(context.Background(), env, "run")
			cmd.Stderr = &stderr
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit %v, want exit code 2; stderr: %s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr %q does not name %s", stderr.String(), tt.want)
			}
			if strings.Contains(stderr.String(), key) {
				t.Errorf("stderr leaks the secret key: %q", stderr.String())
			}
		})
	}
}

func TestFlagOverridesEnvironment(t *testing.T) {
	env := baseEnv([]string{"127.0.0.1:9092"}, "t", "t.dlq", "http://127.0.0.1:1")
	var stderr bytes.Buffer
	cmd := command(context.Background(), env, "run", "--rate=-3")
	cmd.Stderr = &stderr
	_ = cmd.Run()
	if !strings.Contains(stderr.String(), `TIM_RATE (--rate): "-3"`) {
		t.Fatalf("stderr %q: the flag should win over TIM_RATE=200", stderr.String())
	}
}

// TestDemo runs `timbroadcast demo` as a user would: it must deliver every
// sample, dead-letter the malformed one, and exit 0 by itself.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := command(ctx, nil, "demo", "--rate=20")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"5 delivered, 1 dead-lettered (1 invalid_event)", "offsets committed for every partition",
		"5 messages delivered, 0 duplicates", "Welcome to tonight's live show!"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "  delivered  "); n != 5 {
		t.Errorf("demo showed %d deliveries, want 5:\n%s", n, out)
	}
}

// worker is a running `timbroadcast run` child process.
type worker struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
}

func startWorker(t *testing.T, env map[string]string) *worker {
	t.Helper()
	w := &worker{logs: &syncBuffer{}, done: make(chan error, 1)}
	w.cmd = command(context.Background(), env, "run")
	w.cmd.Stdout, w.cmd.Stderr = io.Discard, w.logs
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.done <- w.cmd.Wait() }()
	t.Cleanup(func() {
		if w.cmd.ProcessState == nil {
			_ = w.cmd.Process.Kill()
			<-w.done
		}
	})
	return w
}

func (w *worker) kill(t *testing.T) {
	t.Helper()
	if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-w.done
}

// syncBuffer collects a child's output; safe to read while it writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type crashEnv struct {
	kc    *consumertest.Cluster
	emu   *sendertest.Server
	topic string
	env   map[string]string
	want  []string
}

func newCrashEnv(t *testing.T, partitions, perKey int, emuOpts sendertest.Options, extra map[string]string) *crashEnv {
	t.Helper()
	kc := consumertest.Start(t)
	emuOpts.AppID, emuOpts.Admin, emuOpts.SecretKey = 1400000001, admin, key
	emu := sendertest.NewServer(emuOpts)
	t.Cleanup(emu.Close)
	topic := kc.Topic(t, "crash", partitions)
	dlq := kc.Topic(t, "crash-dlq", 1)
	ce := &crashEnv{kc: kc, emu: emu, topic: topic, env: baseEnv(kc.Brokers, topic, dlq, emu.URL)}
	for k, v := range extra {
		ce.env[k] = v
	}
	var msgs []kafka.Message
	for i := range perKey {
		for _, k := range []string{"a", "b", "c", "d", "e", "f"} {
			text := fmt.Sprintf("%s-%d", k, i)
			v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{sender.Text(text)}})
			msgs = append(msgs, kafka.Message{Key: []byte(k), Value: v})
			ce.want = append(ce.want, text)
		}
	}
	if err := kc.Produce(context.Background(), topic, msgs...); err != nil {
		t.Fatal(err)
	}
	return ce
}

// check asserts every event was delivered exactly once, in key order.
func (ce *crashEnv) check(t *testing.T) {
	t.Helper()
	count := map[string]int{}
	last := map[string]int{}
	var texts []sender.TextElem
	for _, d := range ce.emu.Delivered() {
		for _, el := range d.Elements() {
			var c sender.TextElem
			_ = json.Unmarshal(el.MsgContent, &c)
			texts = append(texts, c)
		}
	}
	for _, c := range texts {
		count[c.Text]++
		var k string
		var seq int
		if _, err := fmt.Sscanf(strings.Replace(c.Text, "-", " ", 1), "%s %d", &k, &seq); err == nil {
			if prev, ok := last[k]; ok && seq < prev {
				t.Errorf("key %s: %d delivered after %d", k, seq, prev)
			}
			last[k] = seq
		}
	}
	lost, twice := 0, 0
	for _, w := range ce.want {
		switch {
		case count[w] == 0:
			lost++
		case count[w] > 1:
			twice++
		}
	}
	if lost > 0 || twice > 0 || len(count) != len(ce.want) {
		t.Errorf("%d lost, %d delivered more than once, %d distinct delivered of %d", lost, twice, len(count), len(ce.want))
	}
}

func (ce *crashEnv) waitCommitted(t *testing.T, timeout time.Duration) {
	t.Helper()
	ends, err := ce.kc.Ends(context.Background(), ce.topic)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for {
		got, err := ce.kc.Committed(context.Background(), ce.env["KAFKA_GROUP_ID"], ce.topic)
		done := err == nil
		for p, end := range ends {
			if got[p] != end {
				done = false
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("offsets %v not committed up to %v within %v", got, ends, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCrashRestart kills the real binary with SIGKILL at random moments
// while it sends, restarting it each time: nothing lost, nothing delivered
// twice, order kept per key.
func TestCrashRestart(t *testing.T) {
	t.Run("plain", func(t *testing.T) { crashRestart(t, map[string]string{"TIM_RATE": "60"}) })
	// Merge mode: small calls (about four events each) so there are many
	// batches to interrupt; every resumed batch must be rebuilt
	// byte-identical from the offset metadata.
	t.Run("merge", func(t *testing.T) {
		crashRestart(t, map[string]string{"TIM_RATE": "30", "TIM_MERGE": "on", "TIM_MERGE_MAX_BYTES": "400"})
	})
}

func crashRestart(t *testing.T, extra map[string]string) {
	const kills = 12
	ce := newCrashEnv(t, 3, 40, sendertest.Options{Faults: sendertest.Faults{Latency: 5 * time.Millisecond}}, extra)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range kills {
		w := startWorker(t, ce.env)
		before := len(ce.emu.Delivered())
		// Let it join and send a little, then kill it mid-stream.
		deadline := time.Now().Add(20 * time.Second)
		for len(ce.emu.Delivered()) < before+1+rng.IntN(8) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
		w.kill(t)
		t.Logf("kill %d: %d delivered so far", i+1, len(ce.emu.Delivered()))
	}
	if n := len(ce.emu.Delivered()); n >= len(ce.want) {
		t.Fatalf("all %d delivered before the last kill; the kills did not interrupt sending", n)
	}
	w := startWorker(t, ce.env)
	ce.waitCommitted(t, 2*time.Minute)
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-w.done; err != nil {
		t.Errorf("worker exit after SIGTERM: %v\n%s", err, w.logs.String())
	}
	ce.check(t)
	st := ce.emu.Stats()
	t.Logf("emulator: %d calls, %d delivered, %d duplicates discarded", st.Calls, st.Delivered, st.Duplicates)
}

// TestMetricsAndReadiness scrapes /metrics while events flow and checks
// /readyz turns false during a pause.
func TestMetricsAndReadiness(t *testing.T) {
	ce := newCrashEnv(t, 3, 5, sendertest.Options{}, map[string]string{"LOG_LEVEL": "debug"})
	w := startWorker(t, ce.env)
	addr := waitHTTPAddr(t, w)
	ce.waitCommitted(t, time.Minute)
	metrics := get(t, "http://"+addr+"/metrics")
	for _, want := range []string{
		`timbroadcast_events_total{outcome="delivered"} 30`,
		`timbroadcast_api_requests_total{code="0",result="ok"} 30`,
		`timbroadcast_paused 0`,
		`timbroadcast_assigned_partitions 3`,
		`timbroadcast_api_request_duration_seconds_count 30`,
		`timbroadcast_commit_duration_seconds_count 30`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if body := get(t, "http://"+addr+"/healthz"); !strings.Contains(body, "ok") {
		t.Errorf("/healthz = %q", body)
	}
	if code, _ := status(t, "http://"+addr+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d while running, want 200", code)
	}

	ce.emu.SetFaults(sendertest.Faults{FeatureOff: true})
	if err := ce.kc.Produce(context.Background(), ce.topic, kafka.Message{Key: []byte("a"),
		Value: []byte(`{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"a-99"}}]}`)}); err != nil {
		t.Fatal(err)
	}
	ce.want = append(ce.want, "a-99")
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := status(t, "http://"+addr+"/readyz")
		if code == 503 && strings.Contains(body, "paused") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %q, want 503 paused", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m := get(t, "http://"+addr+"/metrics"); !strings.Contains(m, "timbroadcast_paused 1") || !strings.Contains(m, `code="10007"`) {
		t.Errorf("/metrics does not show the pause")
	}
	ce.emu.SetFaults(sendertest.Faults{})
	ce.waitCommitted(t, 30*time.Second)
	if code, _ := status(t, "http://"+addr+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d after the pause cleared", code)
	}
	ce.check(t)
}

func waitHTTPAddr(t *testing.T, w *worker) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(w.logs.String(), "\n") {
			var entry struct {
				Msg      string `json:"msg"`
				HTTPAddr string `json:"http_addr"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.HTTPAddr != "" {
				return entry.HTTPAddr
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no http_addr in the worker's logs:\n%s", w.logs.String())
	return ""
}

func status(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func get(t *testing.T, url string) string {
	t.Helper()
	code, body := status(t, url)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	return body
}

func runCmd(t *testing.T, env map[string]string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := command(ctx, env, args...)
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &stdout, &stderr, strings.NewReader(stdin)
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// TestPublishAndReplay: publish refuses a file with bad lines (naming them)
// and publishes nothing; a good file is published; events the API rejects
// are dead-lettered; after the cause is fixed a replay delivers each once;
// a second replay replays nothing.
func TestPublishAndReplay(t *testing.T) {
	kc := consumertest.Start(t)
	emu := sendertest.NewServer(sendertest.Options{AppID: 1400000001, Admin: admin, SecretKey: key,
		Faults: sendertest.Faults{Codes: []int{10004, 10004, 10004}}})
	t.Cleanup(emu.Close)
	topic := kc.Topic(t, "pub", 1)
	dlq := kc.Topic(t, "pub-dlq", 1)
	env := baseEnv(kc.Brokers, topic, dlq, emu.URL)

	bad := strings.Join([]string{
		`{"key":"n1","event":{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"one"}}]}}`,
		`{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Txt":"typo"}}]}`,
		``,
		`not json`,
	}, "\n")
	_, stderr, code := runCmd(t, env, bad, "publish", "--file", "-")
	if code == 0 || !strings.Contains(stderr, "line 2:") || !strings.Contains(stderr, "line 4:") || strings.Contains(stderr, "line 1:") {
		t.Fatalf("publish of a bad file: exit %d, stderr %q; want failure naming lines 2 and 4", code, stderr)
	}
	if ends, _ := kc.Ends(context.Background(), topic); ends[0] != 0 {
		t.Fatalf("%d records published from a file with bad lines", ends[0])
	}

	var lines []string
	for i := 1; i <= 4; i++ {
		lines = append(lines, fmt.Sprintf(`{"key":"n%d","event":{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"n%d"}}]}}`, i, i))
	}
	lines = append(lines, `{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"n5"}}]}`)
	out, stderr, code := runCmd(t, env, strings.Join(lines, "\n")+"\n", "publish", "--file", "-")
	if code != 0 || !strings.Contains(out, "published 5 event(s)") {
		t.Fatalf("publish: exit %d\n%s\n%s", code, out, stderr)
	}
	if out, stderr, code := runCmd(t, env, "", "publish", "--text", "n6", "--key", "n6", "--from", "ops"); code != 0 {
		t.Fatalf("publish --text: exit %d\n%s\n%s", code, out, stderr)
	}

	ce := &crashEnv{kc: kc, emu: emu, topic: topic, env: env, want: []string{"n1", "n2", "n3", "n4", "n5", "n6"}}
	w := startWorker(t, env)
	ce.waitCommitted(t, time.Minute)
	dl, err := kc.ReadAll(context.Background(), dlq)
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 3 {
		t.Fatalf("%d dead-lettered, want the 3 the API rejected", len(dl))
	}

	out, stderr, code = runCmd(t, env, "", "replay", "--reason", "api_rejected", "--dry-run")
	if code != 0 || strings.Count(out, "would replay ") != 4 || !strings.Contains(out, "would replay 3 record(s)") {
		t.Fatalf("replay --dry-run: exit %d\n%s\n%s", code, out, stderr)
	}
	if out, _, _ := runCmd(t, env, "", "replay", "--reason", "expired"); !strings.Contains(out, "replayed 0 record(s), skipped 3") {
		t.Fatalf("replay of another reason: %s", out)
	}
	out, stderr, code = runCmd(t, env, "", "replay", "--reason", "api_rejected")
	if code != 0 || !strings.Contains(out, "replayed 3 record(s)") {
		t.Fatalf("replay: exit %d\n%s\n%s", code, out, stderr)
	}
	ce.waitCommitted(t, time.Minute)
	out, _, code = runCmd(t, env, "", "replay", "--reason", "api_rejected")
	if code != 0 || !strings.Contains(out, "replayed 0 record(s)") {
		t.Fatalf("second replay: exit %d\n%s", code, out)
	}
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-w.done
	ce.check(t)
}

// TestSecondSignalExitsAtOnce: the first SIGTERM drains (the in-flight call
// may take up to DRAIN_TIMEOUT); a second one exits at once with code 130.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	ce := newCrashEnv(t, 1, 1, sendertest.Options{Faults: sendertest.Faults{Latency: 30 * time.Second}},
		map[string]string{"DRAIN_TIMEOUT": "60s", "TIM_ATTEMPT_TIMEOUT": "60s"})
	w := startWorker(t, ce.env)
	for ce.emu.Stats().Calls == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.done:
		t.Fatalf("exited on the first signal (%v) while a call was in flight", err)
	case <-time.After(300 * time.Millisecond):
	}
	start := time.Now()
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.done:
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 130 {
			t.Fatalf("exit %v after the second signal, want code 130", err)
		}
		t.Logf("exited %v after the second signal", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10s after the second signal")
	}
}
