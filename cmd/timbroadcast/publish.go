package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

// publishLine is the envelope form of a JSON Lines record: {"key": ...,
// "event": {...}, "expires_at": ..., "headers": {...}}. A line without an
// "event" field is a bare event (no key).
type publishLine struct {
	Key       string            `json:"key"`
	Event     json.RawMessage   `json:"event"`
	ExpiresAt string            `json:"expires_at"`
	Headers   map[string]string `json:"headers"`
}

// publishCmd is `timbroadcast publish`: it produces one announcement from
// flags, or many from a JSON Lines file, after validating every one with
// the worker's rules (all or nothing).
type publishCmd struct {
	kafkaAccess // no connection with --dry-run and no brokers
	topic       string
	file        string // "" for a single event from flags; "-" for stdin
	single      kafka.Message
	dryRun      bool
	stdout      io.Writer
	stderr      io.Writer
	bars        bool
	tracing     *tracingSettings
	wait        receiptWait // for the receipts of the published events
}

// parsePublish resolves the publish command's settings; a single event
// given by flags is validated here.
func parsePublish(p process, args []string) (*publishCmd, error) {
	s := p.settings("publish")
	tr := addTracingSettings(s, p)
	k := addKafkaSettings(s, "")
	t := addTopicSettings(s, "topic of broadcast events", "")
	file := s.add("file", "", "", "JSON Lines file of events ('-' for standard input): each line an event, or {\"key\":...,\"event\":{...},\"expires_at\":...}")
	text := s.add("text", "", "", "publish one TIMTextElem announcement with this text")
	custom := s.add("custom-data", "", "", "publish one TIMCustomElem announcement with this Data")
	desc := s.add("desc", "", "", "Desc of the custom element (with --custom-data)")
	key := s.add("key", "", "", "record key: the event's identity (reuse it to re-publish the same event)")
	from := s.add("from", "", "", "From_Account shown to receivers")
	cloud := s.add("cloud-custom-data", "", "", "CloudCustomData delivered with the message")
	expires := s.add("expires-at", "", "", "RFC 3339 time after which the event must not be sent")
	ttl := s.add("ttl", "", "", "like --expires-at, relative to now (e.g. 10m)")
	dryRun := s.boolFlag("dry-run", "validate only; publish nothing")
	urgent := s.boolFlag("urgent", "publish to the urgent lane (KAFKA_URGENT_TOPIC): sent before any waiting bulk event")
	wait := addWaitSettings(s)
	if err := s.parse(args); err != nil {
		return nil, err
	}
	c := &publishCmd{file: file.String(), dryRun: *dryRun, stdout: p.stdout, stderr: p.stderr, bars: p.terminal}
	c.kafkaAccess = kafkaAccess{settings: k, log: p.logger}
	var err error
	if k.given() || !c.dryRun {
		if c.kafkaAccess, err = k.access(p.logger); err != nil {
			return nil, err
		}
	}
	if *urgent {
		if c.topic = t.urgent.String(); c.topic == "" && !c.dryRun {
			return nil, t.urgent.errorf("is required with --urgent")
		}
	} else if t.topic.String() != "" || !c.dryRun {
		if c.topic, _, err = t.resolve(); err != nil {
			return nil, err
		}
	}
	if c.tracing, err = tr.resolve(); err != nil {
		return nil, err
	}
	if c.wait, err = wait.resolve(c.dryRun, c.topic); err != nil {
		return nil, err
	}
	single := text.String() != "" || custom.String() != ""
	if single == (c.file != "") {
		return nil, errors.New("give --text or --custom-data for one announcement, or --file for many")
	}
	if single {
		if c.single, err = singleEvent(text.String(), custom.String(), desc.String(), from.String(), cloud.String(), key.String(), expires.String(), ttl); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Run validates the file's events (if any) and publishes.
func (c *publishCmd) Run(ctx context.Context) error {
	msgs := []kafka.Message{c.single}
	if c.file != "" {
		r, err := openInput(c.file, os.Stdin)
		if err != nil {
			return err
		}
		defer r.Close()
		var bad []string
		msgs, bad, err = readEventLines(r)
		if err != nil {
			return err
		}
		if len(bad) > 0 {
			for _, b := range bad {
				fmt.Fprintln(c.stderr, b)
			}
			return fmt.Errorf("%d invalid line(s) in %s; nothing was published", len(bad), c.file)
		}
	}
	if c.dryRun {
		fmt.Fprintf(c.stdout, "%d event(s) valid; nothing published (--dry-run)\n", len(msgs))
		return nil
	}

	if err := c.check(ctx); err != nil {
		return err
	}
	tp, stopTracing, err := c.tracing.start(ctx, c.log)
	if err != nil {
		return err
	}
	defer stopTracing()
	w := c.conn.Writer(c.topic)
	w.BatchTimeout, w.BatchSize = 5*time.Millisecond, 200
	defer w.Close()
	await, err := c.wait.start(ctx, c.conn, c.topic, w)
	if err != nil {
		return err
	}
	spans := startPublishSpans(ctx, tp, c.tracing.propagator, c.topic, msgs)
	bar := newBar(len(msgs), "publishing", c.stderr, c.bars)
	const chunk = 200
	for i := 0; i < len(msgs); i += chunk {
		batch := msgs[i:min(i+chunk, len(msgs))]
		err := w.WriteMessages(ctx, batch...)
		for _, span := range spans[i:min(i+chunk, len(msgs))] {
			if err != nil {
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}
		if err != nil {
			return fmt.Errorf("publish to %s: %d of %d published before: %w", c.topic, i, len(msgs), err)
		}
		_ = bar.Add(len(batch))
	}
	_ = bar.Finish()
	if len(msgs) == 1 {
		fmt.Fprintf(c.stdout, "published 1 event(s) to %s (trace %s)\n", c.topic, spans[0].SpanContext().TraceID())
	} else {
		fmt.Fprintf(c.stdout, "published %d event(s) to %s\n", len(msgs), c.topic)
	}
	return await.wait(ctx, c.stdout)
}

// startPublishSpans starts a producer span per record and writes its trace
// context into the record's headers with prop (by default W3C traceparent,
// and tracestate and baggage when the record's own headers had them): the
// worker's spans of the event become its children. A record whose headers
// already carry a trace context continues that trace. With tracing off (tp
// nil) the trace context is written all the same, so the worker's trace and
// log lines carry the trace id that publish prints.
func startPublishSpans(ctx context.Context, tp trace.TracerProvider, prop propagation.TextMapPropagator, topic string, msgs []kafka.Message) []trace.Span {
	if tp == nil {
		tp = sdktrace.NewTracerProvider() // ids only: no exporter
	}
	tracer := tp.Tracer("github.com/timbroadcast/timbroadcast/cmd/timbroadcast")
	spans := make([]trace.Span, len(msgs))
	for i := range msgs {
		carrier := wire.HeaderCarrier{Headers: &msgs[i].Headers}
		sctx, span := tracer.Start(prop.Extract(ctx, carrier), "send "+topic, trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(semconv.MessagingSystemKafka, semconv.MessagingOperationTypeSend, semconv.MessagingOperationName("send"),
				semconv.MessagingDestinationName(topic), semconv.MessagingKafkaMessageKey(string(msgs[i].Key)),
				semconv.MessagingMessageBodySize(len(msgs[i].Value))))
		prop.Inject(sctx, carrier)
		spans[i] = span
	}
	return spans
}

func singleEvent(text, custom, desc, from, cloud, key, expires string, ttl *setting) (kafka.Message, error) {
	var el sender.Element
	if text != "" && custom != "" {
		return kafka.Message{}, errors.New("give --text or --custom-data, not both (one element each; use --file for more)")
	}
	if text != "" {
		el = sender.Text(text)
	} else {
		var err error
		if el, err = sender.NewElement(sender.TypeCustom, sender.CustomElem{Data: custom, Desc: desc}); err != nil {
			return kafka.Message{}, err
		}
	}
	ev := map[string]any{"MsgBody": []sender.Element{el}}
	if from != "" {
		ev["From_Account"] = from
	}
	if cloud != "" {
		ev["CloudCustomData"] = cloud
	}
	value, _ := json.Marshal(ev)
	m := kafka.Message{Value: value}
	if key != "" {
		m.Key = []byte(key)
	}
	if ttl.String() != "" {
		d, err := ttl.duration()
		if err != nil {
			return m, err
		}
		expires = time.Now().Add(d).UTC().Format(time.RFC3339)
	}
	if expires != "" {
		m.Headers = append(m.Headers, kafka.Header{Key: wire.HeaderExpiresAt, Value: []byte(expires)})
	}
	if _, err := wire.DecodeEvent(wire.RecordOf(m)); err != nil {
		return m, fmt.Errorf("invalid announcement: %w", err)
	}
	return m, nil
}

// openInput opens --file: the named file, or stdin for "-".
func openInput(file string, stdin io.Reader) (io.ReadCloser, error) {
	if file == "-" {
		return io.NopCloser(stdin), nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, configError{fmt.Errorf("--file: %w", err)}
	}
	return f, nil
}

// readEventLines parses and validates a JSON Lines stream (readLines,
// then every value read as an event). It returns the records and, for
// every invalid line, a message naming its number.
func readEventLines(r io.Reader) ([]kafka.Message, []string, error) {
	lines, bad, err := readLines(r)
	if err != nil {
		return nil, nil, err
	}
	var msgs []kafka.Message
	for _, l := range lines {
		if _, err := wire.DecodeEvent(wire.RecordOf(l.Message)); err != nil {
			bad = append(bad, fmt.Sprintf("line %d: %v", l.line, err))
			continue
		}
		msgs = append(msgs, l.Message)
	}
	return msgs, bad, nil
}

// line is a record read from a JSON Lines stream, with its line number.
type line struct {
	kafka.Message
	line int
}

// readLines parses a JSON Lines stream of records, each a bare value or
// an envelope ({"key":...,"event":...,"headers":...}). Blank lines and
// lines starting with # are skipped. It returns the records and, for
// every line that is not one, a message naming its number.
func readLines(r io.Reader) ([]line, []string, error) {
	var out []line
	var bad []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 || text[0] == '#' {
			continue
		}
		m, err := parseEventLine(text)
		if err != nil {
			bad = append(bad, fmt.Sprintf("line %d: %v", n, err))
			continue
		}
		out = append(out, line{Message: m, line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read events: %w", err)
	}
	return out, bad, nil
}

func parseEventLine(line []byte) (kafka.Message, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(line, &probe); err != nil {
		return kafka.Message{}, fmt.Errorf("not a JSON object: %v", err)
	}
	if _, ok := probe["event"]; !ok {
		return kafka.Message{Value: append([]byte(nil), line...)}, nil
	}
	var pl publishLine
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pl); err != nil {
		return kafka.Message{}, fmt.Errorf("envelope: %v (fields: key, event, expires_at, headers)", err)
	}
	m := kafka.Message{Value: []byte(pl.Event)}
	if pl.Key != "" {
		m.Key = []byte(pl.Key)
	}
	for k, v := range pl.Headers {
		m.Headers = append(m.Headers, kafka.Header{Key: k, Value: []byte(v)})
	}
	if pl.ExpiresAt != "" {
		m.Headers = append(m.Headers, kafka.Header{Key: wire.HeaderExpiresAt, Value: []byte(pl.ExpiresAt)})
	}
	return m, nil
}

// newBar returns a progress bar on a terminal, and a silent one otherwise.
func newBar(total int, what string, w io.Writer, visible bool) *progressbar.ProgressBar {
	return progressbar.NewOptions(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetVisibility(visible),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}
