package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// Demo credentials of the embedded emulator.
const (
	demoAppID = 1400000000
	demoAdmin = "administrator"
)

// demoSample is one sample event of the demo.
type demoSample struct {
	from  string
	value string
	// text is what the demo prints for it.
	text string
}

func demoSamples() []demoSample {
	text := func(from, s string) demoSample {
		v := map[string]any{"MsgBody": []sender.Element{sender.Text(s)}}
		if from != "" {
			v["From_Account"] = from
		}
		b, _ := json.Marshal(v)
		return demoSample{from: from, value: string(b), text: s}
	}
	custom := `{"From_Account":"ops","MsgBody":[{"MsgType":"TIMCustomElem","MsgContent":{"Data":"{\"type\":\"gift_rain\",\"seconds\":30}","Desc":"gift rain"}}],"CloudCustomData":"campaign=spring"}`
	return []demoSample{
		text("host_001", "Welcome to tonight's live show! Doors open in 5 minutes."),
		text("", "Maintenance notice: rooms restart at 02:00 UTC for 5 minutes."),
		{from: "ops", value: custom, text: `custom element {"type":"gift_rain","seconds":30}`},
		text("host_002", "Flash sale: 20% off in every room for the next hour."),
		{from: "host_003", value: `{"From_Account":"host_003","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"Typo in the event:"}}],"Priorty":"high"}`, text: "a malformed event (unknown field Priorty)"},
		text("host_001", "Thanks for watching, see you tomorrow!"),
	}
}

// demoCmd is `timbroadcast demo`: broker, emulator and worker in-process
// (any of them can be a real one); it publishes sample announcements and
// shows each arriving.
type demoCmd struct {
	kafkaAccess // with a connection: brokers given, used instead of the embedded broker
	topic       string
	api         *sender.Config // nil: the embedded emulator
	rate        float64
	follow      bool
	// apps is how many apps the embedded emulator hosts (--apps).
	apps    int
	logger  *zap.Logger
	stdout  io.Writer
	tracing *tracingSettings
}

// parseDemo resolves the demo's settings. They come from flags only, so the
// demo never picks up a real app from the environment by accident; only
// tracing follows the standard OTEL_* variables, like every command.
func parseDemo(p process, args []string) (*demoCmd, error) {
	s := newSettings("demo", func(string) string { return "" }, p.stderr)
	tr := addTracingSettings(s, p)
	k := addKafkaSettings(s, "")
	k.brokers.usage = "use this Kafka (host:port, comma-separated) instead of the in-process broker"
	topic := s.add("topic", "", "timbroadcast-demo", "topic for the demo events (created if missing; dead letters go to <topic>.dlq)")
	a := addAPISettings(s)
	follow := s.boolFlag("follow", "keep running after the samples, delivering events you publish yourself, until Ctrl-C")
	apps := s.add("apps", "", "1", "how many apps the embedded emulator hosts (2 or more: one deployment serving several apps, "+
		"one of them switched off mid-run while the others flow; README \"Several apps\")")
	if err := s.parse(args); err != nil {
		return nil, err
	}
	c := &demoCmd{topic: topic.String(), follow: *follow, logger: p.logger, stdout: p.stdout}
	var err error
	if c.apps, err = strconv.Atoi(apps.String()); err != nil || c.apps < 1 || c.apps > 100 {
		return nil, apps.errorf("%q must be a number of apps from 1 to 100", apps.val)
	}
	if c.tracing, err = tr.resolve(); err != nil {
		return nil, err
	}
	if p.getenv("LOG_LEVEL") == "" {
		c.logger = c.logger.WithOptions(zap.IncreaseLevel(zap.ErrorLevel))
	}
	c.kafkaAccess = kafkaAccess{settings: k, log: c.logger}
	if !k.given() && !embeddedBuilt {
		return nil, errors.New("--brokers: the in-process broker is not in this build (built with -tags noembedded or lean); give --brokers host:port to run the demo against your Kafka")
	}
	if k.given() {
		if c.kafkaAccess, err = k.access(c.logger); err != nil {
			return nil, err
		}
	}
	if a.endpointGiven() && c.apps > 1 {
		return nil, apps.errorf("several apps are hosted by the embedded emulator only; leave out --endpoint and --region")
	}
	if a.endpointGiven() {
		cfg, err := a.config()
		if err != nil {
			return nil, err
		}
		c.api, c.rate = &cfg, cfg.Rate
	} else if c.rate, err = a.rate.positiveFloat(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *demoCmd) secrets() []string {
	var out []string
	if c.api != nil {
		out = append(out, c.api.SecretKey)
	}
	return append(out, c.kafkaAccess.secrets()...)
}

// Run runs the demo until every sample is final (with --follow, until ctx
// ends).
func (c *demoCmd) Run(ctx context.Context) error {
	stdout, logger := c.stdout, c.logger

	// Kafka.
	conn := c.conn
	kafkaDesc := ""
	if conn != nil {
		if err := c.check(ctx); err != nil {
			return err
		}
		kafkaDesc = "your broker at " + strings.Join(conn.Brokers, ",")
	} else {
		brokers, stop, err := startEmbedded()
		if err != nil {
			return err
		}
		defer stop()
		conn = kafkaconn.New(brokers, nil)
		kafkaDesc = "in-process Kafka-protocol broker (kfake) at " + strings.Join(brokers, ",")
	}
	dlqTopic := wire.DeadLetterTopic(c.topic)
	receiptTopic := c.topic + ".receipts"
	for _, t := range []struct {
		name  string
		parts int
	}{{c.topic, 3}, {dlqTopic, 1}, {receiptTopic, 1}} {
		if err := conn.CreateTopic(ctx, t.name, t.parts); err != nil {
			return err
		}
	}

	// The API.
	var scfg sender.Config
	var emu *sendertest.Server
	apiDesc := ""
	if c.api != nil {
		scfg = *c.api
		apiDesc = "Tencent Cloud Chat at " + strings.Join(scfg.Endpoints, ", ")
	} else {
		keyBytes := make([]byte, 32)
		_, _ = rand.Read(keyBytes)
		scfg.Rate = c.rate
		scfg.AppID, scfg.Admin, scfg.SecretKey = demoAppID, demoAdmin, hex.EncodeToString(keyBytes)
		emu = sendertest.NewServer(sendertest.Options{AppID: demoAppID, Admin: demoAdmin, SecretKey: scfg.SecretKey, Rate: scfg.Rate})
		defer emu.Close()
		scfg.Endpoints = []string{emu.URL}
		apiDesc = "API emulator at " + emu.URL
	}
	scfg.Logger = logger.Named("sender")
	client, err := sender.New(scfg)
	if err != nil {
		return configError{err}
	}
	defer client.Close()
	var hosted *demoApps
	if c.apps > 1 {
		if hosted, err = newDemoApps(c.apps, scfg); err != nil {
			return err
		}
		defer hosted.close()
		apiDesc = fmt.Sprintf("API emulator hosting %d apps at %s", c.apps, hosted.emu.URL)
	}

	tp, stopTracing, err := c.tracing.start(ctx, logger)
	if err != nil {
		return err
	}
	defer stopTracing()
	outcomes := make(chan consumer.Outcome, 64)
	group := "timbroadcast-demo"
	ccfg := consumer.Config{
		Brokers: conn.Brokers, Dialer: conn.Dialer, Balancer: conn.Balancer, Topic: c.topic, GroupID: group, DLQTopic: dlqTopic, ReceiptTopic: receiptTopic,
		MaxWait: 250 * time.Millisecond, Logger: logger.Named("consumer"),
		SessionTimeout: 6 * time.Second, DrainTimeout: 5 * time.Second,
		OnOutcome:      func(o consumer.Outcome) { outcomes <- o },
		TracerProvider: tp, Propagator: c.tracing.propagator,
	}
	var one consumer.Sender = client
	if hosted != nil {
		ccfg.Apps, one = hosted.apps, nil
		ccfg.PauseInitial, ccfg.PauseMax = 200*time.Millisecond, time.Second
	}
	w, err := consumer.New(ccfg, one)
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "timbroadcast demo\n  Kafka   %s\n          topic %s (3 partitions), dead letters to %s, receipts to %s\n  API     %s (%g call/s)\n  Worker  consumer group %s\n\n",
		kafkaDesc, c.topic, dlqTopic, receiptTopic, apiDesc, scfg.Rate, group)
	receiptsFrom, err := conn.Ends(ctx, receiptTopic)
	if err != nil {
		return err
	}

	wctx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = w.Run(wctx) })
	defer wg.Wait()

	// Publish the samples with keys unique to this run.
	runID := make([]byte, 4)
	_, _ = rand.Read(runID)
	samples := demoSamples()
	pending := map[string]demoSample{}
	var msgs []kafka.Message
	for i, smp := range samples {
		k := fmt.Sprintf("demo-%s-%d", hex.EncodeToString(runID), i+1)
		pending[k] = smp
		msgs = append(msgs, kafka.Message{Key: []byte(k), Value: []byte(smp.value)})
	}
	if hosted != nil {
		pending, msgs = hosted.samples(hex.EncodeToString(runID))
		fmt.Fprintf(stdout, "Apps: %s; each record names its app in the header %s. %s is switched off (10007) after its first delivery.\n",
			strings.Join(hosted.names(), ", "), wire.HeaderApp, hosted.off)
	}
	if hosted == nil {
		fmt.Fprintf(stdout, "Publishing %d sample announcements (one is malformed on purpose)...\n", len(msgs))
	} else {
		fmt.Fprintf(stdout, "Publishing %d sample announcements...\n", len(msgs))
	}
	start := time.Now()
	spans := startPublishSpans(ctx, tp, c.tracing.propagator, c.topic, msgs)
	err = conn.Produce(ctx, c.topic, msgs...)
	for _, span := range spans {
		span.End()
	}
	if err != nil {
		return err
	}

	var delivered, deadLettered, other int
	reasons := map[string]int{}
	show := func(o consumer.Outcome) {
		smp, ours := pending[string(o.Key)]
		if ours {
			delete(pending, string(o.Key))
		} else {
			other++
			smp.text = summarize(o)
		}
		where := fmt.Sprintf("p%d@%d", o.Partition, o.Offset)
		if o.App != "" {
			where = o.App + " " + where
			hosted.outcome(stdout, o)
		}
		took := time.Since(o.Produced).Round(time.Millisecond)
		if o.Delivered {
			delivered++
			from := "admin"
			if o.Message != nil && o.Message.FromAccount != "" {
				from = o.Message.FromAccount
			}
			fmt.Fprintf(stdout, "  delivered      %-7s from %-9s Random %-10d MsgSeq %-4d %6s after produce  %s\n",
				where, from, o.Random, o.MsgSeq, took, smp.text)
			return
		}
		deadLettered++
		reasons[o.DeadLetter.Reason]++
		fmt.Fprintf(stdout, "  dead-lettered  %-7s reason %s: %s  (%s)\n", where, o.DeadLetter.Reason, o.DeadLetter.Info, smp.text)
	}

	// Until every sample is final (or Ctrl-C); with --follow, until Ctrl-C.
	following := false
wait:
	for c.follow || len(pending) > 0 {
		if len(pending) == 0 && !following {
			following = true
			fmt.Fprintf(stdout, "\nAll samples are final. Following %s: publish your own events (README \"Event format\"); Ctrl-C stops.\n", c.topic)
		}
		select {
		case o := <-outcomes:
			show(o)
		case <-ctx.Done():
			break wait
		}
	}
	elapsed := time.Since(start)
	stopWorker()
	wg.Wait()
	// Outcomes reported during the drain.
	for {
		select {
		case o := <-outcomes:
			show(o)
			continue
		default:
		}
		break
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return runErr
	}

	committed, cerr := conn.Committed(context.Background(), group, c.topic)
	ends, eerr := conn.Ends(context.Background(), c.topic)
	commitNote := "offsets committed for every partition"
	if cerr != nil || eerr != nil {
		commitNote = "offsets: could not read them back"
	} else {
		for p, end := range ends {
			if end > 0 && committed[p] != end {
				commitNote = fmt.Sprintf("partition %d committed up to %d of %d", p, committed[p], end)
			}
		}
	}
	var rs []string
	for r, n := range reasons {
		rs = append(rs, fmt.Sprintf("%d %s", n, r))
	}
	sort.Strings(rs)
	fmt.Fprintf(stdout, "\nSummary: %d delivered, %d dead-lettered", delivered, deadLettered)
	if len(rs) > 0 {
		fmt.Fprintf(stdout, " (%s)", strings.Join(rs, ", "))
	}
	fmt.Fprintf(stdout, " in %s; %s.\n", elapsed.Round(time.Millisecond), commitNote)
	if hosted != nil {
		hosted.summary(stdout)
	}
	if emu != nil && hosted == nil {
		st := emu.Stats()
		fmt.Fprintf(stdout, "Emulator: %d calls, %d messages delivered, %d duplicates discarded, %d answered 10023.\n",
			st.Calls, st.Delivered, st.Duplicates, st.ByCode[10023])
	}
	if rs, err := conn.ReadFrom(context.Background(), receiptTopic, receiptsFrom); err == nil && len(rs) > 0 {
		fmt.Fprintf(stdout, "Receipts: %d written to %s (README \"Receipts\"), the first:\n  %s\n", len(rs), receiptTopic, rs[0].Value)
	}
	if tp != nil {
		fmt.Fprintf(stdout, "Traces: exported (README \"Traces\"); the first sample's trace id is %s.\n", spans[0].SpanContext().TraceID())
	}
	if len(pending) > 0 {
		return fmt.Errorf("demo interrupted: %d sample(s) not yet final", len(pending))
	}
	fmt.Fprintf(stdout, "Where to look: a worker (`timbroadcast run`) serves /metrics, /healthz and /readyz on HTTP_ADDR (:9090);\n"+
		"  `timbroadcast status --brokers %s --topic %s --group %s` shows the group: members, lag, calls in flight\n"+
		"  (while the demo runs: --follow); deploy/README.md \"Watching it\" has a Grafana dashboard and alert rules.\n",
		strings.Join(conn.Brokers, ","), c.topic, group)
	fmt.Fprintln(stdout, "Next: `timbroadcast run --help` for the worker's settings; README.md for the event format and guarantees.")
	return nil
}

// summarize describes an event the demo did not publish itself.
func summarize(o consumer.Outcome) string {
	if o.Message == nil || len(o.Message.MsgBody) == 0 {
		return "(your event)"
	}
	el := o.Message.MsgBody[0]
	if el.MsgType == sender.TypeText {
		var t sender.TextElem
		if json.Unmarshal(el.MsgContent, &t) == nil {
			return t.Text
		}
	}
	return el.MsgType
}
