//go:build !noprotobuf && !lean

package schema_test

import (
	"context"
	"errors"
	"testing"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

func TestDecodeProtobufWithReference(t *testing.T) {
	reg := consumertest.NewRegistry(t)
	reg.Add(10, "PROTOBUF", "money-value", MoneyProto)
	reg.Add(11, "PROTOBUF", "gifts-value", GiftProto, consumertest.RegistryRef{Name: "money.proto", Subject: "money-value", Version: 1})
	// Build a Gift with the compiled descriptors.
	c := protocompile.Compiler{Resolver: &protocompile.SourceResolver{Accessor: protocompile.SourceAccessorFromMap(
		map[string]string{"gift.proto": GiftProto, "money.proto": MoneyProto})}}
	files, err := c.Compile(context.Background(), "gift.proto")
	if err != nil {
		t.Fatal(err)
	}
	gd := files[0].Messages().ByName("Gift")
	msg := dynamicpb.NewMessage(gd)
	msg.Set(gd.Fields().ByName("user"), protoreflect.ValueOfString("u1"))
	money := dynamicpb.NewMessage(gd.Fields().ByName("amount").Message())
	money.Set(money.Descriptor().Fields().ByName("units"), protoreflect.ValueOfInt64(500))
	money.Set(money.Descriptor().Fields().ByName("currency"), protoreflect.ValueOfString("CNY"))
	msg.Set(gd.Fields().ByName("amount"), protoreflect.ValueOfMessage(money))
	msg.Set(gd.Fields().ByName("big"), protoreflect.ValueOfInt64(12345678901234))
	payload, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	d := newDecoder(t, reg)
	v, err := d.Decode(context.Background(), consumertest.RegistryValue(t, 11, []int{1}, payload)) // Gift is the second message
	if err != nil {
		t.Fatal(err)
	}
	want := `{"amount":{"currency":"CNY","units":"500"},"big":"12345678901234","user":"u1"}`
	if got := asJSON(v); got != want {
		t.Errorf("decoded %s, want %s (protojson: 64-bit integers as strings)", got, want)
	}
	if reg.Fetches(11) != 1 {
		t.Errorf("schema 11 fetched %d times", reg.Fetches(11))
	}
}

// FuzzDecodeProtobuf: any payload and message index under a schema with
// nested, repeated and recursive messages decodes or fails as the record's
// fault, never panics.
func FuzzDecodeProtobuf(f *testing.F) {
	const s = `syntax = "proto3"; package t;
message Node { string name = 1; repeated Node kids = 2; map<string, int64> m = 3; bytes b = 4; oneof o { double d = 5; bool x = 6; } }`
	f.Add([]byte{0x0a, 0x02, 'h', 'i', 0x12, 0x00}, uint8(0))
	f.Add([]byte{0x12, 0x02, 0x12, 0x00}, uint8(1))
	reg := consumertest.NewRegistry(f)
	reg.Add(1, "PROTOBUF", "", s)
	d := newDecoder(f, reg)
	f.Fuzz(func(t *testing.T, payload []byte, index uint8) {
		_, err := d.Decode(context.Background(), consumertest.RegistryValue(t, 1, []int{int(index % 3)}, payload))
		var ie *wire.InvalidEventError
		if err != nil && !errors.As(err, &ie) {
			t.Fatalf("a payload's fault must be an InvalidEventError: %v", err)
		}
	})
}
