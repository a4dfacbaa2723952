package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

// binary is the timbroadcast binary built once for these tests.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// The fast tier runs no binary: tests that need one skip.
		os.Exit(m.Run())
	}
	if b := os.Getenv("TIMBROADCAST_BINARY"); b != "" {
		// A binary built elsewhere (another version, for a benchmark's
		// before and after).
		binary = b
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "timbroadcast-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	binary = filepath.Join(dir, "timbroadcast")
	if err := build(binary, raceEnabled); err != nil {
		fmt.Fprintln(os.Stderr, "build timbroadcast:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildDir holds the binaries TestMain builds ("" with TIMBROADCAST_BINARY
// or -short).
var buildDir string

// build builds the binary at path, with the race detector or else as
// deploy/Dockerfile and make build build it (static, stripped), so that
// what the benchmarks measure (memory above all) is the binary users run.
func build(path string, race bool, tags ...string) error {
	args := []string{"build", "-o", path}
	env := os.Environ()
	if race {
		args = append(args, "-race")
	} else {
		args = append(args, "-trimpath", "-ldflags", "-s -w")
		env = append(env, "CGO_ENABLED=0")
	}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

// built is a binary built once by TestMain's build, for the tests that
// need it.
type built struct {
	once sync.Once
	path string
	err  error
}

// get builds the binary (named name in buildDir, race and tags as build
// takes them) the first time, and returns it.
func (b *built) get(tb testing.TB, name string, race bool, tags ...string) string {
	tb.Helper()
	b.once.Do(func() {
		b.path = filepath.Join(buildDir, name)
		b.err = build(b.path, race, tags...)
	})
	if b.err != nil {
		tb.Fatalf("build %s: %v", name, b.err)
	}
	return b.path
}

var lean, release built

// leanBinary is the binary built with the tag lean (make build-lean),
// built once; it skips where TestMain built no binary.
func leanBinary(tb testing.TB) string {
	tb.Helper()
	if buildDir == "" {
		tb.Skip("builds the lean binary: not with TIMBROADCAST_BINARY or in the fast tier (go test -short)")
	}
	return lean.get(tb, "timbroadcast-lean", false, "lean")
}

// releaseBinary is the binary as users run it (make build: no race
// detector), for tests that measure a rate or memory at scale: under
// -race the worker runs several times slower and bigger. Without -race it
// is the binary the tests use.
func releaseBinary(tb testing.TB) string {
	tb.Helper()
	if !raceEnabled || buildDir == "" {
		return binary
	}
	return release.get(tb, "timbroadcast-release", false)
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
	return commandOf(ctx, binary, env, args...)
}

// commandOf is command for another build of the binary (bin).
func commandOf(ctx context.Context, bin string, env map[string]string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// worker is a running `timbroadcast run` child process.
type worker struct {
	cmd  *exec.Cmd
	logs *consumertest.SyncBuffer
	done chan error
}

func startWorker(t testing.TB, env map[string]string) *worker {
	t.Helper()
	return startWorkerOf(t, binary, env)
}

// startWorkerOf is startWorker for another build of the binary (bin).
func startWorkerOf(t testing.TB, bin string, env map[string]string) *worker {
	t.Helper()
	w := &worker{logs: &consumertest.SyncBuffer{}, done: make(chan error, 1)}
	w.cmd = commandOf(context.Background(), bin, env, "run")
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

func (w *worker) kill(t testing.TB) {
	t.Helper()
	if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-w.done
}

type crashEnv struct {
	kc    *consumertest.Cluster
	emu   *sendertest.Server
	topic string
	env   map[string]string
	want  []string
}

func newCrashEnv(t testing.TB, partitions, perKey int, emuOpts sendertest.Options, extra map[string]string) *crashEnv {
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

func (ce *crashEnv) waitCommitted(t testing.TB, timeout time.Duration) {
	t.Helper()
	ce.kc.WaitCommitted(t, ce.env["KAFKA_GROUP_ID"], ce.topic, timeout)
}

func waitHTTPAddr(t testing.TB, w *worker) string {
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

func status(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func get(t testing.TB, url string) string {
	t.Helper()
	code, body := status(t, url)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	return body
}

func runCmd(t *testing.T, env map[string]string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	return runCmdOf(t, binary, env, stdin, args...)
}

// runCmdOf is runCmd for another build of the binary (bin).
func runCmdOf(t *testing.T, bin string, env map[string]string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := commandOf(ctx, bin, env, args...)
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

// replicaEnvWith is a topic with a backlog of events over keys (one key
// puts the whole backlog on one partition) and an emulator with emuOpts,
// for several worker processes in one group.
func replicaEnvWith(t testing.TB, partitions, events int, emuOpts sendertest.Options, keys int, extra map[string]string) *crashEnv {
	ce := newCrashEnv(t, partitions, 0, emuOpts, extra)
	var msgs []kafka.Message
	for i := range events {
		k := fmt.Sprintf("key%02d", i%keys) // 60 keys: every partition gets some
		text := fmt.Sprintf("%s-%d", k, i/keys)
		v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{sender.Text(text)}})
		msgs = append(msgs, kafka.Message{Key: []byte(k), Value: v})
		ce.want = append(ce.want, text)
	}
	if err := ce.kc.Produce(context.Background(), ce.topic, msgs...); err != nil {
		t.Fatal(err)
	}
	return ce
}

// startReplicas starts n workers and returns them with their HTTP addresses.
func startReplicas(t testing.TB, env map[string]string, n int) ([]*worker, []string) {
	t.Helper()
	var workers []*worker
	var addrs []string
	for range n {
		w := startWorker(t, env)
		workers = append(workers, w)
		addrs = append(addrs, waitHTTPAddr(t, w))
	}
	return workers, addrs
}

// metricValue reads one sample from a worker's /metrics.
func metricValue(t testing.TB, addr, name string) float64 {
	t.Helper()
	body := get(t, "http://"+addr+"/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// noneTwice asserts no event was delivered more than once (the backlog may
// be unfinished).
func noneTwice(t testing.TB, emu *sendertest.Server) int {
	t.Helper()
	seen := map[string]bool{}
	for _, d := range emu.Delivered() {
		for _, el := range d.Elements() {
			var c sender.TextElem
			_ = json.Unmarshal(el.MsgContent, &c)
			if seen[c.Text] {
				t.Errorf("%q delivered twice", c.Text)
			}
			seen[c.Text] = true
		}
	}
	return len(seen)
}

// needBinary skips a test that runs the real binary under -short (the
// fast tier builds none); make test runs it.
func needBinary(t *testing.T) {
	t.Helper()
	if binary == "" {
		t.Skip("runs the real binary: not in the fast tier (go test -short); make test runs it")
	}
}

// killMidStream starts the worker and kills it with SIGKILL kills times,
// each time after it delivered 1 to maxStep more calls and a random few
// milliseconds more: kills land mid-stream, at moments rng chooses.
func killMidStream(t *testing.T, ce *crashEnv, kills, maxStep int, rng *rand.Rand) {
	t.Helper()
	for i := range kills {
		w := startWorker(t, ce.env)
		before := len(ce.emu.Delivered())
		deadline := time.Now().Add(20 * time.Second)
		for len(ce.emu.Delivered()) < before+1+rng.IntN(maxStep) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
		w.kill(t)
		t.Logf("kill %d: %d calls delivered so far", i+1, len(ce.emu.Delivered()))
	}
}
