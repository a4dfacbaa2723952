package consumer_test

import (
	"context"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/mapping"
	"github.com/timbroadcast/timbroadcast/consumer/schema"
)

// BenchmarkRecordDecode is the cost of turning one record into an event:
// a five-field domain JSON event mapped by a compiled program, and the
// same as an Avro record decoded through the Schema Registry (schema
// cached) and mapped; the plain event format without either, for scale.
//
//	go test -run '^$' -bench RecordDecode ./consumer
func BenchmarkRecordDecode(b *testing.B) {
	prog, err := mapping.Compile(`select(.type == "gift") | {MsgBody: [{MsgType: "TIMCustomElem", MsgContent: {Data: ({user, amount, room} | tojson), Desc: "\(.user) sent \(.amount)"}}]}`)
	if err != nil {
		b.Fatal(err)
	}
	const avroSchema = `{"type":"record","name":"Gift","fields":[{"name":"type","type":"string"},{"name":"user","type":"string"},
	 {"name":"amount","type":"long"},{"name":"room","type":"string"},{"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]}`
	reg := consumertest.NewRegistry(b)
	reg.Add(1, "AVRO", "", avroSchema)
	cl, err := sr.NewClient(sr.URLs(reg.URL))
	if err != nil {
		b.Fatal(err)
	}
	payload, err := avro.Marshal(avro.MustParse(avroSchema), map[string]any{"type": "gift", "user": "u1", "amount": int64(500), "room": "r9", "at": time.Now()})
	if err != nil {
		b.Fatal(err)
	}
	avroValue := consumertest.RegistryValue(b, 1, nil, payload)
	cases := []struct {
		name  string
		d     consumer.RecordDecoder
		value []byte
	}{
		{"event", consumer.RecordDecoder{}, []byte(`{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"u1 sent 500 in r9"}}]}`)},
		{"json+map", consumer.RecordDecoder{Map: prog}, []byte(`{"type":"gift","user":"u1","amount":500,"room":"r9","at":"2026-11-25T20:00:00Z"}`)},
		{"avro+map", consumer.RecordDecoder{Map: prog, Schemas: schema.New(cl)}, avroValue},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			m := kafka.Message{Topic: "gifts", Partition: 1, Offset: 7, Key: []byte("g-1"), Value: c.value, Time: time.Now()}
			b.ReportAllocs()
			for b.Loop() {
				ev, _, err := c.d.Decode(context.Background(), m)
				if err != nil || ev == nil {
					b.Fatal(err)
				}
			}
		})
	}
}
