package kafkaconn_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
)

// TestMux: twelve partitions read through one mux on three brokers. Idle,
// the mux asks each broker once per max wait (not once per partition);
// a record on any partition reaches its reader at once, in order, and
// every record is read once.
func TestMux(t *testing.T) {
	c, b := startBroker(t, kfake.NumBrokers(3))
	var fetches atomic.Int64
	b.Fake.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		fetches.Add(1)
		return nil, nil, false
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const parts = 12
	if err := c.CreateTopic(ctx, "mux", parts); err != nil {
		t.Fatal(err)
	}
	const maxWait = 400 * time.Millisecond
	m := c.Mux(maxWait, nil)
	var loops sync.WaitGroup
	defer loops.Wait()
	defer cancel()
	loops.Go(func() { m.Run(ctx) })

	type got struct {
		partition int
		value     string
		at        time.Time
	}
	out := make(chan got, 100)
	for p := range parts {
		s := m.Stream("mux", p, 0)
		loops.Go(func() {
			defer s.Close()
			for {
				res, err := s.Fetch(ctx)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					t.Errorf("partition %d: %v", p, err)
					return
				}
				for _, r := range res.Records {
					out <- got{p, string(r.Value), time.Now()}
				}
			}
		})
	}
	time.Sleep(maxWait) // every stream waiting
	before := fetches.Load()
	const idle = 5 * maxWait
	time.Sleep(idle)
	n := fetches.Load() - before
	t.Logf("idle for %v over 3 brokers and %d partitions: %d fetches", idle, parts, n)
	if n > 3*(int64(idle/maxWait)+1) {
		t.Errorf("%d fetches idle, want about one per broker per max wait (%d)", n, 3*int64(idle/maxWait))
	}

	seen := map[string]bool{}
	for i := range 30 {
		p := i % parts
		v := fmt.Sprintf("r%d", i)
		start := time.Now()
		resp, err := c.Client().Produce(ctx, &kafka.ProduceRequest{Topic: "mux", Partition: p, RequiredAcks: kafka.RequireAll,
			Records: kafka.NewRecordReader(kafka.Record{Value: kafka.NewBytes([]byte(v))})})
		if err != nil || resp.Error != nil {
			t.Fatal(err, resp)
		}
		select {
		case g := <-out:
			if g.value != v || g.partition != p {
				t.Fatalf("read %q from partition %d, want %q from %d", g.value, g.partition, v, p)
			}
			if d := g.at.Sub(start); d > maxWait/2 {
				t.Errorf("record %d read %v after its produce, want at once (not at the next max wait)", i, d)
			}
			seen[v] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("record %q not read", v)
		}
	}
	select {
	case g := <-out:
		t.Errorf("read %q twice or unasked", g.value)
	case <-time.After(maxWait):
	}
}

// TestMuxBatchOverLimit: a record batch larger than what an answer holds
// for one partition (64 KiB) comes whole (KIP-74), so a partition whose
// producer batches big events never stalls on it, and the next batch
// follows.
func TestMuxBatchOverLimit(t *testing.T) {
	c, _ := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.CreateTopic(ctx, "big", 1); err != nil {
		t.Fatal(err)
	}
	const perBatch, size = 40, 8 << 10 // 320 KiB a batch
	for batch := range 2 {
		var recs []kafka.Record
		for i := range perBatch {
			v := fmt.Sprintf("b%d-r%02d-%s", batch, i, make([]byte, size))
			recs = append(recs, kafka.Record{Value: kafka.NewBytes([]byte(v))})
		}
		resp, err := c.Client().Produce(ctx, &kafka.ProduceRequest{Topic: "big", Partition: 0, RequiredAcks: kafka.RequireAll,
			Records: kafka.NewRecordReader(recs...)})
		if err != nil || resp.Error != nil {
			t.Fatal(err, resp)
		}
	}
	m := c.Mux(200*time.Millisecond, nil)
	var loops sync.WaitGroup
	defer loops.Wait()
	defer cancel()
	loops.Go(func() { m.Run(ctx) })
	s := m.Stream("big", 0, 0)
	defer s.Close()
	var next int64
	for answers := 0; next < 2*perBatch; answers++ {
		res, err := s.Fetch(ctx)
		if err != nil {
			t.Fatalf("after %d records: %v", next, err)
		}
		if answers == 0 && len(res.Records) < perBatch {
			t.Errorf("first answer holds %d records, want the whole first batch (%d)", len(res.Records), perBatch)
		}
		for _, r := range res.Records {
			if r.Offset != next || len(r.Value) < size {
				t.Fatalf("record at offset %d (%d bytes), want offset %d", r.Offset, len(r.Value), next)
			}
			next++
		}
	}
}

// TestFetchPoisonOverTCP: batches a hostile producer can write, on a real
// broker connection: a zstd batch of a few tens of kilobytes holding a
// 1 GiB record, one holding a 32 MiB record between two good ones, and a
// good batch after them. Every good record is read, the big ones come back
// as Oversized naming their offsets and limits, and reading allocates far
// less than either claims.
func TestFetchPoisonOverTCP(t *testing.T) {
	c, _ := startBroker(t)
	ctx := context.Background()
	if err := c.CreateTopic(ctx, "poison", 1); err != nil {
		t.Fatal(err)
	}
	cl := &consumertest.Cluster{Conn: c}
	for _, recs := range [][]consumertest.BatchRecord{
		{{Value: []byte("before")}, {ZeroValue: 1 << 30}},
		{{Value: []byte("a")}, {ZeroValue: 32 << 20}, {Value: []byte("c")}},
		{{Value: []byte("after")}},
	} {
		b, err := consumertest.RecordBatch(consumertest.CodecZstdRLE, recs...)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 64<<10 {
			t.Fatalf("the bomb batch is %d bytes", len(b))
		}
		if err := cl.ProduceBatch(ctx, "poison", 0, b); err != nil {
			t.Fatal(err)
		}
	}
	// Limits a quarter of the defaults: the 1 GiB record is read up to
	// the expansion limit (64 MiB here), quickly under the race detector.
	c.Limits = kafkaconn.Limits{MaxRecordBytes: 1 << 20, MaxBatchBytes: 4 << 20}
	f := c.Fetcher("poison", 0, 0, 100*time.Millisecond)
	var got []string
	var over []kafkaconn.Oversized
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for f.Next < 6 {
		res, err := f.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range res.Records {
			got = append(got, string(m.Value))
		}
		over = append(over, res.Oversized...)
	}
	runtime.ReadMemStats(&after)
	if strings.Join(got, ",") != "before,a,c,after" {
		t.Errorf("read %v, want before, a, c, after", got)
	}
	if len(over) != 2 || over[0].Offset != 1 || over[1].Offset != 3 || over[1].Last != 3 ||
		!strings.Contains(over[1].Limit, "KAFKA_MAX_RECORD_BYTES") {
		t.Errorf("oversized %+v, want offsets 1 and 3", over)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Errorf("reading allocated %d MiB", alloc>>20)
	}
}
