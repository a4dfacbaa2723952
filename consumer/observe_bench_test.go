package consumer_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/sender"
)

// BenchmarkEventCost measures the cost per event of the whole worker
// (fetch, decode, API call to the emulator, commit) without pacing, with
// tracing off and on (every span exported over OTLP/HTTP to a local sink),
// and with receipts. It reports CPU time of the whole test process per
// event (worker, emulator and in-process broker together: the differences
// between the cases are what tracing and receipts cost) and wall time per
// event.
//
//	go test -run '^$' -bench EventCost -benchtime 3x -count 5 ./consumer
func BenchmarkEventCost(b *testing.B) {
	const n = 2000
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer sink.Close()
	for _, mode := range []string{"tracing=off", "tracing=on", "receipts"} {
		b.Run(mode, func(b *testing.B) {
			var cpu, wall time.Duration
			for b.Loop() {
				e := benchEnv(b, 3)
				msgs := make([]kafka.Message, n)
				for i := range msgs {
					msgs[i] = textEvent(fmt.Sprintf("k%d", i%30), fmt.Sprintf("event %d", i))
					msgs[i].Headers = []kafka.Header{{Key: "traceparent", Value: []byte(fmt.Sprintf("00-%032x-%016x-01", i+1, i+1))}}
				}
				if err := e.kafka.Produce(context.Background(), e.topic, msgs...); err != nil {
					b.Fatal(err)
				}
				cfg := consumer.Config{Brokers: e.kafka.Brokers, Topic: e.topic, GroupID: e.group, DLQTopic: e.dlq}
				var tp *sdktrace.TracerProvider
				switch mode {
				case "tracing=on":
					exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(sink.URL), otlptracehttp.WithInsecure())
					if err != nil {
						b.Fatal(err)
					}
					tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
					cfg.TracerProvider = tp
				case "receipts":
					cfg.ReceiptTopic = e.topic + ".receipts"
					if err := e.kafka.CreateTopic(context.Background(), cfg.ReceiptTopic, 3); err != nil {
						b.Fatal(err)
					}
				}
				client, err := sender.New(sender.Config{AppID: appID, Admin: admin, SecretKey: key, Endpoints: []string{e.emu.URL}, Rate: sender.Unlimited})
				if err != nil {
					b.Fatal(err)
				}
				w, err := consumer.New(cfg, client)
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				cpu0, start := cpuTime(), time.Now()
				go func() { done <- w.Run(ctx) }()
				for len(e.emu.Delivered()) < n {
					time.Sleep(2 * time.Millisecond)
				}
				wall += time.Since(start)
				cancel()
				<-done
				if tp != nil {
					_ = tp.Shutdown(context.Background())
				}
				cpu += cpuTime() - cpu0
			}
			events := float64(b.N * n)
			b.ReportMetric(float64(cpu.Microseconds())/events, "cpu-us/event")
			b.ReportMetric(float64(wall.Microseconds())/events, "wall-us/event")
		})
	}
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
