package kafkaconn_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestAppenderGroupsWrites: 200 concurrent writes to one partition are
// each acknowledged, every record is in the log once with its key, value,
// header and time, and they took far fewer produce requests than writes
// (a group commit); a lone write then goes at once, in a request of its
// own.
func TestAppenderGroupsWrites(t *testing.T) {
	c, b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.CreateTopic(ctx, "log", 1); err != nil {
		t.Fatal(err)
	}
	var produces atomic.Int64
	b.Fake.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.Fake.KeepControl()
		produces.Add(1)
		return nil, nil, false
	})
	a := c.Appender("log", 0)
	defer a.Close()
	at := time.UnixMilli(1_700_000_000_000)
	const writes = 200
	var wg sync.WaitGroup
	errs := make(chan error, writes)
	for i := range writes {
		wg.Go(func() {
			errs <- a.WriteMessages(ctx, kafka.Message{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "v%d", i), Time: at,
				Headers: []kafka.Header{{Key: "h", Value: []byte("x")}}})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := produces.Load(); n >= writes/2 {
		t.Errorf("%d produce requests for %d concurrent writes, want them grouped", n, writes)
	}
	t.Logf("%d writes in %d produce requests", writes, produces.Load())

	before := produces.Load()
	if err := a.WriteMessages(ctx, kafka.Message{Key: []byte("alone"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if n := produces.Load() - before; n != 1 {
		t.Errorf("a lone write took %d produce requests, want 1", n)
	}

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: c.Brokers, Topic: "log", Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	seen := map[string]bool{}
	for len(seen) < writes+1 {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read after %d records: %v", len(seen), err)
		}
		k := string(m.Key)
		if seen[k] {
			t.Fatalf("record %s twice", k)
		}
		seen[k] = true
		if k == "alone" {
			continue
		}
		if want := "v" + k[1:]; string(m.Value) != want || !m.Time.Equal(at) || len(m.Headers) != 1 || string(m.Headers[0].Value) != "x" {
			t.Errorf("record %s: value %q time %v headers %v, want %q at %v with its header", k, m.Value, m.Time, m.Headers, want, at)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteMessages(ctx, kafka.Message{Value: []byte("late")}); err == nil {
		t.Error("a write after Close succeeded, want it refused")
	}
}

// TestAppenderRefused: a request the broker refuses fails every write it
// carried, with the topic in the error, and the appender goes on: the next
// write, once the partition exists, succeeds.
func TestAppenderRefused(t *testing.T) {
	c, _ := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := c.Appender("missing", 0)
	defer a.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		wg.Go(func() { errs <- a.WriteMessages(ctx, kafka.Message{Value: fmt.Appendf(nil, "v%d", i)}) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err == nil || !strings.Contains(err.Error(), "missing/0") {
			t.Fatalf("a write to a missing topic: %v, want an error naming missing/0", err)
		}
	}
	if err := c.CreateTopic(ctx, "missing", 1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := a.WriteMessages(ctx, kafka.Message{Value: []byte("now")})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a write once the topic exists: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // the transport's metadata catches up
	}
}
