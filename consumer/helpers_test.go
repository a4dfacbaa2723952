package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

const (
	appID = 1400000001
	admin = "administrator"
	key   = "test-secret-key"
)

// env is one end-to-end set-up: a Kafka, the emulator, topics.
type env struct {
	t       *testing.T
	kafka   *consumertest.Cluster
	emu     *sendertest.Server
	topic   string
	dlq     string
	group   string
	workers []*runningWorker
}

type runningWorker struct {
	w      *consumer.Worker
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func newEnv(t *testing.T, kc *consumertest.Cluster, partitions int, emuOpts sendertest.Options) *env {
	t.Helper()
	emuOpts.AppID, emuOpts.Admin, emuOpts.SecretKey = appID, admin, key
	emu := sendertest.NewServer(emuOpts)
	t.Cleanup(emu.Close)
	e := &env{
		t: t, kafka: kc, emu: emu,
		topic: kc.Topic(t, "broadcasts", partitions),
		dlq:   kc.Topic(t, "broadcasts-dlq", 1),
	}
	e.group = "timbroadcast-" + e.topic
	return e
}

func (e *env) senderConfig() sender.Config {
	return sender.Config{
		AppID: appID, Admin: admin, SecretKey: key, Endpoints: []string{e.emu.URL},
		Rate: 500, RetryInitial: 2 * time.Millisecond, RetryMax: 20 * time.Millisecond,
		AttemptTimeout: 2 * time.Second,
	}
}

func (e *env) workerConfig() consumer.Config {
	return consumer.Config{
		Brokers: e.kafka.Brokers, Topic: e.topic, GroupID: e.group, DLQTopic: e.dlq,
		MaxWait: 100 * time.Millisecond, SessionTimeout: 6 * time.Second, HeartbeatInterval: 200 * time.Millisecond,
		RebalanceTimeout: 5 * time.Second, JoinGroupBackoff: 200 * time.Millisecond,
		PauseInitial: 50 * time.Millisecond, PauseMax: 200 * time.Millisecond,
		ScheduleRefresh: 20 * time.Millisecond,
		Logger:          zaptest.NewLogger(e.t, zaptest.Level(testLogLevel())),
	}
}

// testLogLevel is TEST_LOG_LEVEL (debug, info, ...), warn by default.
func testLogLevel() zapcore.Level {
	lvl := zapcore.WarnLevel
	_ = lvl.UnmarshalText([]byte(os.Getenv("TEST_LOG_LEVEL")))
	return lvl
}

// start runs a worker until the test ends (or stop).
func (e *env) start(mutate func(*consumer.Config, *sender.Config)) *runningWorker {
	e.t.Helper()
	ccfg, scfg := e.workerConfig(), e.senderConfig()
	if mutate != nil {
		mutate(&ccfg, &scfg)
	}
	if ccfg.AppRate == 0 {
		// The call schedule paces, as in production: run sets AppRate to
		// TIM_RATE.
		ccfg.AppRate = scfg.Rate
	}
	client, err := sender.New(scfg)
	if err != nil {
		e.t.Fatal(err)
	}
	w, err := consumer.New(ccfg, client)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{w: w, cancel: cancel, done: make(chan error, 1)}
	go func() { rw.done <- w.Run(ctx) }()
	e.workers = append(e.workers, rw)
	e.t.Cleanup(func() { rw.stop(e.t) })
	return rw
}

func (rw *runningWorker) stop(t *testing.T) {
	t.Helper()
	rw.once.Do(func() {
		rw.cancel()
		select {
		case err := <-rw.done:
			if err != nil {
				t.Errorf("worker Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop within 30s")
		}
	})
}

// textEvent returns a record with a key and a text message naming it.
func textEvent(key, text string) kafka.Message {
	v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{sender.Text(text)}})
	return kafka.Message{Key: []byte(key), Value: v}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deliveredTexts returns the texts the emulator delivered, in order.
func deliveredTexts(emu *sendertest.Server) []string {
	var out []string
	for _, d := range emu.Delivered() {
		for _, el := range d.MsgBody {
			if el.MsgType == sender.TypeText {
				var c sender.TextElem
				_ = json.Unmarshal(el.MsgContent, &c)
				out = append(out, c.Text)
			}
		}
	}
	return out
}

// checkExactlyOnce asserts that every want text was delivered exactly
// once, and that texts of one key ("k<key>-<seq>") arrived in seq order.
func checkExactlyOnce(t *testing.T, got []string, want []string) {
	t.Helper()
	count := map[string]int{}
	for _, g := range got {
		count[g]++
	}
	for _, w := range want {
		if count[w] != 1 {
			t.Errorf("%q delivered %d times, want once", w, count[w])
		}
	}
	if len(got) != len(want) {
		t.Errorf("delivered %d messages, want %d", len(got), len(want))
	}
	last := map[string]int{}
	for _, g := range got {
		var k string
		var seq int
		if _, err := fmt.Sscanf(strings.Replace(g, "-", " ", 1), "%s %d", &k, &seq); err != nil {
			continue
		}
		if prev, ok := last[k]; ok && seq < prev {
			t.Errorf("key %s: %d delivered after %d (order broken)", k, seq, prev)
		}
		last[k] = seq
	}
}

// produceKeyed produces n events for each of keys: text "<key>-<i>".
func (e *env) produceKeyed(keys []string, n int) []string {
	e.t.Helper()
	var msgs []kafka.Message
	var want []string
	for i := range n {
		for _, k := range keys {
			text := fmt.Sprintf("%s-%d", k, i)
			msgs = append(msgs, textEvent(k, text))
			want = append(want, text)
		}
	}
	if err := e.kafka.Produce(context.Background(), e.topic, msgs...); err != nil {
		e.t.Fatal(err)
	}
	return want
}

func (e *env) waitCommitted(timeout time.Duration) {
	e.t.Helper()
	e.kafka.WaitCommitted(e.t, e.group, e.topic, timeout)
}

var keys = []string{"ka", "kb", "kc", "kd", "ke", "kf"}

// deliveredEvents returns, per delivered element (merge envelopes
// unpacked), the event name: a text's or custom Data's part before "|".
func deliveredEvents(emu *sendertest.Server) []string {
	var out []string
	for _, d := range emu.Delivered() {
		for _, el := range d.Elements() {
			var c struct{ Text, Data string }
			_ = json.Unmarshal(el.MsgContent, &c)
			s := c.Text + c.Data
			out = append(out, strings.SplitN(s, "|", 2)[0])
		}
	}
	return out
}

// mixedEvents makes n events over keys: texts of 20 to 1,500 bytes, runs
// of lone custom elements (one event in five, in blocks), every 200th from
// another sender (which cannot merge with its neighbours).
func mixedEvents(n int, keys []string, seed uint64) ([]kafka.Message, []string) {
	rng := rand.New(rand.NewPCG(seed, seed))
	var msgs []kafka.Message
	var want []string
	for i := range n {
		k := keys[i%len(keys)]
		name := fmt.Sprintf("%s-%d", k, i/len(keys))
		pad := strings.Repeat("x", 20+rng.IntN(1480))
		ev := map[string]any{}
		if (i/60)%5 == 4 {
			ev["MsgBody"] = []sender.Element{sender.Custom(name + "|" + pad)}
		} else {
			ev["MsgBody"] = []sender.Element{sender.Text(name + "|" + pad)}
		}
		if i%200 == 199 {
			ev["From_Account"] = "other"
		}
		v, _ := json.Marshal(ev)
		msgs = append(msgs, kafka.Message{Key: []byte(k), Value: v})
		want = append(want, name)
	}
	return msgs, want
}
