package main_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// otlpReceiver is an OTLP/HTTP trace receiver: it decodes the protobuf
// export requests the real exporter sends and keeps every span.
type otlpReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
	// services counts spans by resource service.name.
	services map[string]int
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{services: map[string]int{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if req.URL.Path != "/v1/traces" || err != nil || req.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("OTLP export: %s %s (%s), %v", req.Method, req.URL.Path, req.Header.Get("Content-Type"), err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var ex coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &ex); err != nil {
			t.Errorf("OTLP export does not decode: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range ex.ResourceSpans {
			service := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.Key == "service.name" {
					service = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				r.spans = append(r.spans, ss.Spans...)
				r.services[service] += len(ss.Spans)
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(r.Close)
	return r
}

// named returns the spans whose name is name.
func (r *otlpReceiver) named(name string) []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range r.spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func attr(s *tracepb.Span, key string) (string, bool) {
	for _, a := range s.Attributes {
		if a.Key == key {
			v := a.GetValue()
			switch {
			case v.GetStringValue() != "":
				return v.GetStringValue(), true
			default:
				return fmt.Sprint(v.GetIntValue()), true
			}
		}
	}
	return "", false
}

func id(b []byte) string { return hex.EncodeToString(b) }

// runTraced runs the worker until it has committed the whole topic and
// recv has the spans of its n events, then stops it.
func runTraced(t *testing.T, env map[string]string, kc *consumertest.Cluster, emu *sendertest.Server, recv *otlpReceiver, topic string, n int) *worker {
	t.Helper()
	w := startWorker(t, env)
	ce := &crashEnv{kc: kc, emu: emu, topic: topic, env: env}
	ce.waitCommitted(t, time.Minute)
	deadline := time.Now().Add(30 * time.Second)
	for len(recv.named("process "+topic)) < n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	<-w.done
	return w
}

// TestTracing runs publish and the worker with OTLP/HTTP export to a test
// receiver: each event's span has the publish span (its traceparent) as
// parent; the API attempts are spans carrying ErrorCode (the first answer
// is 10002); the merged call links every member's span; the dead-letter
// and receipt writes are child spans; log lines carry the trace id.
func TestTracing(t *testing.T) {
	needBinary(t)
	recv := newOTLPReceiver(t)
	kc := consumertest.Start(t)
	emu := sendertest.NewServer(sendertest.Options{AppID: 1400000001, Admin: admin, SecretKey: key,
		Faults: sendertest.Faults{Codes: []int{10002}}})
	t.Cleanup(emu.Close)
	topic := kc.Topic(t, "traced", 1)
	dlq := kc.Topic(t, "traced-dlq", 1)
	receipts := kc.Topic(t, "traced-receipts", 1)
	env := baseEnv(kc.Brokers, topic, dlq, emu.URL)
	env["OTEL_EXPORTER_OTLP_ENDPOINT"] = recv.URL
	env["OTEL_BSP_SCHEDULE_DELAY"] = "100"
	env["KAFKA_RECEIPT_TOPIC"] = receipts
	env["TIM_MERGE"] = "on"
	env["TIM_RATE"] = "2"

	var lines []string
	for i := range 5 {
		lines = append(lines, fmt.Sprintf(`{"key":"t%d","event":{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"t%d"}}]}}`, i, i))
	}
	// One continues a trace of its own producer.
	lines = append(lines, `{"key":"t5","headers":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},"event":{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"t5"}}]}}`)
	out, stderr, code := runCmd(t, env, strings.Join(lines, "\n"), "publish", "--file", "-")
	if code != 0 {
		t.Fatalf("publish: exit %d\n%s\n%s", code, out, stderr)
	}
	malformed := kafka.Message{Key: []byte("bad"), Value: []byte(`{"MsgBody":"no"}`),
		Headers: []kafka.Header{{Key: "traceparent", Value: []byte("00-11111111111111111111111111111111-2222222222222222-01")}}}
	if err := kc.Produce(context.Background(), topic, malformed); err != nil {
		t.Fatal(err)
	}
	records, err := kc.ReadAll(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}

	w := runTraced(t, env, kc, emu, recv, topic, len(records))

	publish := map[string]*tracepb.Span{} // by span id
	for _, s := range recv.named("send " + topic) {
		publish[id(s.SpanId)] = s
	}
	if len(publish) != 6 {
		t.Errorf("%d publish spans, want 6", len(publish))
	}
	events := map[string]*tracepb.Span{} // by span id
	for _, s := range recv.named("process " + topic) {
		events[id(s.SpanId)] = s
	}
	if len(events) != len(records) {
		t.Fatalf("%d event spans, want %d", len(events), len(records))
	}
	byOffset := map[string]*tracepb.Span{}
	for _, s := range events {
		off, _ := attr(s, "messaging.kafka.offset")
		byOffset[off] = s
		if s.Kind != tracepb.Span_SPAN_KIND_CONSUMER {
			t.Errorf("event span kind %v", s.Kind)
		}
		if g, _ := attr(s, "messaging.consumer.group.name"); g != env["KAFKA_GROUP_ID"] {
			t.Errorf("event span group %q", g)
		}
	}
	for _, m := range records {
		s := byOffset[fmt.Sprint(m.Offset)]
		if s == nil {
			t.Errorf("no span for offset %d", m.Offset)
			continue
		}
		tp := strings.Split(wire.Header(m, "traceparent"), "-")
		if len(tp) != 4 || id(s.TraceId) != tp[1] || id(s.ParentSpanId) != tp[2] {
			t.Errorf("offset %d: span trace %s parent %s, record's traceparent %v", m.Offset, id(s.TraceId), id(s.ParentSpanId), tp)
		}
		if string(m.Key) != "bad" && string(m.Key) != "t5" && publish[id(s.ParentSpanId)] == nil {
			t.Errorf("offset %d: parent %s is not a publish span", m.Offset, id(s.ParentSpanId))
		}
		if string(m.Key) == "t5" && (tp[1] != "0af7651916cd43dd8448eb211c80319c" || publish[tp[2]] == nil) {
			t.Errorf("t5: publish did not continue the producer's trace: %v", tp)
		}
	}

	calls := recv.named("send_broadcast_msg merged")
	attempts := recv.named("send_broadcast_msg")
	failed := 0
	for _, a := range attempts {
		code, ok := attr(a, "timbroadcast.error_code")
		if !ok {
			t.Errorf("attempt span without timbroadcast.error_code")
		}
		if code == "10002" {
			failed++
			if a.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR {
				t.Errorf("10002 attempt status %v", a.Status)
			}
		}
	}
	if failed != 1 || len(attempts) != emu.Stats().Calls {
		t.Errorf("%d attempt spans (%d with 10002), emulator saw %d calls; want one span per call, one 10002", len(attempts), failed, emu.Stats().Calls)
	}
	parents := map[string]bool{}
	for _, s := range events {
		parents[id(s.SpanId)] = true
	}
	for _, c := range calls {
		parents[id(c.SpanId)] = true
	}
	for _, a := range attempts {
		if !parents[id(a.ParentSpanId)] {
			t.Errorf("attempt span's parent %s is neither an event nor a call span", id(a.ParentSpanId))
		}
	}
	if len(calls) == 0 {
		t.Fatal("no merged call span")
	}
	for _, c := range calls {
		n, _ := attr(c, "timbroadcast.call.events")
		if len(c.Links) < 2 || fmt.Sprint(len(c.Links)) != n {
			t.Errorf("merged call of %s events has %d links", n, len(c.Links))
		}
		for _, l := range c.Links {
			member := events[id(l.SpanId)]
			if member == nil {
				t.Errorf("merged call links %s, not an event span", id(l.SpanId))
				continue
			}
			back := false
			for _, ml := range member.Links {
				back = back || id(ml.SpanId) == id(c.SpanId)
			}
			if !back {
				t.Errorf("member span %s does not link back to its call", id(member.SpanId))
			}
		}
	}

	bad := byOffset[fmt.Sprint(records[len(records)-1].Offset)]
	dlqSpans := recv.named("send " + dlq)
	if len(dlqSpans) != 1 || id(dlqSpans[0].ParentSpanId) != id(bad.SpanId) {
		t.Errorf("dead-letter write spans %d, want 1 child of the malformed event's span", len(dlqSpans))
	}
	if o, _ := attr(bad, "timbroadcast.outcome"); o != "dead_lettered" {
		t.Errorf("malformed event's outcome attribute %q", o)
	}
	receiptSpans := recv.named("send " + receipts)
	if len(receiptSpans) != len(records) {
		t.Errorf("%d receipt write spans, want %d", len(receiptSpans), len(records))
	}
	for _, r := range receiptSpans {
		if events[id(r.ParentSpanId)] == nil {
			t.Errorf("receipt write span's parent %s is not an event span", id(r.ParentSpanId))
		}
	}
	if !strings.Contains(w.logs.String(), `"trace_id":"11111111111111111111111111111111"`) ||
		!strings.Contains(w.logs.String(), `"span_id":"`+id(bad.SpanId)+`"`) {
		t.Errorf("the dead-letter log line does not carry the event's trace_id and span_id:\n%s", w.logs.String())
	}
	recv.mu.Lock()
	if recv.services["timbroadcast"] == 0 {
		t.Errorf("spans by service %v, want service.name timbroadcast", recv.services)
	}
	recv.mu.Unlock()
}

// grpcReceiver is an OTLP/gRPC trace receiver.
type grpcReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (g *grpcReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			g.spans = append(g.spans, ss.Spans...)
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// TestTracingOverGRPC: OTEL_EXPORTER_OTLP_PROTOCOL=grpc exports over
// OTLP/gRPC; publish prints the trace id its span carries and writes it in
// the record's traceparent.
func TestTracingOverGRPC(t *testing.T) {
	needBinary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	recv := &grpcReceiver{}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, recv)
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()

	kc := consumertest.Start(t)
	topic := kc.Topic(t, "grpc-traced", 1)
	env := map[string]string{"KAFKA_BROKERS": strings.Join(kc.Brokers, ","), "KAFKA_TOPIC": topic,
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + l.Addr().String(), "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
	out, stderr, code := runCmd(t, env, "", "publish", "--text", "hello", "--key", "g1")
	if code != 0 {
		t.Fatalf("publish: exit %d\n%s\n%s", code, out, stderr)
	}
	recs, err := kc.ReadAll(context.Background(), topic)
	if err != nil || len(recs) != 1 {
		t.Fatalf("%d records, %v", len(recs), err)
	}
	tp := strings.Split(wire.Header(recs[0], "traceparent"), "-")
	recv.mu.Lock()
	defer recv.mu.Unlock()
	if len(tp) != 4 || len(recv.spans) != 1 || id(recv.spans[0].TraceId) != tp[1] || id(recv.spans[0].SpanId) != tp[2] {
		t.Fatalf("spans over gRPC %v, record's traceparent %v", recv.spans, tp)
	}
	if !strings.Contains(out, "(trace "+tp[1]+")") {
		t.Errorf("publish printed %q, want the trace id %s", out, tp[1])
	}
}

// TestTracingB3: with OTEL_PROPAGATORS=b3, publish writes a B3 header
// instead of traceparent, the worker's event spans take their parent from
// it (also from a B3 header a producer wrote itself), and receipts copy it.
func TestTracingB3(t *testing.T) {
	needBinary(t)
	recv := newOTLPReceiver(t)
	kc := consumertest.Start(t)
	emu := sendertest.NewServer(sendertest.Options{AppID: 1400000001, Admin: admin, SecretKey: key})
	t.Cleanup(emu.Close)
	topic := kc.Topic(t, "b3", 1)
	receipts := kc.Topic(t, "b3-receipts", 1)
	env := baseEnv(kc.Brokers, topic, kc.Topic(t, "b3-dlq", 1), emu.URL)
	env["OTEL_EXPORTER_OTLP_ENDPOINT"] = recv.URL
	env["OTEL_BSP_SCHEDULE_DELAY"] = "100"
	env["OTEL_PROPAGATORS"] = "b3"
	env["KAFKA_RECEIPT_TOPIC"] = receipts

	for i := range 2 {
		if out, stderr, code := runCmd(t, env, "", "publish", "--text", fmt.Sprint("b", i), "--key", fmt.Sprint("k", i)); code != 0 {
			t.Fatalf("publish: exit %d\n%s\n%s", code, out, stderr)
		}
	}
	own := kafka.Message{Key: []byte("own"), Value: []byte(`{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"own"}}]}`),
		Headers: []kafka.Header{{Key: "b3", Value: []byte("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")}}}
	if err := kc.Produce(context.Background(), topic, own); err != nil {
		t.Fatal(err)
	}
	records, err := kc.ReadAll(context.Background(), topic)
	if err != nil || len(records) != 3 {
		t.Fatalf("%d records, %v", len(records), err)
	}
	runTraced(t, env, kc, emu, recv, topic, len(records))

	spans := map[string]*tracepb.Span{} // by offset
	for _, s := range recv.named("process " + topic) {
		off, _ := attr(s, "messaging.kafka.offset")
		spans[off] = s
	}
	rs, err := kc.ReadAll(context.Background(), receipts)
	if err != nil || len(rs) != len(records) {
		t.Fatalf("%d receipts, %v", len(rs), err)
	}
	for i, m := range records {
		b3 := strings.Split(wire.Header(m, "b3"), "-")
		if len(b3) < 2 || wire.Header(m, "traceparent") != "" {
			t.Errorf("offset %d: headers %v, want b3 and no traceparent", m.Offset, m.Headers)
			continue
		}
		s := spans[fmt.Sprint(m.Offset)]
		if s == nil {
			t.Errorf("offset %d: no event span", m.Offset)
		} else if id(s.TraceId) != b3[0] || id(s.ParentSpanId) != b3[1] {
			t.Errorf("offset %d: event span trace %s parent %s, want %s %s", m.Offset, id(s.TraceId), id(s.ParentSpanId), b3[0], b3[1])
		}
		if got := wire.Header(rs[i], "b3"); got != wire.Header(m, "b3") {
			t.Errorf("receipt of offset %d: b3 %q, want the event's %q", m.Offset, got, wire.Header(m, "b3"))
		}
	}
}
