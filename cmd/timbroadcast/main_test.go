package main_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// TestConfigErrorExitCode: the real binary exits 2 on a configuration
// error, names the setting and never prints the secret key. (Every
// setting's error is tested in process by TestConfigErrors.)
func TestConfigErrorExitCode(t *testing.T) {
	needBinary(t)
	for _, tt := range []struct {
		unset, set, value, want string
	}{
		{unset: "TIM_SDKAPPID", want: "TIM_SDKAPPID"},
		// Plain http to a non-loopback address: refused before any
		// connection is tried (the address is never contacted).
		{set: "TIM_ENDPOINT", value: "http://0.0.0.0:9", want: "TIM_ENDPOINT"},
	} {
		env := baseEnv([]string{"127.0.0.1:9092"}, "t", "t.dlq", "http://127.0.0.1:1")
		delete(env, tt.unset)
		if tt.set != "" {
			env[tt.set] = tt.value
		}
		var stderr bytes.Buffer
		cmd := command(context.Background(), env, "run")
		cmd.Stderr = &stderr
		start := time.Now()
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Fatalf("%s: exit %v, want exit code 2; stderr: %s", tt.want, err, stderr.String())
		}
		if !strings.Contains(stderr.String(), tt.want) || strings.Contains(stderr.String(), key) {
			t.Errorf("stderr %q: want %s named and no secret key", stderr.String(), tt.want)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: took %v to fail", tt.want, d)
		}
	}
}

func TestFlagOverridesEnvironment(t *testing.T) {
	needBinary(t)
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
	needBinary(t)
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
		"5 messages delivered, 0 duplicates", "Welcome to tonight's live show!",
		"Receipts: 6 written to timbroadcast-demo.receipts", `"schema":"timbroadcast/receipt/v1"`,
		"serves /metrics", "`timbroadcast status --brokers 127.0.0.1:"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "  delivered  "); n != 5 {
		t.Errorf("demo showed %d deliveries, want 5:\n%s", n, out)
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
	// Envelope mode: every call an envelope of several events.
	t.Run("envelope", func(t *testing.T) {
		crashRestart(t, map[string]string{"TIM_RATE": "30", "TIM_MERGE": "envelope", "TIM_MERGE_MAX_BYTES": "600"})
	})
}

func crashRestart(t *testing.T, extra map[string]string) {
	const kills = 12
	ce := newCrashEnv(t, 3, 40, sendertest.Options{Faults: sendertest.Faults{Latency: 5 * time.Millisecond}}, extra)
	killMidStream(t, ce, kills, 8, rand.New(rand.NewPCG(1, 2)))
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
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// Each of the 3 partitions committed, what settled within a commit
	// interval together (KAFKA_COMMIT_INTERVAL).
	if n := metricValue(t, addr, "timbroadcast_commit_duration_seconds_count"); n < 3 || n > 30 {
		t.Errorf("timbroadcast_commit_duration_seconds_count = %v, want 3 to 30 (a commit per partition at least, per call at most)", n)
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

// TestPublishPartitioner: with KAFKA_PARTITIONER=murmur2, publish puts each
// key in the partition the Java client's default partitioner would (so a
// key keeps one partition, and its order, whoever produces it).
func TestPublishPartitioner(t *testing.T) {
	needBinary(t)
	kc := consumertest.Start(t)
	topic := kc.Topic(t, "parts", 6)
	env := map[string]string{"KAFKA_BROKERS": strings.Join(kc.Brokers, ","), "KAFKA_TOPIC": topic, "KAFKA_PARTITIONER": "murmur2"}
	var lines []string
	for i := range 24 {
		lines = append(lines, fmt.Sprintf(`{"key":"room-%d","event":{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"r%d"}}]}}`, i, i))
	}
	if out, stderr, code := runCmd(t, env, strings.Join(lines, "\n"), "publish", "--file", "-"); code != 0 {
		t.Fatalf("publish: exit %d\n%s\n%s", code, out, stderr)
	}
	recs, err := kc.ReadAll(context.Background(), topic)
	if err != nil || len(recs) != 24 {
		t.Fatalf("%d records, %v", len(recs), err)
	}
	java := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
	for _, m := range recs {
		if want := java.Partition(&kgo.Record{Key: m.Key}, 6); m.Partition != want {
			t.Errorf("key %s in partition %d; the Java partitioner puts it in %d", m.Key, m.Partition, want)
		}
	}
}
