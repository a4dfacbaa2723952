package schema_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/schema"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// zigzag is Avro's long encoding of v.
func zigzag(v int64) []byte {
	u := uint64(v<<1) ^ uint64(v>>63)
	var b []byte
	for u >= 0x80 {
		b = append(b, byte(u)|0x80)
		u >>= 7
	}
	return append(b, byte(u))
}

// TestAvroCountBombs: a few bytes that claim 2^45 items, a string of 2^60
// bytes or a block count of MinInt64 are dead-lettered decode_failed
// (naming the bound), never a panic or a runaway allocation.
func TestAvroCountBombs(t *testing.T) {
	reg := consumertest.NewRegistry(t)
	reg.Add(1, "AVRO", "", `{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"array","items":"null"}}]}`)
	reg.Add(2, "AVRO", "", `{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"array","items":"long"}}]}`)
	reg.Add(3, "AVRO", "", `{"type":"record","name":"R","fields":[{"name":"s","type":"string"}]}`)
	reg.Add(4, "AVRO", "", `{"type":"record","name":"R","fields":[{"name":"m","type":{"type":"map","values":"null"}}]}`)
	reg.Add(5, "AVRO", "", `{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"]}]}`)
	deep := []byte{}
	for range 200 {
		deep = append(deep, zigzag(1)...)
	}
	deep = append(deep, zigzag(0)...)
	cases := []struct {
		name    string
		id      int
		payload []byte
		want    string
	}{
		{"2^45 nulls", 1, append(zigzag(1<<45), 0), "values"},
		{"2^45 longs in 10 bytes", 2, append(zigzag(1<<45), 0), "values"},
		{"negative count, huge block size", 2, append(append(zigzag(-3), zigzag(1<<40)...), 0), "bytes with"},
		{"count MinInt64", 1, append(zigzag(-1<<63), 0), "out of range"},
		{"a string of 2^60 bytes", 3, zigzag(1 << 60), "bytes with"},
		{"a map of 2^40 null entries", 4, append(zigzag(1<<40), 0), "values"},
		{"200 nested records", 5, deep, "deeper"},
		{"truncated varint", 3, []byte{0x80, 0x80}, "truncated"},
	}
	d := newDecoder(t, reg)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			_, err := d.Decode(context.Background(), consumertest.RegistryValue(t, c.id, nil, c.payload))
			var ie *wire.InvalidEventError
			if !errors.As(err, &ie) || ie.Reason != wire.ReasonDecodeFailed || !strings.Contains(ie.Msg, c.want) {
				t.Fatalf("got %v, want decode_failed naming %q", err, c.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
	// Within the bounds, the same shapes decode.
	ok, err := avro.Marshal(avro.MustParse(`{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"array","items":"long"}}]}`),
		map[string]any{"a": []int64{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := d.Decode(context.Background(), consumertest.RegistryValue(t, 2, nil, ok))
	if err != nil || asJSON(v) != `{"a":[1,2,3]}` {
		t.Fatalf("got %s, %v", asJSON(v), err)
	}
}

// FuzzDecodeAvro: any payload under a schema with every Avro shape decodes
// or fails as the record's fault, never panics.
func FuzzDecodeAvro(f *testing.F) {
	const s = `{"type":"record","name":"R","fields":[
	 {"name":"a","type":{"type":"array","items":["null","long",{"type":"map","values":"string"}]}},
	 {"name":"f","type":{"type":"fixed","name":"F","size":4}},
	 {"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y"]}},
	 {"name":"d","type":"double"},{"name":"b","type":"bytes"},
	 {"name":"next","type":["null","R"]}]}`
	sc := avro.MustParse(s)
	seed, err := avro.Marshal(sc, map[string]any{"a": []any{nil, map[string]any{"long": int64(7)}}, "f": [4]byte{1, 2, 3, 4}, "e": "Y",
		"d": 1.5, "b": []byte("xy"), "next": nil})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(append(zigzag(1<<45), 0))
	reg := consumertest.NewRegistry(f)
	reg.Add(1, "AVRO", "", s)
	d := newDecoder(f, reg)
	f.Fuzz(func(t *testing.T, payload []byte) {
		var h [5]byte
		h[4] = 1
		_, err := d.Decode(context.Background(), append(h[:], payload...))
		var ie *wire.InvalidEventError
		if err != nil && !errors.As(err, &ie) {
			t.Fatalf("a payload's fault must be an InvalidEventError: %v", err)
		}
	})
}

// TestRegistryLookups: a registry slow on one id does not hold decoding of
// another; decodes of one id share one request; an unknown id is asked
// for once, not once per record.
func TestRegistryLookups(t *testing.T) {
	reg := consumertest.NewRegistry(t)
	const rec = `{"type":"record","name":"R","fields":[{"name":"s","type":"string"}]}`
	reg.Add(1, "AVRO", "", rec)
	reg.Add(2, "AVRO", "", rec)
	release := make(chan struct{})
	reg.Stall(1, release)
	d := newDecoder(t, reg)
	payload := append(zigzag(2), 'h', 'i')
	slow := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := d.Decode(context.Background(), consumertest.RegistryValue(t, 1, nil, payload))
			slow <- err
		}()
	}
	for reg.Asked(1) == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if v, err := d.Decode(ctx, consumertest.RegistryValue(t, 2, nil, payload)); err != nil || asJSON(v) != `{"s":"hi"}` {
		t.Fatalf("id 2 while id 1 is slow: got %s, %v", asJSON(v), err)
	}
	close(release)
	for range 3 {
		if err := <-slow; err != nil {
			t.Fatal(err)
		}
	}
	if n := reg.Asked(1); n != 1 {
		t.Errorf("id 1 asked for %d times by 3 concurrent decodes, want 1", n)
	}
	for range 50 {
		_, err := d.Decode(context.Background(), consumertest.RegistryValue(t, 99, nil, payload))
		var ie *wire.InvalidEventError
		if !errors.As(err, &ie) || ie.Reason != wire.ReasonSchemaNotFound {
			t.Fatalf("got %v, want schema_not_found", err)
		}
	}
	if n := reg.Asked(99); n != 1 {
		t.Errorf("an unknown id asked for %d times by 50 records, want 1", n)
	}
}

// TestLimitAnswers: an answer over the cap fails to read (the record waits
// and retries); one within it reads whole.
func TestLimitAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("x", 1000)))
	}))
	defer srv.Close()
	for _, c := range []struct {
		max     int64
		wantErr bool
	}{{999, true}, {1000, false}, {5000, false}} {
		cl := &http.Client{Transport: schema.LimitAnswers(http.DefaultTransport, c.max)}
		resp, err := cl.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if (err != nil) != c.wantErr || (err == nil && len(b) != 1000) {
			t.Errorf("max %d: read %d bytes, %v", c.max, len(b), err)
		}
	}
}
