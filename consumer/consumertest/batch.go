package consumertest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/produce"
	"github.com/segmentio/kafka-go/protocol/rawproduce"
)

// BatchRecord is one record of a hand-made record batch. ZeroValue > 0
// makes the value that many zero bytes, never held in memory: with
// CodecZstdRLE a record of a gigabyte costs a few tens of kilobytes of
// batch, as a hostile producer can write it (brokers check the compressed
// size only).
type BatchRecord struct {
	Key, Value []byte
	ZeroValue  int64
	Headers    []kafka.Header
}

// CodecZstdRLE is a zstd batch written by hand with run-length blocks for
// zero values (a valid zstd frame any decoder reads); codecs 0 to 4 are
// Kafka's (none, gzip, snappy, lz4, zstd) through kafka-go's encoders.
const CodecZstdRLE = 100

// RecordBatch encodes records as one v2 record batch (base offset 0, no
// producer: the broker assigns offsets) compressed with codec.
func RecordBatch(codec int, recs ...BatchRecord) ([]byte, error) {
	var payload bytes.Buffer
	attrs := int16(codec)
	switch {
	case codec == CodecZstdRLE:
		attrs = 4
		z := &rleFrame{}
		writeBatchRecords(z, recs)
		payload.Write(z.finish())
	case codec != 0:
		zw := compress.Compression(codec).Codec().NewWriter(&payload)
		writeBatchRecords(zw, recs)
		if err := zw.Close(); err != nil {
			return nil, err
		}
	default:
		writeBatchRecords(&payload, recs)
	}
	covered := binary.BigEndian.AppendUint16(nil, uint16(attrs))
	covered = binary.BigEndian.AppendUint32(covered, uint32(max(len(recs)-1, 0)))
	ts := uint64(1_700_000_000_000)
	covered = binary.BigEndian.AppendUint64(covered, ts)
	covered = binary.BigEndian.AppendUint64(covered, ts)
	covered = binary.BigEndian.AppendUint64(covered, ^uint64(0)) // producer id -1
	covered = binary.BigEndian.AppendUint16(covered, 0xffff)
	covered = binary.BigEndian.AppendUint32(covered, 0xffffffff)
	covered = binary.BigEndian.AppendUint32(covered, uint32(len(recs)))
	covered = append(covered, payload.Bytes()...)
	out := binary.BigEndian.AppendUint64(nil, 0)
	out = binary.BigEndian.AppendUint32(out, uint32(4+1+4+len(covered)))
	out = binary.BigEndian.AppendUint32(out, 0xffffffff) // leader epoch
	out = append(out, 2)
	out = binary.BigEndian.AppendUint32(out, crc32.Checksum(covered, crc32.MakeTable(crc32.Castagnoli)))
	return append(out, covered...), nil
}

// zeroWriter is a writer that can also take a run of zero bytes without
// them being held.
type zeroWriter interface {
	Write([]byte) (int, error)
}

func writeBatchRecords(w zeroWriter, recs []BatchRecord) {
	for i, r := range recs {
		var head []byte
		head = append(head, 0) // attributes
		head = binary.AppendVarint(head, 0)
		head = binary.AppendVarint(head, int64(i))
		head = binary.AppendVarint(head, int64(len(r.Key)))
		head = append(head, r.Key...)
		vlen := int64(len(r.Value))
		if r.ZeroValue > 0 {
			vlen = r.ZeroValue
		}
		head = binary.AppendVarint(head, vlen)
		tail := binary.AppendVarint(nil, int64(len(r.Headers)))
		for _, h := range r.Headers {
			tail = binary.AppendVarint(tail, int64(len(h.Key)))
			tail = append(tail, h.Key...)
			tail = binary.AppendVarint(tail, int64(len(h.Value)))
			tail = append(tail, h.Value...)
		}
		_, _ = w.Write(binary.AppendVarint(nil, int64(len(head))+vlen+int64(len(tail))))
		_, _ = w.Write(head)
		switch z, ok := w.(*rleFrame); {
		case r.ZeroValue > 0 && ok:
			z.zeros(r.ZeroValue)
		case r.ZeroValue > 0:
			chunk := make([]byte, 64<<10)
			for left := r.ZeroValue; left > 0; left -= int64(len(chunk)) {
				_, _ = w.Write(chunk[:min(left, int64(len(chunk)))])
			}
		default:
			_, _ = w.Write(r.Value)
		}
		_, _ = w.Write(tail)
	}
}

// rleFrame writes a zstd frame (RFC 8878) of raw blocks and run-length
// blocks of zeros, 128 KiB each at most.
type rleFrame struct {
	out    []byte
	raw    []byte // pending raw content
	blocks int
}

const rleBlockMax = 128 << 10

func (z *rleFrame) Write(p []byte) (int, error) {
	z.raw = append(z.raw, p...)
	for len(z.raw) >= rleBlockMax {
		z.block(0, rleBlockMax, z.raw[:rleBlockMax])
		z.raw = z.raw[rleBlockMax:]
	}
	return len(p), nil
}

func (z *rleFrame) flushRaw() {
	if len(z.raw) > 0 {
		z.block(0, len(z.raw), z.raw)
		z.raw = z.raw[:0]
	}
}

func (z *rleFrame) zeros(n int64) {
	z.flushRaw()
	for n > 0 {
		size := min(n, rleBlockMax)
		z.block(1, int(size), []byte{0})
		n -= size
	}
}

// block appends a block header (last flag set in finish) and content.
func (z *rleFrame) block(typ, size int, content []byte) {
	h := uint32(typ)<<1 | uint32(size)<<3
	z.out = append(z.out, byte(h), byte(h>>8), byte(h>>16))
	z.out = append(z.out, content...)
	z.blocks++
}

func (z *rleFrame) finish() []byte {
	z.flushRaw()
	if z.blocks == 0 {
		z.block(0, 0, nil)
	}
	// The frame header: magic, a descriptor without content size or
	// checksum, a window of 128 KiB.
	head := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3}
	// Mark the last block: walk the blocks to find its header.
	at, last := 0, 0
	for at < len(z.out) {
		last = at
		h := uint32(z.out[at]) | uint32(z.out[at+1])<<8 | uint32(z.out[at+2])<<16
		size := int(h >> 3)
		if (h>>1)&3 == 1 {
			size = 1
		}
		at += 3 + size
	}
	z.out[last] |= 1
	return append(head, z.out...)
}

// ProduceBatch appends a record batch's bytes as they are to topic's
// partition, as a producer's request carries them (acks=all).
func (c *Cluster) ProduceBatch(ctx context.Context, topic string, partition int, batch []byte) error {
	set := append(binary.BigEndian.AppendUint32(nil, uint32(len(batch))), batch...) // the record set's size, then the batch
	msg, err := c.Transport().RoundTrip(ctx, kafka.TCP(c.Brokers...), &rawproduce.Request{Acks: -1, Timeout: 10000,
		Topics: []rawproduce.RequestTopic{{Topic: topic, Partitions: []rawproduce.RequestPartition{{
			Partition: int32(partition), RecordSet: protocol.RawRecordSet{Reader: bytes.NewReader(set)}}}}}})
	if err != nil {
		return fmt.Errorf("produce a batch to %s/%d: %w", topic, partition, err)
	}
	for _, t := range msg.(*produce.Response).Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 {
				return fmt.Errorf("produce a batch to %s/%d: %w", topic, partition, kafka.Error(p.ErrorCode))
			}
		}
	}
	return nil
}
