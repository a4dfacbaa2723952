package kafkaconn_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
)

// The fetch path before (kafka-go's Reader, which the worker used until it
// had to read committed data only) and now (Fetcher on the protocol layer),
// in the same run on the same broker:
//
//	go test -run '^$' -bench FetchPath -benchtime 1x ./consumer/kafkaconn

// fetchBench is a topic on an in-process broker.
func fetchBench(b *testing.B) (*kafkaconn.Conn, string) {
	b.Helper()
	conn, _ := startBroker(b)
	topic := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	if err := conn.CreateTopic(context.Background(), topic, 1); err != nil {
		b.Fatal(err)
	}
	return conn, topic
}

// readNext is one way to read the partition: it returns the next record.
type readNext func(ctx context.Context) (kafka.Message, error)

func viaReader(b *testing.B, conn *kafkaconn.Conn, topic string) readNext {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: conn.Brokers, Topic: topic, Partition: 0, MinBytes: 1, MaxBytes: 10 << 20,
		MaxWait: 100 * time.Millisecond})
	b.Cleanup(func() { r.Close() })
	return r.FetchMessage
}

func viaFetcher(conn *kafkaconn.Conn, topic string) readNext {
	f := conn.Fetcher(topic, 0, 0, 100*time.Millisecond)
	var buf []kafka.Message
	return func(ctx context.Context) (kafka.Message, error) {
		for len(buf) == 0 {
			res, err := f.Fetch(ctx)
			if err != nil {
				return kafka.Message{}, err
			}
			buf = res.Records
		}
		m := buf[0]
		buf = buf[1:]
		return m, nil
	}
}

func BenchmarkFetchPath(b *testing.B) {
	const n = 20000
	value := []byte(`{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"` + strings.Repeat("x", 150) + `"}}]}`)
	for _, path := range []string{"reader", "fetcher"} {
		b.Run("backlog/"+path, func(b *testing.B) {
			conn, _ := fetchBench(b)
			msgs := make([]kafka.Message, n)
			for i := range msgs {
				msgs[i] = kafka.Message{Key: []byte(fmt.Sprint(i % 50)), Value: value}
			}
			var spent time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				topic := fmt.Sprintf("backlog-%d", i)
				if err := conn.CreateTopic(context.Background(), topic, 1); err != nil {
					b.Fatal(err)
				}
				if err := conn.Produce(context.Background(), topic, msgs...); err != nil {
					b.Fatal(err)
				}
				next := viaFetcher(conn, topic)
				if path == "reader" {
					next = viaReader(b, conn, topic)
				}
				b.StartTimer()
				start := time.Now()
				for range n {
					if _, err := next(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
				spent += time.Since(start)
			}
			b.ReportMetric(float64(spent.Nanoseconds())/float64(n*b.N), "ns/record")
		})
		b.Run("idle/"+path, func(b *testing.B) {
			conn, topic := fetchBench(b)
			next := viaFetcher(conn, topic)
			if path == "reader" {
				next = viaReader(b, conn, topic)
			}
			w := conn.Writer(topic)
			w.BatchTimeout = time.Millisecond
			defer w.Close()
			var lat []time.Duration
			for range 200 {
				got := make(chan time.Time, 1)
				go func() {
					if _, err := next(context.Background()); err == nil {
						got <- time.Now()
					}
				}()
				time.Sleep(2 * time.Millisecond) // the read is waiting at the broker
				start := time.Now()
				if err := w.WriteMessages(context.Background(), kafka.Message{Value: value}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, (<-got).Sub(start))
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
