package schema_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/schema"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// GiftAvro is an Avro schema with a union, an enum, bytes and a logical
// type.
const GiftAvro = `{"type":"record","name":"Gift","namespace":"shop","fields":[
 {"name":"user","type":"string"},{"name":"amount","type":"long"},
 {"name":"note","type":["null","string"]},
 {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["FLOWER","ROCKET"]}},
 {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
 {"name":"raw","type":"bytes"}]}`

// GiftProto is a Protobuf schema importing another file (a reference).
const GiftProto = `syntax = "proto3";
package shop;
import "money.proto";
message Other { string x = 1; }
message Gift {
  string user = 1;
  Money amount = 2;
  int64 big = 3;
  message Inner { string y = 1; }
}`

// MoneyProto is the referenced file.
const MoneyProto = `syntax = "proto3";
package shop;
message Money { int64 units = 1; string currency = 2; }`

func newDecoder(t testing.TB, reg *consumertest.Registry) *schema.Decoder {
	t.Helper()
	cl, err := sr.NewClient(sr.URLs(reg.URL))
	if err != nil {
		t.Fatal(err)
	}
	return schema.New(cl)
}

func asJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestDecodeAvro(t *testing.T) {
	reg := consumertest.NewRegistry(t)
	reg.Add(1, "AVRO", "", GiftAvro)
	payload, err := avro.Marshal(avro.MustParse(GiftAvro), map[string]any{"user": "u1", "amount": int64(500), "note": "for you",
		"kind": "ROCKET", "at": time.UnixMilli(1764100800123), "raw": []byte{1, 255}})
	if err != nil {
		t.Fatal(err)
	}
	d := newDecoder(t, reg)
	v, err := d.Decode(context.Background(), consumertest.RegistryValue(t, 1, nil, payload))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"amount":500,"at":1764100800123,"kind":"ROCKET","note":{"string":"for you"},"raw":"\u0001ÿ","user":"u1"}`
	if got := asJSON(v); got != want {
		t.Errorf("decoded %s, want %s (Avro's JSON encoding)", got, want)
	}
	// Cached: a second record of the same schema fetches nothing.
	if _, err := d.Decode(context.Background(), consumertest.RegistryValue(t, 1, nil, payload)); err != nil || reg.Fetches(1) != 1 {
		t.Errorf("second decode: %v, schema fetched %d times, want once", err, reg.Fetches(1))
	}
	// Bytes that do not decode with the schema.
	_, err = d.Decode(context.Background(), consumertest.RegistryValue(t, 1, nil, []byte{0x02}))
	var ie *wire.InvalidEventError
	if !errors.As(err, &ie) || ie.Reason != wire.ReasonDecodeFailed {
		t.Errorf("bad bytes: %v, want decode_failed", err)
	}
}

func TestDecodeJSONSchema(t *testing.T) {
	reg := consumertest.NewRegistry(t)
	reg.Add(20, "JSON", "", `{"type":"object"}`)
	v, err := newDecoder(t, reg).Decode(context.Background(), consumertest.RegistryValue(t, 20, nil, []byte(`{"user":"u1","amount":500}`)))
	if err != nil || asJSON(v) != `{"amount":500,"user":"u1"}` {
		t.Errorf("decoded %s, %v", asJSON(v), err)
	}
}

func TestRegistryFailures(t *testing.T) {
	reg := consumertest.NewRegistry(t)
	d := newDecoder(t, reg)
	// An id the registry does not know: dead-lettered.
	_, err := d.Decode(context.Background(), consumertest.RegistryValue(t, 99, nil, []byte("x")))
	var ie *wire.InvalidEventError
	if !errors.As(err, &ie) || ie.Reason != wire.ReasonSchemaNotFound {
		t.Fatalf("unknown id: %v, want schema_not_found", err)
	}
	// Down: an error to retry, not a dead letter; then it works.
	reg.Add(1, "AVRO", "", GiftAvro)
	reg.Down(true)
	_, err = d.Decode(context.Background(), consumertest.RegistryValue(t, 1, nil, []byte{}))
	if err == nil || errors.As(err, &ie) {
		t.Fatalf("registry down: %v, want a transient error", err)
	}
	reg.Down(false)
	payload, _ := avro.Marshal(avro.MustParse(GiftAvro), map[string]any{"user": "u", "amount": int64(1), "note": nil, "kind": "FLOWER",
		"at": time.UnixMilli(0), "raw": []byte{}})
	if _, err := d.Decode(context.Background(), consumertest.RegistryValue(t, 1, nil, payload)); err != nil {
		t.Fatalf("after the registry came back: %v", err)
	}
	if !schema.IsWireFormat(consumertest.RegistryValue(t, 1, nil, nil)) || schema.IsWireFormat([]byte(`{"MsgBody":[]}`)) {
		t.Error("IsWireFormat")
	}
}
