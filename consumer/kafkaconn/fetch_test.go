package kafkaconn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go/compress"
	"github.com/segmentio/kafka-go/protocol/fetch"
)

// testRecord is one record of a hand-made batch; valueSize > 0 writes that
// many zero bytes as the value instead of value (streamed, never held).
type testRecord struct {
	key, value string
	valueSize  int64
	headers    [][2]string
}

// putVarint appends a zigzag varint.
func putVarint(b []byte, v int64) []byte { return binary.AppendVarint(b, v) }

// writeRecords writes records in the v2 format to w.
func writeRecords(w io.Writer, recs []testRecord) {
	for i, r := range recs {
		var body []byte
		body = append(body, 0)                // attributes
		body = putVarint(body, int64(i)*1000) // timestamp delta
		body = putVarint(body, int64(i))      // offset delta
		body = putVarint(body, int64(len(r.key)))
		body = append(body, r.key...)
		vlen := int64(len(r.value))
		if r.valueSize > 0 {
			vlen = r.valueSize
		}
		body = putVarint(body, vlen)
		var tail []byte
		tail = putVarint(tail, int64(len(r.headers)))
		for _, h := range r.headers {
			tail = putVarint(tail, int64(len(h[0])))
			tail = append(tail, h[0]...)
			tail = putVarint(tail, int64(len(h[1])))
			tail = append(tail, h[1]...)
		}
		length := int64(len(body)) + vlen + int64(len(tail))
		_, _ = w.Write(putVarint(nil, length))
		_, _ = w.Write(body)
		if r.valueSize > 0 {
			_, _ = io.CopyN(struct{ io.Writer }{w}, zeros{}, r.valueSize) // no ReadFrom: lz4's leaves its writer unclosable
		} else {
			_, _ = w.Write([]byte(r.value))
		}
		_, _ = w.Write(tail)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// v2Batch encodes a record batch: base offset, producer, attributes (the
// codec in the low bits), records compressed with the codec.
func v2Batch(t testing.TB, base, producer int64, attrs int16, recs []testRecord) []byte {
	t.Helper()
	var payload bytes.Buffer
	if codec := compress.Compression(attrs & 7); codec != 0 {
		zw := codec.Codec().NewWriter(&payload)
		writeRecords(zw, recs)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	} else {
		writeRecords(&payload, recs)
	}
	covered := binary.BigEndian.AppendUint16(nil, uint16(attrs))
	covered = binary.BigEndian.AppendUint32(covered, uint32(max(len(recs)-1, 0)))
	covered = binary.BigEndian.AppendUint64(covered, 1_700_000_000_000) // first timestamp
	covered = binary.BigEndian.AppendUint64(covered, 1_700_000_000_000)
	covered = binary.BigEndian.AppendUint64(covered, uint64(producer))
	covered = binary.BigEndian.AppendUint16(covered, 0)
	covered = binary.BigEndian.AppendUint32(covered, 0)
	covered = binary.BigEndian.AppendUint32(covered, uint32(len(recs)))
	covered = append(covered, payload.Bytes()...)
	crc := crc32.Checksum(covered, castagnoli)
	out := binary.BigEndian.AppendUint64(nil, uint64(base))
	out = binary.BigEndian.AppendUint32(out, uint32(4+1+4+len(covered)))
	out = binary.BigEndian.AppendUint32(out, 0) // leader epoch
	out = append(out, 2)
	out = binary.BigEndian.AppendUint32(out, crc)
	return append(out, covered...)
}

// controlBatch is a transaction marker of producer at offset.
func controlBatch(t testing.TB, offset, producer int64, abort bool) []byte {
	typ := "\x00\x01"
	if abort {
		typ = "\x00\x00"
	}
	return v2Batch(t, offset, producer, 0x30, []testRecord{{key: "\x00\x00" + typ, value: "\x00\x00\x00\x00\x00\x00"}})
}

// answerBytes encodes a Fetch answer (after the correlation id) of one
// partition holding set.
func answerBytes(version int16, topic string, partition int32, hw int64, aborted []fetch.ResponseTransaction, set []byte) []byte {
	var b []byte
	b = binary.BigEndian.AppendUint32(b, 0) // throttle
	if version >= 7 {
		b = binary.BigEndian.AppendUint16(b, 0)
		b = binary.BigEndian.AppendUint32(b, 0)
	}
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint16(b, uint16(len(topic)))
	b = append(b, topic...)
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint32(b, uint32(partition))
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(hw))
	b = binary.BigEndian.AppendUint64(b, uint64(hw))
	if version >= 5 {
		b = binary.BigEndian.AppendUint64(b, 0)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(aborted)))
	for _, a := range aborted {
		b = binary.BigEndian.AppendUint64(b, uint64(a.ProducerID))
		b = binary.BigEndian.AppendUint64(b, uint64(a.FirstOffset))
	}
	if version >= 11 {
		b = binary.BigEndian.AppendUint32(b, 0)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(set)))
	return append(b, set...)
}

// decodeAnswer reads an answer's bytes as a fetch of topic/0 from offset
// from, within lim, and returns the partition's part.
func decodeAnswer(version int16, raw []byte, from int64, lim Limits, budget *Budget) (*partitionAnswer, error) {
	x := &fetchExchange{version: version, lim: lim, budget: budget, req: &fetch.Request{Topics: []fetch.RequestTopic{{
		Topic: "t", Partitions: []fetch.RequestPartition{{Partition: 0, FetchOffset: from}}}}}}
	a, err := readAnswer(&frameReader{r: bytes.NewReader(raw), remain: int64(len(raw))}, x)
	if err != nil {
		return nil, err
	}
	if len(a.topics) != 1 || len(a.topics[0].partitions) != 1 {
		return nil, errors.New("no partition in the answer")
	}
	return &a.topics[0].partitions[0], nil
}

func values(f *Fetched) []string {
	var out []string
	for _, m := range f.Records {
		out = append(out, string(m.Value))
	}
	return out
}

// TestDecodeReadCommitted walks the read_committed algorithm over a
// hand-made answer: committed, aborted and plain batches interleaved, two
// producers, markers. Only committed and plain records come out; the next
// offset moves past everything.
func TestDecodeReadCommitted(t *testing.T) {
	rec := func(vs ...string) []testRecord {
		out := make([]testRecord, len(vs))
		for i, v := range vs {
			out[i] = testRecord{value: v}
		}
		return out
	}
	var set []byte
	for _, b := range [][]byte{
		v2Batch(t, 0, 7, 0x10, rec("a0", "a1")), // producer 7: committed
		controlBatch(t, 2, 7, false),
		v2Batch(t, 3, 8, 0x10, rec("b0", "b1")), // producer 8: aborted
		v2Batch(t, 5, -1, 0, rec("n0")),         // not transactional
		v2Batch(t, 6, 8, 0x10, rec("b2")),       // still producer 8's aborted transaction
		controlBatch(t, 7, 8, true),
		v2Batch(t, 8, 8, 0x10, rec("c0")), // producer 8's next transaction: committed
		controlBatch(t, 9, 8, false),
	} {
		set = append(set, b...)
	}
	for _, v := range []int16{4, 7, 11} {
		p, err := decodeAnswer(v, answerBytes(v, "t", 0, 20, []fetch.ResponseTransaction{{ProducerID: 8, FirstOffset: 3}}, set), 1, Limits{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		out := &p.fetched
		if got, want := strings.Join(values(out), ","), "a1,n0,c0"; got != want { // a0 is before the fetch offset
			t.Fatalf("v%d: delivered %s, want %s", v, got, want)
		}
		if p.next != 10 || out.Aborted != 3 || out.Markers != 3 || out.Batches != 8 {
			t.Errorf("v%d: next %d aborted %d markers %d batches %d; want 10, 3, 3, 8", v, p.next, out.Aborted, out.Markers, out.Batches)
		}
		if out.Records[0].Offset != 1 || out.Records[2].Offset != 8 || out.Records[0].HighWaterMark != 20 || out.Records[0].Topic != "t" {
			t.Errorf("offsets %d, %d, high watermark %d", out.Records[0].Offset, out.Records[2].Offset, out.Records[0].HighWaterMark)
		}
	}
}

// TestDecodeCodecs: every codec Kafka knows decodes to the same records,
// keys and headers included.
func TestDecodeCodecs(t *testing.T) {
	recs := []testRecord{{key: "k1", value: "v1", headers: [][2]string{{"h", "x"}, {"e", ""}}}, {value: strings.Repeat("v2", 500)}}
	for codec := int16(0); codec <= 4; codec++ {
		p, err := decodeAnswer(11, answerBytes(11, "t", 0, 2, nil, v2Batch(t, 0, -1, codec, recs)), 0, Limits{}, nil)
		if err != nil {
			t.Fatalf("codec %d: %v", codec, err)
		}
		rs := p.fetched.Records
		if len(rs) != 2 || string(rs[0].Key) != "k1" || string(rs[0].Value) != "v1" || string(rs[1].Value) != recs[1].value ||
			len(rs[0].Headers) != 2 || rs[0].Headers[0].Key != "h" || string(rs[0].Headers[0].Value) != "x" || rs[0].Headers[1].Value != nil ||
			rs[1].Key == nil && false || rs[1].Time.UnixMilli() != 1_700_000_001_000 {
			t.Fatalf("codec %d: got %+v", codec, rs)
		}
	}
}

// TestDecodeBombs: a compressed batch holding a record far over its cap
// keeps the records around it and reports the record as Oversized; one
// expanding past the expansion limit reports the rest of the batch; a
// batch sent over MaxBatchBytes is reported whole; memory stays near the
// limits whatever the records claim.
func TestDecodeBombs(t *testing.T) {
	lim := Limits{MaxRecordBytes: 64 << 10, MaxBatchBytes: 1 << 20} // expansion: 16 MiB
	cases := []struct {
		name      string
		recs      []testRecord
		codec     int16
		want      string
		oversized [][2]int64
	}{
		{"an 8 MiB record between two", []testRecord{{value: "a"}, {valueSize: 8 << 20}, {value: "c"}}, 4, "a,c", [][2]int64{{1, 1}}},
		{"a 100 MiB record: the rest of the batch", []testRecord{{value: "a"}, {valueSize: 100 << 20}, {value: "c"}}, 4, "a", [][2]int64{{1, 2}}},
		{"gzip", []testRecord{{value: "a"}, {valueSize: 8 << 20}, {value: "c"}}, 1, "a,c", [][2]int64{{1, 1}}},
		{"lz4", []testRecord{{value: "a"}, {valueSize: 8 << 20}, {value: "c"}}, 3, "a,c", [][2]int64{{1, 1}}},
		{"snappy", []testRecord{{value: "a"}, {valueSize: 300 << 10}, {value: "c"}}, 2, "a,c", [][2]int64{{1, 1}}},
		{"uncompressed, sent over MaxBatchBytes", []testRecord{{value: "a"}, {valueSize: 2 << 20}}, 0, "", [][2]int64{{0, 1}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := answerBytes(11, "t", 0, 3, nil, v2Batch(t, 0, -1, c.codec, c.recs))
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			p, err := decodeAnswer(11, raw, 0, lim, nil)
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(values(&p.fetched), ","); got != c.want {
				t.Errorf("delivered %q, want %q", got, c.want)
			}
			var over [][2]int64
			for _, o := range p.fetched.Oversized {
				over = append(over, [2]int64{o.Offset, o.Last})
				if !strings.Contains(o.Limit, "KAFKA_MAX_") {
					t.Errorf("limit %q names no setting", o.Limit)
				}
			}
			if len(over) != len(c.oversized) || (len(over) > 0 && over[0] != c.oversized[0]) {
				t.Errorf("oversized %v, want %v", over, c.oversized)
			}
			if p.next != 3 && p.next != 2 {
				t.Errorf("next %d", p.next)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 24<<20 {
				t.Errorf("decoding allocated %d MiB", alloc>>20)
			}
		})
	}
}

// TestDecodeBudget: records are kept only while the budget takes them;
// the answer is cut there, the next fetch starts at the first record not
// kept, and BudgetFull says why.
func TestDecodeBudget(t *testing.T) {
	recs := []testRecord{{value: strings.Repeat("a", 1000)}, {value: strings.Repeat("b", 1000)}, {value: strings.Repeat("c", 1000)}}
	raw := answerBytes(11, "t", 0, 3, nil, v2Batch(t, 0, -1, 0, recs))
	b := NewBudget(2500)
	p, err := decodeAnswer(11, raw, 0, Limits{}, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.fetched.Records) != 2 || p.next != 2 || !p.fetched.BudgetFull {
		t.Fatalf("kept %d, next %d, budget full %v; want 2, 2, true", len(p.fetched.Records), p.next, p.fetched.BudgetFull)
	}
	if b.Used() != RecordBytes(p.fetched.Records[0])+RecordBytes(p.fetched.Records[1]) {
		t.Errorf("budget used %d", b.Used())
	}
	p, err = decodeAnswer(11, raw, 2, Limits{}, b)
	if err != nil || len(p.fetched.Records) != 0 || !p.fetched.BudgetFull || p.next != 2 {
		t.Fatalf("with the budget spent: %v, %+v", err, p)
	}
	b.Release(b.Used())
	p, err = decodeAnswer(11, raw, 2, Limits{}, b)
	if err != nil || strings.Join(values(&p.fetched), ",") != recs[2].value || p.next != 3 {
		t.Fatalf("after a release: %v, %+v", err, p)
	}
}

// TestDecodeMalformed: counts and lengths that claim more than the answer
// holds are a format error, never an allocation of what they claim.
func TestDecodeMalformed(t *testing.T) {
	good := v2Batch(t, 0, -1, 0, []testRecord{{value: "a"}})
	negCount := append([]byte(nil), good...)
	binary.BigEndian.PutUint32(negCount[57:61], 0xffffffff) // record count -1 (the crc no longer matches either)
	cases := map[string][]byte{
		"2^31 topics":               binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 0), 0x7fffffff),
		"a record set past the end": answerBytes(11, "t", 0, 1, nil, good)[:len(answerBytes(11, "t", 0, 1, nil, good))-10],
		"negative record count":     answerBytes(11, "t", 0, 1, nil, negCount),
	}
	for name, raw := range cases {
		if _, err := decodeAnswer(11, raw, 0, Limits{}, nil); !errors.Is(err, ErrFormat) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: got %v, want a format error", name, err)
		}
	}
}

// FuzzFetchAnswer: any answer decodes or fails with an error; never a
// panic, never more kept than the limits allow.
func FuzzFetchAnswer(f *testing.F) {
	f.Add(answerBytes(11, "t", 0, 3, nil, v2Batch(f, 0, -1, 0, []testRecord{{key: "k", value: "v", headers: [][2]string{{"a", "b"}}}})))
	f.Add(answerBytes(11, "t", 0, 3, nil, v2Batch(f, 0, -1, 4, []testRecord{{value: "a"}, {valueSize: 1 << 20}})))
	f.Add(answerBytes(11, "t", 0, 3, nil, v2Batch(f, 0, -1, 2, []testRecord{{value: "a"}})))
	f.Add(answerBytes(11, "t", 0, 3, []fetch.ResponseTransaction{{ProducerID: 8, FirstOffset: 0}}, append(v2Batch(f, 0, 8, 0x11, []testRecord{{value: "a"}}), controlBatch(f, 1, 8, true)...)))
	lim := Limits{MaxRecordBytes: 4 << 10, MaxBatchBytes: 64 << 10}
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := decodeAnswer(11, raw, 0, lim, nil)
		if err != nil {
			return
		}
		var kept int64
		for _, m := range p.fetched.Records {
			if RecordBytes(m) > int64(lim.MaxRecordBytes)+1<<10 {
				t.Fatalf("kept a record of %d bytes", RecordBytes(m))
			}
			kept += RecordBytes(m)
		}
		if kept > answerKeepBytes(lim)+int64(lim.MaxRecordBytes)+1<<10 {
			t.Fatalf("kept %d bytes", kept)
		}
	})
}

// FuzzBatchPayload: a batch's payload (past its crc, which the fuzzer
// cannot forge) in any codec, with any record count: records decode or
// fail with an error, never a panic, never kept over the limits.
func FuzzBatchPayload(f *testing.F) {
	var plain bytes.Buffer
	writeRecords(&plain, []testRecord{{key: "k", value: "v", headers: [][2]string{{"a", "b"}}}, {value: "w"}})
	f.Add(uint8(0), int32(2), plain.Bytes())
	for codec := int16(1); codec <= 4; codec++ {
		var z bytes.Buffer
		w := compress.Compression(codec).Codec().NewWriter(&z)
		_, _ = w.Write(plain.Bytes())
		_ = w.Close()
		f.Add(uint8(codec), int32(2), z.Bytes())
	}
	lim := Limits{MaxRecordBytes: 4 << 10, MaxBatchBytes: 64 << 10}
	f.Fuzz(func(t *testing.T, codec uint8, count int32, raw []byte) {
		in, closeIn, err := decompressor(int16(codec%8), raw, lim)
		if err != nil {
			return
		}
		defer closeIn()
		k := &keeper{lim: lim, left: answerKeepBytes(lim)}
		b := &batch{base: 0, last: int64(max(count, 0))}
		_ = readRecords(b, in, count%10000, 0, 0, k, true)
		for _, m := range b.records {
			if RecordBytes(m) > int64(lim.MaxRecordBytes)+1<<10 {
				t.Fatalf("kept a record of %d bytes", RecordBytes(m))
			}
		}
	})
}
