package main_test

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// TestLeanBuild: the build with the tag lean (make build-lean) links none
// of the modules of the four parts it leaves out. Asking for one of them
// fails at start with exit 2, naming the setting (OTLP tracing,
// AWS_MSK_IAM, the demo without --brokers), and a record of a Protobuf
// schema is dead-lettered as decode_failed, naming the build. Everything
// else works: the console exporter, and events through the Schema
// Registry (Avro) mapped and delivered. The start log lists what the
// build leaves out.
func TestLeanBuild(t *testing.T) {
	needBinary(t)
	bin := leanBinary(t)
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range info.Deps {
		for _, out := range []string{"github.com/aws/aws-sdk-go-v2", "google.golang.org/grpc", "github.com/bufbuild/protocompile",
			"github.com/twmb/franz-go/pkg/kfake", "go.opentelemetry.io/otel/exporters/otlp"} {
			if strings.HasPrefix(d.Path, out) {
				t.Errorf("the lean build links %s", d.Path)
			}
		}
	}

	reg := consumertest.NewRegistry(t)
	const avroSchema = `{"type":"record","name":"Gift","namespace":"shop","fields":[{"name":"user","type":"string"}]}`
	reg.Add(1, "AVRO", "gifts-value", avroSchema)
	reg.Add(2, "PROTOBUF", "likes-value", `syntax = "proto3"; package shop; message Like { string user = 1; }`)
	ce := newCrashEnv(t, 1, 0, sendertest.Options{}, map[string]string{
		"KAFKA_SCHEMA_REGISTRY_URL": reg.URL, "TIM_MAP": `"gift from \(.user)"`,
	})

	for _, c := range []struct {
		env   map[string]string
		args  []string
		names string
	}{
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, []string{"run"}, "OTEL_TRACES_EXPORTER"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, []string{"run"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{map[string]string{"KAFKA_SASL_MECHANISM": "AWS_MSK_IAM", "AWS_REGION": "eu-west-1"}, []string{"run"}, "KAFKA_SASL_MECHANISM"},
		{nil, []string{"demo"}, "--brokers"},
	} {
		env := maps.Clone(ce.env)
		maps.Copy(env, c.env)
		_, stderr, code := runCmdOf(t, bin, env, "", c.args...)
		if code != 2 || !strings.Contains(stderr, c.names) || !strings.Contains(stderr, "lean") {
			t.Errorf("%v with %v: exit %d, %q; want 2 naming %s and the build", c.args, c.env, code, stderr, c.names)
		}
	}

	hdr := func(id int, index []int, payload []byte) []byte {
		return consumertest.RegistryValue(t, id, index, payload)
	}
	gift, err := avro.Marshal(avro.MustParse(avroSchema), map[string]any{"user": "ann"})
	if err != nil {
		t.Fatal(err)
	}
	like := []byte{0x0a, 0x03, 'b', 'o', 'b'} // user "bob"
	var msgs []kafka.Message
	for i, v := range [][]byte{hdr(1, nil, gift), hdr(2, []int{0}, like)} {
		msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprint(i)), Value: v})
	}
	if err := ce.kc.Produce(context.Background(), ce.topic, msgs...); err != nil {
		t.Fatal(err)
	}
	env := maps.Clone(ce.env)
	env["OTEL_TRACES_EXPORTER"] = "console"
	w := startWorkerOf(t, bin, env)
	ce.waitCommitted(t, time.Minute)
	checkTexts(t, deliveredTextsOf(ce.emu), []string{"gift from ann"})
	dl, err := ce.kc.ReadAll(context.Background(), ce.env["KAFKA_DLQ_TOPIC"])
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 1 || wire.Header(dl[0], wire.HeaderDLQReason) != wire.ReasonDecodeFailed ||
		!strings.Contains(wire.Header(dl[0], wire.HeaderDLQInfo), "lean") {
		t.Errorf("dead letters %v, want the Protobuf record as decode_failed naming the build", dl)
	}
	if !strings.Contains(w.logs.String(), `"left_out_of_build":["otlp","aws_msk_iam","protobuf_schemas","embedded_broker"]`) {
		t.Errorf("the start log does not list the parts left out; logs:\n%s", w.logs.String())
	}
	if !strings.Contains(w.logs.String(), `"SpanContext"`) {
		t.Errorf("no span on the console with OTEL_TRACES_EXPORTER=console; logs:\n%s", w.logs.String())
	}
}
