package kafkaconn

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/segmentio/kafka-go/protocol"
)

// Topic ids (KIP-516): a topic deleted and created again under the same
// name gets a new id. kafka-go's Metadata stops at v8, before ids (v10), so
// the request is written and its answer read here, over a BrokerConn, as a
// raw exchange (the flexible encoding of KIP-482).

// TopicID is a topic's id; the zero id means the broker reports none
// (Kafka before 2.8).
type TopicID [16]byte

// String is the id as Kafka prints it (URL-safe base64, no padding); ""
// for the zero id.
func (id TopicID) String() string {
	if id == (TopicID{}) {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(id[:])
}

// metadataIDsMin and metadataIDsMax bound the Metadata versions used for
// ids: v10 is the first with them, v13 adds a field read by none here.
const (
	metadataIDsMin = 10
	metadataIDsMax = 12
	// maxMetadataAnswer bounds an answer naming a few topics.
	maxMetadataAnswer = 1 << 20
)

// TopicIDs returns the ids of topics, asking a bootstrap broker. A topic
// the broker does not know is missing from the map; a broker without ids
// (Metadata before v10) answers an empty map and no error.
func (c *Conn) TopicIDs(ctx context.Context, topics []string) (map[string]TopicID, error) {
	c.idsOnce.Do(func() { c.ids = c.Broker(c.Brokers[0]) })
	c.idsMu.Lock()
	defer c.idsMu.Unlock()
	return c.ids.topicIDs(ctx, topics)
}

func (b *BrokerConn) topicIDs(ctx context.Context, topics []string) (map[string]TopicID, error) {
	b.mu.Lock()
	if b.pc == nil {
		if err := b.connect(ctx); err != nil {
			b.mu.Unlock()
			return nil, fmt.Errorf("connect to %s: %w", b.addr, err)
		}
	}
	v := min(b.offered[protocol.Metadata], metadataIDsMax)
	b.mu.Unlock()
	if v < metadataIDsMin {
		return map[string]TopicID{}, nil
	}
	msg, err := b.RoundTrip(ctx, &metadataIDs{version: v, topics: topics})
	if err != nil {
		return nil, err
	}
	return msg.(*metadataIDs).ids, nil
}

// metadataIDs is a raw Metadata exchange asking for topic ids.
type metadataIDs struct {
	version int16
	topics  []string
	ids     map[string]TopicID
}

func (*metadataIDs) ApiKey() protocol.ApiKey                 { return protocol.Metadata }
func (*metadataIDs) Required(map[protocol.ApiKey]int16) bool { return true }

// RawExchange writes the request and reads the answer's topic ids.
func (x *metadataIDs) RawExchange(rw io.ReadWriter) (protocol.Message, error) {
	id := correlation.Add(1)
	if _, err := rw.Write(x.request(id)); err != nil {
		return nil, err
	}
	var size [4]byte
	if _, err := io.ReadFull(rw, size[:]); err != nil {
		return nil, noEOF(err)
	}
	n := int32(binary.BigEndian.Uint32(size[:]))
	if n < 4 || n > maxMetadataAnswer {
		return nil, formatErr("metadata answer of %d bytes", n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(rw, buf); err != nil {
		return nil, noEOF(err)
	}
	ids, got, err := parseMetadataIDs(buf, x.version)
	if err != nil {
		return nil, err
	}
	if got != id {
		return nil, formatErr("correlation id %d, want %d", got, id)
	}
	x.ids = ids
	return x, nil
}

// request encodes the request frame (header v2, body of x.version).
func (x *metadataIDs) request(correlationID int32) []byte {
	b := make([]byte, 4, 64)
	b = binary.BigEndian.AppendUint16(b, uint16(protocol.Metadata))
	b = binary.BigEndian.AppendUint16(b, uint16(x.version))
	b = binary.BigEndian.AppendUint32(b, uint32(correlationID))
	b = binary.BigEndian.AppendUint16(b, uint16(len(ClientID)))
	b = append(b, ClientID...)
	b = binary.AppendUvarint(b, 0) // header tags
	b = binary.AppendUvarint(b, uint64(len(x.topics)+1))
	for _, t := range x.topics {
		b = append(b, make([]byte, 16)...) // topic id: asked by name
		b = binary.AppendUvarint(b, uint64(len(t)+1))
		b = append(b, t...)
		b = binary.AppendUvarint(b, 0)
	}
	b = append(b, 0) // allow_auto_topic_creation
	if x.version <= 10 {
		b = append(b, 0) // include_cluster_authorized_operations
	}
	b = append(b, 0)               // include_topic_authorized_operations
	b = binary.AppendUvarint(b, 0) // tags
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// parseMetadataIDs reads a Metadata answer (v10-v12, header v1 included)
// for its topics' ids. Every length is checked against what remains.
func parseMetadataIDs(b []byte, version int16) (map[string]TopicID, int32, error) {
	r := &sliceReader{b: b}
	corr := r.int32()
	r.tags()
	r.int32() // throttle
	for n := r.count(); n > 0 && r.err == nil; n-- {
		r.int32()  // node id
		r.string() // host
		r.int32()  // port
		r.string() // rack
		r.tags()
	}
	r.string() // cluster id
	r.int32()  // controller
	ids := map[string]TopicID{}
	for n := r.count(); n > 0 && r.err == nil; n-- {
		code := r.int16()
		name := r.string()
		var id TopicID
		copy(id[:], r.take(16))
		r.take(1) // is_internal
		for p := r.count(); p > 0 && r.err == nil; p-- {
			r.take(2 + 4 + 4 + 4) // error, index, leader, leader epoch
			for range 3 {         // replicas, isr, offline
				r.take(4 * r.count())
			}
			r.tags()
		}
		r.int32() // topic authorized operations
		r.tags()
		if code == 0 && name != "" {
			ids[name] = id
		}
	}
	if version <= 10 {
		r.int32() // cluster authorized operations
	}
	r.tags()
	if r.err != nil {
		return nil, 0, r.err
	}
	return ids, corr, nil
}

// sliceReader reads the flexible encoding from a buffer, never past its
// end: the first short read sets err and every read after it is zero.
type sliceReader struct {
	b   []byte
	err error
}

func (r *sliceReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = formatErr("a field runs past the answer's end")
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *sliceReader) int16() int16 {
	if b := r.take(2); b != nil {
		return int16(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (r *sliceReader) int32() int32 {
	if b := r.take(4); b != nil {
		return int32(binary.BigEndian.Uint32(b))
	}
	return 0
}

func (r *sliceReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = formatErr("a bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a compact array's length (0 for a null array).
func (r *sliceReader) count() int {
	n := r.uvarint()
	if n > uint64(len(r.b))+1 {
		r.err = formatErr("an array of %d entries in %d bytes", n-1, len(r.b))
		return 0
	}
	return max(int(n)-1, 0)
}

// string reads a compact (nullable) string; "" for null.
func (r *sliceReader) string() string {
	n := r.uvarint()
	if n == 0 {
		return ""
	}
	if n-1 > uint64(len(r.b)) {
		r.err = formatErr("a string of %d bytes in %d", n-1, len(r.b))
		return ""
	}
	return string(r.take(int(n - 1)))
}

// tags passes over a tagged-field section.
func (r *sliceReader) tags() {
	for n := r.count1(); n > 0 && r.err == nil; n-- {
		r.uvarint()
		size := r.uvarint()
		if size > uint64(len(r.b)) {
			r.err = formatErr("a tagged field of %d bytes in %d", size, len(r.b))
			return
		}
		r.take(int(size))
	}
}

// count1 reads a plain unsigned-varint count (tagged fields).
func (r *sliceReader) count1() int {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err = formatErr("%d tagged fields in %d bytes", n, len(r.b))
		return 0
	}
	return int(n)
}
