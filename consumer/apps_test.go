package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/call"
	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// twoApps is a worker serving apps "fast" and "slow" behind one
// emulated endpoint, on one topic.
type twoApps struct {
	e   *env
	emu *sendertest.Apps
	ids map[string]int
}

func newTwoApps(t *testing.T, partitions int) *twoApps {
	t.Helper()
	ta := &twoApps{ids: map[string]int{"fast": 1400000201, "slow": 1400000202}}
	ta.e = newEnv(t, consumertest.StartFake(t), partitions, sendertest.Options{})
	ta.emu = sendertest.NewApps(sendertest.Options{AppID: ta.ids["fast"], Admin: admin, SecretKey: "key-fast"},
		sendertest.Options{AppID: ta.ids["slow"], Admin: admin, SecretKey: "key-slow"})
	t.Cleanup(ta.emu.Close)
	return ta
}

// start runs the worker with mutate applied to its configuration.
func (ta *twoApps) start(t *testing.T, mutate func(*consumer.Config)) {
	t.Helper()
	ccfg := ta.e.workerConfig()
	for _, name := range []string{"fast", "slow"} {
		scfg := ta.e.senderConfig()
		scfg.AppID, scfg.SecretKey, scfg.Endpoints = ta.ids[name], "key-"+name, []string{ta.emu.URL}
		client, err := sender.New(scfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(client.Close)
		ccfg.Apps = append(ccfg.Apps, consumer.App{Name: name, SDKAppID: uint64(ta.ids[name]), Sender: client, Rate: scfg.Rate})
	}
	if mutate != nil {
		mutate(&ccfg)
	}
	w, err := consumer.New(ccfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{w: w, cancel: cancel, done: make(chan error, 1)}
	go func() { rw.done <- w.Run(ctx) }()
	t.Cleanup(func() { rw.stop(t) })
}

func (ta *twoApps) texts(name string) []string {
	var out []string
	for _, d := range ta.emu.App(ta.ids[name]).Delivered() {
		for _, el := range d.Elements() {
			var c sender.TextElem
			_ = json.Unmarshal(el.MsgContent, &c)
			out = append(out, c.Text)
		}
	}
	return out
}

func appEvent(key, text, app string) kafka.Message {
	m := textEvent(key, text)
	m.Headers = []kafka.Header{{Key: wire.HeaderApp, Value: []byte(app)}}
	return m
}

// TestPausedAppReadsAgain: an app switched off under a backlog of
// another app's records keeps at most its bound of records; the other
// app delivers everything meanwhile; once switched on, the paused app
// reads its records again from the partition and delivers each once, in
// order, and the partition is committed to its end.
func TestPausedAppReadsAgain(t *testing.T) {
	ta := newTwoApps(t, 1)
	ta.emu.App(ta.ids["slow"]).SetFaults(sendertest.Faults{FeatureOff: true})
	var wantFast, wantSlow []string
	batch := func(from, to int) []kafka.Message {
		var msgs []kafka.Message
		for i := from; i < to; i++ {
			msgs = append(msgs, appEvent("f", fmt.Sprintf("f-%d", i), "fast"))
			wantFast = append(wantFast, fmt.Sprintf("f-%d", i))
			if i%5 == 0 {
				msgs = append(msgs, appEvent("s", fmt.Sprintf("s-%d", i/5), fmt.Sprint(ta.ids["slow"])))
				wantSlow = append(wantSlow, fmt.Sprintf("s-%d", i/5))
			}
		}
		return msgs
	}
	if err := ta.e.kafka.Produce(context.Background(), ta.e.topic, batch(0, 300)...); err != nil {
		t.Fatal(err)
	}
	spans := tracetest.NewSpanRecorder()
	ta.start(t, func(c *consumer.Config) {
		c.StreamMaxRecords = 8
		c.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	})
	waitFor(t, 60*time.Second, "the fast app's events", func() bool { return len(ta.texts("fast")) >= len(wantFast) })
	if n := len(ta.texts("slow")); n != 0 {
		t.Fatalf("the switched-off app delivered %d", n)
	}
	ta.emu.App(ta.ids["slow"]).SetFaults(sendertest.Faults{})
	// More of both while the slow app reads its records again: its
	// reading passes the router's position, and the router's hands over.
	for i := 300; i < 900; i += 20 {
		if err := ta.e.kafka.Produce(context.Background(), ta.e.topic, batch(i, i+20)...); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 60*time.Second, "the fast app's later events", func() bool { return len(ta.texts("fast")) >= len(wantFast) })
	waitFor(t, 60*time.Second, "the slow app's events", func() bool { return len(ta.texts("slow")) >= len(wantSlow) })
	ta.e.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, ta.texts("fast"), wantFast)
	checkExactlyOnce(t, ta.texts("slow"), wantSlow)
	if dl, _ := ta.e.kafka.ReadAll(context.Background(), ta.e.dlq); len(dl) != 0 {
		t.Errorf("%d dead letters, want none", len(dl))
	}
	// Every event's span names its app.
	byApp := map[string]int{}
	for _, sp := range spans.Ended() {
		for _, a := range sp.Attributes() {
			if a.Key == call.AttrApp {
				byApp[a.Value.AsString()]++
			}
		}
	}
	if byApp["fast"] < len(wantFast) || byApp["slow"] < len(wantSlow) {
		t.Errorf("event spans by app %v, want at least %d fast and %d slow", byApp, len(wantFast), len(wantSlow))
	}
}
