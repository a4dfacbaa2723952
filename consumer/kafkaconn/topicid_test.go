package kafkaconn

import (
	"encoding/binary"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestParseMetadataIDs decodes answers encoded by franz-go's kmsg (another
// implementation of the same protocol) at every version used.
func TestParseMetadataIDs(t *testing.T) {
	for v := int16(metadataIDsMin); v <= metadataIDsMax; v++ {
		resp := kmsg.NewMetadataResponse()
		resp.Version = v
		b := kmsg.NewMetadataResponseBroker()
		b.Host, b.Port, b.Rack = "broker-1.example", 9092, kmsg.StringPtr("rack-a")
		resp.Brokers = append(resp.Brokers, b)
		resp.ClusterID = kmsg.StringPtr("cluster")
		for i, name := range []string{"events", "events.urgent", "gone"} {
			tp := kmsg.NewMetadataResponseTopic()
			tp.Topic = kmsg.StringPtr(name)
			tp.TopicID = [16]byte{byte(i + 1), 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, byte(v)}
			if name == "gone" {
				tp.ErrorCode = 3 // UNKNOWN_TOPIC_OR_PARTITION
			}
			for p := range 3 {
				pp := kmsg.NewMetadataResponseTopicPartition()
				pp.Partition, pp.Replicas, pp.ISR = int32(p), []int32{1, 2, 3}, []int32{1, 2}
				tp.Partitions = append(tp.Partitions, pp)
			}
			resp.Topics = append(resp.Topics, tp)
		}
		// Header v1: correlation id, then an empty tag section.
		frame := binary.BigEndian.AppendUint32(nil, 77)
		frame = append(frame, 0)
		frame = resp.AppendTo(frame)
		ids, corr, err := parseMetadataIDs(frame, v)
		if err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
		if corr != 77 || len(ids) != 2 || ids["events"][0] != 1 || ids["events.urgent"][0] != 2 || ids["events"][15] != byte(v) {
			t.Errorf("v%d: correlation %d, ids %v", v, corr, ids)
		}
		for cut := range frame {
			if _, _, err := parseMetadataIDs(frame[:cut], v); err == nil {
				t.Fatalf("v%d: an answer cut at %d of %d bytes parsed", v, cut, len(frame))
			}
		}
	}
}

// FuzzMetadataIDs: no answer panics the reader or makes it allocate past
// what the answer holds.
func FuzzMetadataIDs(f *testing.F) {
	resp := kmsg.NewMetadataResponse()
	resp.Version = 12
	tp := kmsg.NewMetadataResponseTopic()
	tp.Topic = kmsg.StringPtr("events")
	resp.Topics = append(resp.Topics, tp)
	f.Add(append([]byte{0, 0, 0, 1, 0}, resp.AppendTo(nil)...), int16(12))
	f.Fuzz(func(t *testing.T, b []byte, v int16) {
		ids, _, err := parseMetadataIDs(b, v)
		if err == nil && len(ids) > len(b) {
			t.Fatalf("%d ids from %d bytes", len(ids), len(b))
		}
	})
}

func TestMetadataIDsRequest(t *testing.T) {
	for v := int16(metadataIDsMin); v <= metadataIDsMax; v++ {
		x := &metadataIDs{version: v, topics: []string{"events", "events.urgent"}}
		b := x.request(5)
		if got := binary.BigEndian.Uint32(b); int(got) != len(b)-4 {
			t.Fatalf("v%d: size %d, frame %d", v, got, len(b)-4)
		}
		// Header: key, version, correlation, client id (int16 length), tags.
		body := b[4+2+2+4+2+len(ClientID)+1:]
		req := kmsg.NewMetadataRequest()
		req.Version = v
		if err := req.ReadFrom(body); err != nil {
			t.Fatalf("v%d: kmsg cannot read the request: %v", v, err)
		}
		if len(req.Topics) != 2 || *req.Topics[0].Topic != "events" || req.AllowAutoTopicCreation {
			t.Errorf("v%d: request read back as %+v", v, req)
		}
	}
}
