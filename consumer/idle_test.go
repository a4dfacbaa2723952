package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/metrics"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// Idle replicas: several members of one group, paced by the call schedule
// at the app's rate, with nothing to send but an occasional event. An
// idle event leaves at once (its claim read back), and the broker hears
// little from them.

// idleGroup is n workers of one group over a topic, on a kfake broker that
// counts requests, calling an emulator that enforces the rate strictly
// (minimum spacing).
type idleGroup struct {
	kc      *consumertest.Cluster
	rc      *consumertest.Requests
	emu     *sendertest.Server
	topic   string
	regs    []*prometheus.Registry
	cancel  context.CancelFunc
	running sync.WaitGroup
}

func startIdleGroup(tb testing.TB, n, partitions int, rate float64) *idleGroup {
	tb.Helper()
	kc, err := consumertest.NewFake()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(kc.Close)
	g := &idleGroup{kc: kc, rc: consumertest.CountRequests(kc),
		emu: sendertest.NewServer(sendertest.Options{AppID: appID, Admin: admin, SecretKey: key, Rate: rate,
			Limiter: sendertest.LimiterSpacing})}
	tb.Cleanup(g.emu.Close)
	g.topic = fmt.Sprintf("idle-%d", time.Now().UnixNano())
	for _, t := range []struct {
		name  string
		parts int
	}{{g.topic, partitions}, {g.topic + ".dlq", 1}} {
		if err := kc.CreateTopic(context.Background(), t.name, t.parts); err != nil {
			tb.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	tb.Cleanup(g.stop)
	for range n {
		reg := prometheus.NewRegistry()
		g.regs = append(g.regs, reg)
		client, err := sender.New(sender.Config{AppID: appID, Admin: admin, SecretKey: key, Endpoints: []string{g.emu.URL},
			Rate: rate, RetryInitial: 2 * time.Millisecond, RetryMax: 20 * time.Millisecond, AttemptTimeout: 2 * time.Second})
		if err != nil {
			tb.Fatal(err)
		}
		// Production defaults (the fetch wait, the session and heartbeat)
		// but the rebalance timeout: a quick start.
		w, err := consumer.New(consumer.Config{Brokers: kc.Brokers, Topic: g.topic, GroupID: "g-" + g.topic, DLQTopic: g.topic + ".dlq",
			AppRate: rate, RebalanceTimeout: 5 * time.Second,
			Metrics: metrics.New(reg), Logger: zap.NewNop()}, client)
		if err != nil {
			tb.Fatal(err)
		}
		g.running.Go(func() { _ = w.Run(ctx) })
	}
	deadline := time.Now().Add(30 * time.Second)
	for g.assigned() != partitions {
		if time.Now().After(deadline) {
			tb.Fatalf("the %d workers own %d of %d partitions after 30s", n, g.assigned(), partitions)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // past the start
	return g
}

func (g *idleGroup) stop() {
	g.cancel()
	g.running.Wait()
}

// assigned is the number of partitions the workers own between them.
func (g *idleGroup) assigned() int {
	n := 0.0
	for _, reg := range g.regs {
		n += gaugeValue(reg, "timbroadcast_assigned_partitions")
	}
	return int(n)
}

// gaugeValue reads an unlabelled gauge of reg (0 when absent).
func gaugeValue(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// produceTo writes one event to partition p of the topic and returns
// when the write began.
func (g *idleGroup) produceTo(tb testing.TB, p int, text string) time.Time {
	tb.Helper()
	m := textEvent("k", text)
	start := time.Now()
	resp, err := g.kc.Client().Produce(context.Background(), &kafka.ProduceRequest{Topic: g.topic, Partition: p,
		RequiredAcks: kafka.RequireAll, Records: kafka.NewRecordReader(kafka.Record{Value: kafka.NewBytes(m.Value)})})
	if err == nil {
		err = resp.Error
	}
	if err != nil {
		tb.Fatal(err)
	}
	return start
}

// delivered waits until text reached the emulator and returns when.
func (g *idleGroup) delivered(tb testing.TB, text string) time.Time {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, d := range g.emu.Delivered() {
			for _, el := range d.Elements() {
				var c sender.TextElem
				if json.Unmarshal(el.MsgContent, &c) == nil && c.Text == text {
					return d.At
				}
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
	tb.Fatalf("%q not delivered within 30s", text)
	return time.Time{}
}

// idleLatencies produces n events one at a time, gap apart, each to a
// random partition, and returns their produce-to-call times, sorted.
func (g *idleGroup) idleLatencies(tb testing.TB, n, partitions int, gap time.Duration) []time.Duration {
	var lat []time.Duration
	for i := range n {
		text := fmt.Sprintf("idle-%d", i)
		start := g.produceTo(tb, rand.IntN(partitions), text)
		lat = append(lat, g.delivered(tb, text).Sub(start))
		time.Sleep(gap)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat
}

// bursts produces n bursts of three events (three partitions at once),
// gap apart, and waits for them.
func (g *idleGroup) bursts(tb testing.TB, n, partitions int, gap time.Duration) {
	for i := range n {
		var texts []string
		for j, p := range rand.Perm(partitions)[:3] {
			text := fmt.Sprintf("burst-%d-%d", i, j)
			g.produceTo(tb, p, text)
			texts = append(texts, text)
		}
		for _, tx := range texts {
			g.delivered(tb, tx)
		}
		time.Sleep(gap)
	}
}

// idleRequests counts the broker requests over window with nothing to
// deliver: per second, and by API key.
func (g *idleGroup) idleRequests(window time.Duration) (map[string]int, float64) {
	before := g.rc.Snapshot()
	time.Sleep(window)
	counts, total := consumertest.Since(before, g.rc.Snapshot())
	return counts, float64(total) / window.Seconds()
}

// TestIdleReplicas: three replicas over 24 partitions at the default rate
// (1/s). Idle events leave at once, not at a slot's middle (the bound is
// loose: BenchmarkIdleReplicas measures), none is answered 10023, bursts
// of three events in one second neither; and idle replicas poll no
// offsets.
func TestIdleReplicas(t *testing.T) {
	consumertest.SkipShort(t)
	const partitions = 24
	g := startIdleGroup(t, 3, partitions, 1)
	lat := g.idleLatencies(t, 3, partitions, 2100*time.Millisecond)
	t.Logf("idle produce-to-call: %v", lat)
	if p50 := lat[len(lat)/2]; p50 > 300*time.Millisecond {
		t.Errorf("idle median %v, want well under the half second a slot's middle costs", p50)
	}
	g.bursts(t, 2, partitions, 3500*time.Millisecond)
	st := g.emu.Stats()
	if st.ByCode[10023] > 0 {
		t.Errorf("%d of %d calls answered 10023, want none", st.ByCode[10023], st.Calls)
	}
	counts, perSec := g.idleRequests(3 * time.Second)
	t.Logf("idle: %.1f requests/s for 3 replicas: %v", perSec, counts)
	if n := counts["ListOffsets"] + counts["OffsetFetch"]; n > 0 {
		t.Errorf("%d ListOffsets/OffsetFetch requests while idle, want none (no offset polling)", n)
	}
}

// BenchmarkIdleReplicas measures idle events and an idle group: three
// replicas over 24 partitions at 1/s (and one process over 24 partitions
// at 1/s and at 50/s): produce-to-call p50 and max over 20 events 2.1 s
// apart (0.1 s at 50/s); calls answered 10023 over 10 bursts of three
// events; broker requests per second per replica over 10 idle seconds.
//
//	go test -run '^$' -bench IdleReplicas -benchtime 1x ./consumer
func BenchmarkIdleReplicas(b *testing.B) {
	for _, c := range []struct {
		name     string
		replicas int
		rate     float64
		gap      time.Duration
	}{
		{"3-replicas-1/s", 3, 1, 2100 * time.Millisecond},
		{"1-process-1/s", 1, 1, 2100 * time.Millisecond},
		{"1-process-50/s", 1, 50, 100 * time.Millisecond},
	} {
		b.Run(c.name, func(b *testing.B) {
			const partitions = 24
			for range b.N {
				g := startIdleGroup(b, c.replicas, partitions, c.rate)
				g.idleLatencies(b, 2, partitions, c.gap) // every replica's first call: sessions started, logs read
				before, calls := g.rc.Snapshot(), g.emu.Stats().Calls
				lat := g.idleLatencies(b, 20, partitions, c.gap)
				perCall, total := consumertest.Since(before, g.rc.Snapshot())
				calls = g.emu.Stats().Calls - calls
				g.bursts(b, 10, partitions, time.Duration(3.5*float64(time.Second)/c.rate))
				st := g.emu.Stats()
				counts, perSec := g.idleRequests(10 * time.Second)
				b.Logf("%s: idle p50 %v max %v; %d of %d calls answered 10023; idle requests/s per replica %.2f: %v; "+
					"broker requests per idle call %.1f (all replicas): %v",
					c.name, lat[len(lat)/2], lat[len(lat)-1], st.ByCode[10023], st.Calls, perSec/float64(c.replicas), counts,
					float64(total)/float64(calls), perCall)
				b.ReportMetric(float64(total)/float64(calls), "req/call")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
				b.ReportMetric(100*float64(st.ByCode[10023])/float64(st.Calls), "%10023")
				b.ReportMetric(perSec/float64(c.replicas), "req/s/replica")
				b.ReportMetric(0, "ns/op")
				g.stop()
			}
		})
	}
}

// TestSlotTopic: the claims log is created at start when missing (one
// partition); a claims log of several partitions is refused at start,
// naming the setting; and when it cannot be created (no CREATE ACL) a
// worker alone still delivers everything.
func TestSlotTopic(t *testing.T) {
	kc := consumertest.StartFake(t)
	e := newEnv(t, kc, 2, sendertest.Options{})
	rw := e.start(nil)
	waitFor(t, 30*time.Second, "the claims log created", func() bool {
		parts, err := kc.Partitions(context.Background(), e.topic+".slots")
		return err == nil && len(parts) == 1
	})
	rw.stop(t)

	bad := kc.Topic(t, "slots", 3)
	cfg := e.workerConfig()
	cfg.SlotTopic, cfg.AppRate = bad, 1
	client, err := sender.New(e.senderConfig())
	if err != nil {
		t.Fatal(err)
	}
	w, err := consumer.New(cfg, client)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = w.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "KAFKA_SLOT_TOPIC") || !strings.Contains(err.Error(), "3 partitions") {
		t.Fatalf("Run with a claims log of 3 partitions = %v, want an error naming KAFKA_SLOT_TOPIC and its 3 partitions", err)
	}

	refused := newEnv(t, kc, 2, sendertest.Options{})
	noLog := newEnv(t, kc, 1, sendertest.Options{})
	// The delivered log exists (its own refusal is below): only the
	// claims log cannot be created.
	if err := kc.CreateTopic(context.Background(), refused.topic+".delivered", 1); err != nil {
		t.Fatal(err)
	}
	kc.Fake.ControlKey(int16(kmsg.CreateTopics), func(req kmsg.Request) (kmsg.Response, error, bool) {
		kc.Fake.KeepControl()
		resp := req.(*kmsg.CreateTopicsRequest).ResponseKind().(*kmsg.CreateTopicsResponse)
		for _, rt := range req.(*kmsg.CreateTopicsRequest).Topics {
			st := kmsg.NewCreateTopicsResponseTopic()
			st.Topic, st.ErrorCode = rt.Topic, kerr.TopicAuthorizationFailed.Code
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	want := refused.produceKeyed(keys, 2)
	refused.start(nil)
	refused.waitCommitted(30 * time.Second)
	checkExactlyOnce(t, deliveredTexts(refused.emu), want)
	if _, err := kc.Partitions(context.Background(), refused.topic+".slots"); err == nil {
		t.Error("the claims log exists: its creation was not refused, the case is not tested")
	}

	// Without a delivered log the worker would show events again after a
	// new group or a reset: it refuses to start, naming the setting.
	w, err = consumer.New(noLog.workerConfig(), client)
	if err != nil {
		t.Fatal(err)
	}
	err = w.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "KAFKA_DELIVERED_TOPIC") {
		t.Fatalf("Run without a delivered log that can be created = %v, want an error naming KAFKA_DELIVERED_TOPIC", err)
	}
}

// skewedClock is the real clock off by skew: a replica whose clock is
// wrong.
type skewedClock struct {
	clockwork.Clock
	skew time.Duration
}

func (c skewedClock) Now() time.Time                  { return c.Clock.Now().Add(c.skew) }
func (c skewedClock) Until(t time.Time) time.Duration { return t.Sub(c.Now()) }
func (c skewedClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// Two replicas whose call schedules' clocks are an hour ahead and an hour
// behind share the app's 5 calls/s: the grants follow the broker's clock
// (its stamp on every claim, read off each replica's clock through its
// appends' answers), so the rate holds with no 10023, and every event is
// delivered once.
func TestSkewedReplicas(t *testing.T) {
	kc := consumertest.StartFake(t)
	const rate = 5.0
	e := newEnv(t, kc, 6, sendertest.Options{Rate: rate, Limiter: sendertest.LimiterSpacing})
	keys := make([]string, 30)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%02d", i)
	}
	want := e.produceKeyed(keys, 4)
	for _, skew := range []time.Duration{time.Hour, -time.Hour} {
		e.start(func(c *consumer.Config, s *sender.Config) {
			c.AppRate, s.Rate = rate, 1000 // the schedule paces, not the client
			c.ScheduleClock = skewedClock{clockwork.NewRealClock(), skew}
		})
	}
	waitFor(t, 30*time.Second, "the first deliveries", func() bool { return e.emu.Stats().Delivered >= 5 })
	time.Sleep(3 * time.Second) // past the first rebalance: the steady state
	start, before := time.Now(), e.emu.Stats()
	const span = 10 * time.Second
	time.Sleep(span)
	after := e.emu.Stats()
	accepted := float64(after.ByCode[0]-before.ByCode[0]) / span.Seconds()
	t.Logf("replicas an hour ahead and an hour behind: %.2f accepted calls/s of %g, %d answered 10023", accepted, rate, after.ByCode[10023])
	if accepted < 0.8*rate || after.ByCode[10023] > 0 {
		t.Errorf("%.2f accepted calls/s and %d answered 10023 (since %v); want the rate and none", accepted, after.ByCode[10023], start)
	}
	waitFor(t, 2*time.Minute, "every event delivered", func() bool { return len(deliveredTexts(e.emu)) >= len(want) })
	checkExactlyOnce(t, deliveredTexts(e.emu), want)
}

// A claims topic created by a release before 0.11.0 stamps its records
// with their writers' clocks (CreateTime): the worker switches it to the
// broker's clock at start when it may; when the broker refuses, it warns
// with the command to run, and the schedule still works on the writers'
// clocks.
func TestClaimsLogSwitchedToBrokerClock(t *testing.T) {
	kc := consumertest.StartFake(t)
	for _, refuse := range []bool{false, true} {
		e := newEnv(t, kc, 2, sendertest.Options{})
		slots := e.topic + ".slots"
		if err := kc.CreateTopic(context.Background(), slots, 1); err != nil {
			t.Fatal(err)
		}
		if refuse {
			kc.Fake.ControlKey(int16(kmsg.IncrementalAlterConfigs), func(req kmsg.Request) (kmsg.Response, error, bool) {
				r := req.(*kmsg.IncrementalAlterConfigsRequest)
				resp := r.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
				for _, res := range r.Resources {
					rr := kmsg.NewIncrementalAlterConfigsResponseResource()
					rr.ResourceType, rr.ResourceName, rr.ErrorCode = res.ResourceType, res.ResourceName, kerr.TopicAuthorizationFailed.Code
					resp.Resources = append(resp.Resources, rr)
				}
				return resp, nil, true
			})
		}
		core, logs := observer.New(zap.InfoLevel)
		e.produceKeyed([]string{"a", "b", "c"}, 2)
		rw := e.start(func(c *consumer.Config, _ *sender.Config) { c.Logger = zap.New(core) })
		waitFor(t, 30*time.Second, "the events delivered", func() bool { return len(deliveredTexts(e.emu)) >= 6 })
		rw.stop(t)
		v, err := kc.TopicConfig(context.Background(), slots, "message.timestamp.type")
		if err != nil {
			t.Fatal(err)
		}
		switched := logs.FilterMessageSnippet("switched the claims log topic to the broker's clock").Len()
		warned := logs.FilterMessageSnippet("--add-config message.timestamp.type=LogAppendTime").Len()
		if !refuse && (v != "LogAppendTime" || switched != 1) {
			t.Errorf("a CreateTime claims topic: message.timestamp.type=%q after start, %d switch log line(s); want LogAppendTime and one", v, switched)
		}
		if refuse && (v == "LogAppendTime" || warned == 0) {
			t.Errorf("switch refused: message.timestamp.type=%q, %d warning(s) with the command; want it left and a warning", v, warned)
		}
	}
}
