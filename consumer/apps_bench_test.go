package consumer_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// BenchmarkPausedAppBacklog: one partition holding a backlog of 20,000
// events of an app that delivers and 10,000 of an app switched off (10007)
// between them. It reports how long the first app takes to deliver all
// of its events while the second is off, the worker's peak heap
// meanwhile, and how long the second takes once switched on. A paused
// app keeps 64 records, then reads the rest again once on; "budget-1MiB"
// gives the worker a budget (BufferBytes) smaller than the paused app's
// records, which would stop the partition if they were kept.
//
//	go test -run '^$' -bench PausedAppBacklog -benchtime 1x ./consumer
func BenchmarkPausedAppBacklog(b *testing.B) {
	for _, mode := range []string{"default", "budget-1MiB"} {
		b.Run(mode, func(b *testing.B) {
			for range b.N {
				e := benchEnv(b, 1)
				ids := map[string]int{"fast": 1400000301, "slow": 1400000302}
				emu := sendertest.NewApps(sendertest.Options{AppID: ids["fast"], Admin: admin, SecretKey: "key-fast"},
					sendertest.Options{AppID: ids["slow"], Admin: admin, SecretKey: "key-slow", Faults: sendertest.Faults{FeatureOff: true}})
				b.Cleanup(emu.Close)
				const fast, slow = 20000, 10000
				var msgs []kafka.Message
				for i := range fast {
					msgs = append(msgs, appEvent("f", fmt.Sprintf("f-%d", i), "fast"))
					if i%2 == 0 {
						msgs = append(msgs, appEvent("s", fmt.Sprintf("s-%d", i/2), "slow"))
					}
				}
				for i := 0; i < len(msgs); i += 1000 {
					if err := e.kafka.Produce(context.Background(), e.topic, msgs[i:min(i+1000, len(msgs))]...); err != nil {
						b.Fatal(err)
					}
				}
				cfg := consumer.Config{Brokers: e.kafka.Brokers, Topic: e.topic, GroupID: e.group, DLQTopic: e.dlq, Logger: zap.NewNop(),
					PauseInitial: 50 * time.Millisecond, PauseMax: 200 * time.Millisecond}
				if mode == "budget-1MiB" {
					// Less than the paused app's records: kept, they would
					// stop the partition's reading.
					cfg.BufferBytes, cfg.MaxRecordBytes, cfg.MaxBatchBytes = 1<<20, 256<<10, 256<<10
				}
				for _, name := range []string{"fast", "slow"} {
					client, err := sender.New(sender.Config{AppID: ids[name], Admin: admin, SecretKey: "key-" + name, Endpoints: []string{emu.URL},
						Rate: sender.Unlimited, RetryInitial: 2 * time.Millisecond, RetryMax: 20 * time.Millisecond})
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(client.Close)
					cfg.Apps = append(cfg.Apps, consumer.App{Name: name, SDKAppID: uint64(ids[name]), Sender: client})
				}
				w, err := consumer.New(cfg, nil)
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				var peak atomic.Uint64
				stopSampling := make(chan struct{})
				sampled := make(chan struct{})
				go func() {
					defer close(sampled)
					var ms runtime.MemStats
					for {
						runtime.ReadMemStats(&ms)
						if ms.HeapInuse > peak.Load() {
							peak.Store(ms.HeapInuse)
						}
						select {
						case <-stopSampling:
							return
						case <-time.After(20 * time.Millisecond):
						}
					}
				}()
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				start := time.Now()
				go func() { done <- w.Run(ctx) }()
				wait := func(name string, n int) {
					for len(emu.App(ids[name]).Delivered()) < n {
						if time.Since(start) > 5*time.Minute {
							b.Fatalf("%s: %d of %d delivered", name, len(emu.App(ids[name]).Delivered()), n)
						}
						time.Sleep(20 * time.Millisecond)
					}
				}
				wait("fast", fast)
				fastTook := time.Since(start)
				close(stopSampling)
				<-sampled
				emu.App(ids["slow"]).SetFaults(sendertest.Faults{})
				on := time.Now()
				wait("slow", slow)
				slowTook := time.Since(on)
				cancel()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(fastTook.Seconds(), "s-other-app-delivered")
				b.ReportMetric(float64(peak.Load())/(1<<20), "MB-peak-heap")
				b.ReportMetric(slowTook.Seconds(), "s-paused-app-after-on")
			}
		})
	}
}
