package kafkaconn

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/segmentio/kafka-go"
)

// Record batches are decoded here, not by kafka-go: its decoder expands a
// whole batch in memory however large it claims to be (a 213 KB zstd batch
// holding a 1 GiB record took 2.1 GB), and sizes slices from counts it has
// not checked (a negative record count panics). Brokers check only the
// compressed size of what producers write, so every byte of a batch is
// treated as hostile: counts and lengths are checked against what remains
// before anything is allocated, decompression is a stream with a cap, and
// a record over its cap is passed over (reported as Oversized, for the
// caller to dead-letter) while the records around it are kept.

// Limits bound what decoding one fetch answer may hold.
type Limits struct {
	// MaxRecordBytes caps one record (key, value and headers): a larger
	// one is not kept but reported as Oversized.
	MaxRecordBytes int
	// MaxBatchBytes caps one batch as the broker sends it (compressed)
	// and bounds how far it may expand: a batch sent larger is reported
	// as Oversized whole; one expanding past MaxExpansion times this has
	// the records beyond reported as Oversized.
	MaxBatchBytes int
}

// Default limits: every legitimate event fits many times over (a request
// body is at most 12,000 bytes), Kafka's own default for a batch is 1 MB.
const (
	DefaultMaxRecordBytes = 4 << 20
	DefaultMaxBatchBytes  = 16 << 20
	// MaxExpansion is how many times MaxBatchBytes a batch may decompress
	// to while it is read: what is read past a record's cap is discarded
	// as it streams (CPU, not memory), so the records after an oversized
	// one are still delivered.
	MaxExpansion = 16
)

// DefaultLimits returns the default limits.
func DefaultLimits() Limits {
	return Limits{MaxRecordBytes: DefaultMaxRecordBytes, MaxBatchBytes: DefaultMaxBatchBytes}
}

func (l Limits) orDefault() Limits {
	d := DefaultLimits()
	if l.MaxRecordBytes <= 0 {
		l.MaxRecordBytes = d.MaxRecordBytes
	}
	if l.MaxBatchBytes <= 0 {
		l.MaxBatchBytes = max(d.MaxBatchBytes, l.MaxRecordBytes)
	}
	return l
}

// Oversized is a record, or a run of records, that was not kept because
// it is over a limit. The caller dead-letters it (too_large), naming the
// topic, partition and offsets, so it can be read from the source.
type Oversized struct {
	// Offset is the first offset it covers; Last the last (equal for one
	// record; for a batch sent too large, or the rest of a batch that
	// expands too far, the batch's last offset: some offsets between may
	// hold no record).
	Offset, Last int64
	// Bytes is the size it claims (0 when unknown).
	Bytes int64
	// Limit says which limit it is over, for people.
	Limit string
	// Time is the record's timestamp (the batch's first for a run).
	Time time.Time
}

// ErrFormat marks an answer that breaks the Kafka protocol's format: the
// fetch fails (and is retried), nothing is delivered from it.
var ErrFormat = errors.New("malformed fetch answer")

func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, args...))
}

// batch is one record batch of an answer, decoded within the limits.
type batch struct {
	base       int64
	last       int64 // the last offset it covers
	producerID int64
	// transactional and control are the batch attributes.
	transactional, control bool
	// logAppend says the broker stamped the batch (timestamp type
	// LogAppendTime): every record's time is the batch's max timestamp.
	logAppend bool
	// aborts counts the ABORT markers of a control batch, markers all its
	// control records.
	aborts, markers int
	// skipped counts the records of a batch of an aborted transaction,
	// passed over unread.
	skipped   int
	records   []kafka.Message
	oversized []Oversized
	// cut says the answer's budget ended inside this batch: records from
	// cutAt on were not read, and the next fetch starts there.
	cut   bool
	cutAt int64
}

// A v2 record batch's header, after baseOffset and batchLength: leader
// epoch (4), magic (1), crc (4), then what the crc covers: attributes (2),
// last offset delta (4), first and max timestamp (8+8), producer id (8),
// producer epoch (2), base sequence (4), record count (4).
const (
	batchHeaderAfterLength = 4 + 1 + 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4 // 49
	crcCoveredHeader       = 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4             // 40
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// keeper decides what an answer keeps: the records of one answer share a
// budget of kept bytes (beyond it, a partition's remaining data is fetched
// again later), and the process shares its Budget, if any.
type keeper struct {
	lim Limits
	// left is what the answer may still keep.
	left int64
	// budget, if set, is taken for every kept record.
	budget *Budget
	// budgetFull says a record was not kept for want of budget; need is
	// that record's size.
	budgetFull bool
	need       int64
}

// recordOver is the Oversized of one record of n bytes at offset.
func (k *keeper) recordOver(offset, n int64, at time.Time) Oversized {
	return Oversized{Offset: offset, Last: offset, Bytes: n, Time: at,
		Limit: fmt.Sprintf("a record of %d bytes, over the limit of %d (KAFKA_MAX_RECORD_BYTES)", n, k.lim.MaxRecordBytes)}
}

// answerKeepBytes is what one answer keeps at most (at least one record of
// each partition is always read, so progress never stops).
func answerKeepBytes(l Limits) int64 { return int64(max(8<<20, 2*l.MaxRecordBytes)) }

// take reports whether a record of n bytes is kept; first says it would be
// the partition's first of this answer (always kept within the answer's
// own budget, so a partition always moves).
func (k *keeper) take(n int64, first bool) bool {
	if !first && n > k.left {
		return false
	}
	if k.budget != nil && !k.budget.TryTake(n) {
		k.budgetFull, k.need = true, n
		return false
	}
	k.left -= n
	return true
}

// readBatch reads one batch of a record set from r, which holds the rest
// of the set (setLeft bytes). It returns nil (and no error) at a partial
// batch at the set's end, which brokers may send: it is discarded and
// fetched again from its offset. from is the first offset wanted; first
// says no record of this partition was kept yet in this answer.
//
// enter sees every v2 batch's base offset, producer and attributes before
// its records are read: true passes the batch over unread (a batch of an
// aborted transaction).
func readBatch(r *frameReader, setLeft *int64, from int64, k *keeper, first bool, enter func(base, producerID int64, transactional, control bool) bool) (*batch, error) {
	if *setLeft < 8+4+4+1 {
		return nil, r.discard(setLeft)
	}
	base := r.int64()
	length := int64(r.int32())
	*setLeft -= 12
	if r.err != nil {
		return nil, r.err
	}
	if length > *setLeft {
		return nil, r.discard(setLeft) // partial: fetched again
	}
	if length < 4+1 {
		return nil, formatErr("record batch at offset %d of %d bytes", base, length)
	}
	epochMagic := r.bytes(5)
	*setLeft -= 5
	if r.err != nil {
		return nil, r.err
	}
	magic := epochMagic[4]
	body := length - 5
	switch magic {
	case 2:
		return readBatchV2(r, setLeft, base, body, from, k, first, enter)
	case 0, 1:
		return readMessageSet(r, setLeft, base, body, magic, from, k, first)
	}
	return nil, formatErr("record batch at offset %d: magic byte %d", base, magic)
}

func readBatchV2(r *frameReader, setLeft *int64, base, body, from int64, k *keeper, first bool,
	enter func(base, producerID int64, transactional, control bool) bool) (*batch, error) {
	if body < batchHeaderAfterLength-5 {
		return nil, formatErr("record batch at offset %d: %d bytes, shorter than its header", base, body+5)
	}
	h := r.bytes(batchHeaderAfterLength - 5)
	*setLeft -= batchHeaderAfterLength - 5
	if r.err != nil {
		return nil, r.err
	}
	crc := binary.BigEndian.Uint32(h[0:4])
	covered := h[4:]
	attrs := int16(binary.BigEndian.Uint16(covered[0:2]))
	lastDelta := int32(binary.BigEndian.Uint32(covered[2:6]))
	firstTS := int64(binary.BigEndian.Uint64(covered[6:14]))
	maxTS := int64(binary.BigEndian.Uint64(covered[14:22]))
	producerID := int64(binary.BigEndian.Uint64(covered[22:30]))
	count := int32(binary.BigEndian.Uint32(covered[36:40]))
	b := &batch{base: base, last: base + int64(max(lastDelta, 0)), producerID: producerID,
		transactional: attrs&0x10 != 0, control: attrs&0x20 != 0, logAppend: attrs&0x08 != 0}
	if b.logAppend {
		// Kafka's rule (DefaultRecordBatch): the records of a LogAppendTime
		// batch all carry the broker's time, its max timestamp; their
		// deltas are the producer's and mean nothing.
		firstTS = maxTS
	}
	payload := body - (batchHeaderAfterLength - 5)
	if count < 0 || int64(count) > payload {
		return nil, formatErr("record batch at offset %d: %d records in %d bytes", base, count, payload)
	}
	if enter(base, producerID, b.transactional, b.control) {
		b.skipped = int(count)
		return b, r.discardN(payload, setLeft)
	}
	if payload > int64(k.lim.MaxBatchBytes) {
		// Too large to hold even compressed: passed over as it streams.
		if err := r.discardN(payload, setLeft); err != nil {
			return nil, err
		}
		if !b.control && b.last >= from {
			b.oversized = append(b.oversized, Oversized{Offset: max(base, from), Last: b.last, Bytes: payload,
				Limit: fmt.Sprintf("a record batch of %d bytes, over the limit of %d (KAFKA_MAX_BATCH_BYTES)", payload, k.lim.MaxBatchBytes),
				Time:  millis(firstTS)})
		}
		return b, nil
	}
	raw := r.bytes(int(payload))
	*setLeft -= payload
	if r.err != nil {
		return nil, r.err
	}
	sum := crc32.Update(crc32.Checksum(covered, castagnoli), castagnoli, raw)
	if sum != crc {
		return nil, formatErr("record batch at offset %d: crc32c %08x, computed %08x", base, crc, sum)
	}
	if b.last < from && !b.control {
		return b, nil // wholly before the fetch offset: nothing to read
	}
	in, closeIn, err := decompressor(attrs&7, raw, k.lim)
	if err != nil {
		return nil, formatErr("record batch at offset %d: %v", base, err)
	}
	defer closeIn()
	if b.control {
		return b, readControl(b, in, count)
	}
	return b, readRecords(b, in, count, firstTS, from, k, first)
}

// countingReader counts what it reads and fails past a limit.
type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
}

var errExpansion = errors.New("expansion limit")

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n >= c.limit {
		return 0, errExpansion
	}
	if int64(len(p)) > c.limit-c.n {
		p = p[:c.limit-c.n]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// byteStream is what records are read from: a batch's payload, or its
// decompression.
type byteStream interface {
	io.Reader
	io.ByteReader
}

// decompressor returns the records of a batch payload as a stream that
// fails once it has produced MaxExpansion*MaxBatchBytes. An uncompressed
// payload is read where it is (most batches: no buffer per batch).
func decompressor(codec int16, raw []byte, lim Limits) (byteStream, func(), error) {
	limit := int64(MaxExpansion) * int64(lim.MaxBatchBytes)
	var r io.Reader
	closeFn := func() {}
	switch codec {
	case 0:
		return bytes.NewReader(raw), closeFn, nil
	case 1:
		z, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		r, closeFn = z, func() { z.Close() }
	case 2:
		r = newSnappyReader(raw, limit)
	case 3:
		r = lz4.NewReader(bytes.NewReader(raw))
	case 4:
		window := uint64(max(lim.MaxBatchBytes, 8<<20))
		z, err := zstd.NewReader(bytes.NewReader(raw), zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(window), zstd.WithDecoderMaxMemory(uint64(limit)))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		r, closeFn = z, z.Close
	default:
		return nil, nil, fmt.Errorf("compression codec %d", codec)
	}
	return bufio.NewReaderSize(&countingReader{r: r, limit: limit}, 8<<10), closeFn, nil
}

// snappyReader reads Kafka's snappy payloads: xerial-framed blocks (the
// Java client's) or one raw block; each block's decoded length is checked
// against what may still be produced before it is decoded.
type snappyReader struct {
	src  []byte
	out  []byte
	left int64
	err  error
}

var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

func newSnappyReader(raw []byte, limit int64) *snappyReader {
	s := &snappyReader{left: limit}
	if len(raw) >= 16 && bytes.Equal(raw[:8], xerialMagic) {
		s.src = raw[16:]
		return s
	}
	s.decode(raw)
	s.src = nil
	if s.err == nil && len(s.out) == 0 {
		s.err = io.EOF
	}
	return s
}

func (s *snappyReader) decode(block []byte) {
	n, err := snappy.DecodedLen(block)
	switch {
	case err != nil:
		s.err = fmt.Errorf("snappy: %w", err)
		return
	case int64(n) > s.left:
		s.err = errExpansion
		return
	}
	s.out, s.err = snappy.Decode(nil, block)
	if s.err != nil {
		s.err = fmt.Errorf("snappy: %w", s.err)
	}
	s.left -= int64(len(s.out))
}

func (s *snappyReader) Read(p []byte) (int, error) {
	for len(s.out) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if len(s.src) == 0 {
			return 0, io.EOF
		}
		if len(s.src) < 4 {
			return 0, errors.New("snappy: truncated xerial chunk")
		}
		n := int64(binary.BigEndian.Uint32(s.src[:4]))
		if n > int64(len(s.src)-4) {
			return 0, errors.New("snappy: xerial chunk longer than the batch")
		}
		s.decode(s.src[4 : 4+n])
		s.src = s.src[4+n:]
	}
	n := copy(p, s.out)
	s.out = s.out[n:]
	return n, nil
}

// readControl reads a control batch's records: each key is a version and
// a type (0 ABORT, 1 COMMIT).
func readControl(b *batch, in byteStream, count int32) error {
	for range count {
		rec, err := readRecordBody(in, 1<<10)
		if err != nil {
			return formatErr("control batch at offset %d: %v", b.base, err)
		}
		b.markers++
		if rec.tooLarge || len(rec.key) < 4 {
			continue
		}
		if binary.BigEndian.Uint16(rec.key[2:4]) == controlAbort {
			b.aborts++
		}
	}
	return nil
}

// readRecords reads a data batch's records at or after from, keeping what
// the keeper allows.
func readRecords(b *batch, in byteStream, count int32, firstTS, from int64, k *keeper, first bool) error {
	for i := int32(0); i < count; i++ {
		rec, err := readRecordBody(in, int64(k.lim.MaxRecordBytes))
		if errors.Is(err, errExpansion) {
			// The rest of the batch is past what may be read of it.
			at := b.base
			if n := len(b.records); n > 0 {
				at = b.records[n-1].Offset + 1
			}
			if n := len(b.oversized); n > 0 {
				at = max(at, b.oversized[n-1].Last+1)
			}
			if at = max(at, from); at <= b.last {
				b.oversized = append(b.oversized, Oversized{Offset: at, Last: b.last,
					Limit: fmt.Sprintf("the rest of a record batch that expands past %d bytes (%d x KAFKA_MAX_BATCH_BYTES)",
						int64(MaxExpansion)*int64(k.lim.MaxBatchBytes), MaxExpansion), Time: millis(firstTS)})
			}
			return nil
		}
		if err != nil {
			return formatErr("record batch at offset %d, record %d: %v", b.base, i, err)
		}
		offset := b.base + rec.offsetDelta
		if offset < from {
			continue
		}
		at := millis(firstTS + rec.timestampDelta)
		if b.logAppend {
			at = millis(firstTS)
		}
		if rec.tooLarge {
			b.oversized = append(b.oversized, k.recordOver(offset, rec.length, at))
			continue
		}
		m := kafka.Message{Offset: offset, Key: rec.key, Value: rec.value, Headers: rec.headers, Time: at}
		n := RecordBytes(m)
		if n > int64(k.lim.MaxRecordBytes) {
			// Within its length, but its headers cost more held than sent.
			b.oversized = append(b.oversized, k.recordOver(offset, n, at))
			continue
		}
		if !k.take(n, first && len(b.records) == 0) {
			b.cut, b.cutAt = true, offset
			return nil
		}
		if b.records == nil {
			// Room for the rest of the batch (a hostile count grows it as
			// it goes).
			b.records = make([]kafka.Message, 0, min(count-i, 256))
		}
		b.records = append(b.records, m)
	}
	return nil
}

// RecordBytes is what a fetched record counts against the limits and the
// Budget: its key, value and headers, and a fixed overhead for the rest.
func RecordBytes(m kafka.Message) int64 {
	n := int64(len(m.Key) + len(m.Value) + 128)
	for _, h := range m.Headers {
		n += int64(len(h.Key) + len(h.Value) + 32)
	}
	return n
}

// millis is a record timestamp as kafka-go gives it.
func millis(ms int64) time.Time { return time.Unix(ms/1000, (ms%1000)*int64(time.Millisecond)) }

// recordBody is one v2 record, read within its length.
type recordBody struct {
	length                      int64
	timestampDelta, offsetDelta int64
	key, value                  []byte
	headers                     []kafka.Header
	// tooLarge says the record is over the cap: only its length and
	// deltas were read, the rest passed over.
	tooLarge bool
}

// readRecordBody reads one record: its length, then, within it, the
// fields. A record longer than maxBytes is passed over as it streams.
func readRecordBody(in byteStream, maxBytes int64) (recordBody, error) {
	var rec recordBody
	length, err := binary.ReadVarint(in)
	if err != nil {
		return rec, noEOF(err)
	}
	if length < 0 {
		return rec, fmt.Errorf("record length %d", length)
	}
	rec.length = length
	if length > maxBytes {
		// Only the head is read: attributes, timestamp and offset deltas.
		lr := &io.LimitedReader{R: in, N: length}
		br := bufio.NewReaderSize(lr, 16)
		if _, err := br.ReadByte(); err != nil {
			return rec, noEOF(err)
		}
		if rec.timestampDelta, err = binary.ReadVarint(br); err != nil {
			return rec, noEOF(err)
		}
		if rec.offsetDelta, err = binary.ReadVarint(br); err != nil {
			return rec, noEOF(err)
		}
		if _, err := io.Copy(io.Discard, lr); err != nil {
			return rec, noEOF(err)
		}
		if lr.N > 0 {
			return rec, io.ErrUnexpectedEOF
		}
		rec.tooLarge = true
		return rec, nil
	}
	buf := make([]byte, length)
	if _, err := io.ReadFull(in, buf); err != nil {
		return rec, noEOF(err)
	}
	p := recordParser{b: buf}
	p.byte() // attributes
	rec.timestampDelta = p.varint()
	rec.offsetDelta = p.varint()
	rec.key = p.varbytes()
	rec.value = p.varbytes()
	n := p.varint()
	if p.err == nil && (n < 0 || n > int64(len(p.b))/2) {
		return rec, fmt.Errorf("%d headers in %d bytes", n, len(p.b))
	}
	if n > 0 {
		rec.headers = make([]kafka.Header, 0, n)
	}
	for range n {
		hk := p.varbytes()
		hv := p.varbytes()
		if p.err != nil {
			break
		}
		if len(hv) == 0 {
			hv = nil
		}
		rec.headers = append(rec.headers, kafka.Header{Key: string(hk), Value: hv})
	}
	if p.err != nil {
		return rec, p.err
	}
	return rec, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// recordParser reads a record's fields from its bytes, every length
// checked against what remains.
type recordParser struct {
	b   []byte
	err error
}

func (p *recordParser) byte() byte {
	if p.err != nil || len(p.b) == 0 {
		p.fail()
		return 0
	}
	c := p.b[0]
	p.b = p.b[1:]
	return c
}

func (p *recordParser) varint() int64 {
	if p.err != nil {
		return 0
	}
	v, n := binary.Varint(p.b)
	if n <= 0 {
		p.fail()
		return 0
	}
	p.b = p.b[n:]
	return v
}

// varbytes reads a length and that many bytes; a negative length is nil.
// The bytes are the record buffer's own (one allocation per record).
func (p *recordParser) varbytes() []byte {
	n := p.varint()
	if p.err != nil || n < 0 {
		return nil
	}
	if n > int64(len(p.b)) {
		p.fail()
		return nil
	}
	out := p.b[:n:n]
	p.b = p.b[n:]
	return out
}

func (p *recordParser) fail() {
	if p.err == nil {
		p.err = errors.New("a field runs past the record's length")
	}
}

// readMessageSet reads one message of the legacy formats (magic 0 and 1,
// written by clients before Kafka 0.11): a record, or a compressed wrapper
// whose value is a message set of its own (offsets relative to the
// wrapper's for magic 1). body is what follows the magic byte.
func readMessageSet(r *frameReader, setLeft *int64, offset, body int64, magic byte, from int64, k *keeper, first bool) (*batch, error) {
	b := &batch{base: offset, last: offset}
	if body > int64(k.lim.MaxBatchBytes) {
		if err := r.discardN(body, setLeft); err != nil {
			return nil, err
		}
		if offset >= from {
			b.oversized = append(b.oversized, Oversized{Offset: offset, Last: offset, Bytes: body,
				Limit: fmt.Sprintf("a message of %d bytes, over the limit of %d (KAFKA_MAX_BATCH_BYTES)", body, k.lim.MaxBatchBytes)})
		}
		return b, nil
	}
	raw := r.bytes(int(body))
	*setLeft -= body
	if r.err != nil {
		return nil, r.err
	}
	m, codec, err := parseLegacy(raw, magic)
	if err != nil {
		return nil, formatErr("message at offset %d: %v", offset, err)
	}
	if codec == 0 {
		m.Offset = offset
		if offset < from {
			return b, nil
		}
		if n := RecordBytes(m); n > int64(k.lim.MaxRecordBytes) {
			b.oversized = append(b.oversized, k.recordOver(offset, n, m.Time))
		} else if k.take(n, first) {
			b.records = append(b.records, m)
		} else {
			b.cut, b.cutAt = true, offset
		}
		return b, nil
	}
	in, closeIn, err := decompressor(int16(codec), m.Value, k.lim)
	if err != nil {
		return nil, formatErr("message at offset %d: %v", offset, err)
	}
	defer closeIn()
	// Inner messages: offset, size, then the message.
	var inner []kafka.Message
	var head [12]byte
	for {
		if _, err := io.ReadFull(in, head[:]); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			if errors.Is(err, errExpansion) {
				return b, nil // the rest is not read: delivered records stand
			}
			return nil, formatErr("message at offset %d: inner message: %v", offset, noEOF(err))
		}
		size := int64(int32(binary.BigEndian.Uint32(head[8:12])))
		if size < 0 || size > int64(k.lim.MaxRecordBytes)+64 {
			return nil, formatErr("message at offset %d: inner message of %d bytes", offset, size)
		}
		buf := make([]byte, size)
		if _, err := io.ReadFull(in, buf); err != nil {
			return nil, formatErr("message at offset %d: inner message: %v", offset, noEOF(err))
		}
		if len(buf) < 5 {
			return nil, formatErr("message at offset %d: inner message of %d bytes", offset, len(buf))
		}
		im, icodec, err := parseLegacy(buf[5:], buf[4])
		if err != nil || icodec != 0 {
			return nil, formatErr("message at offset %d: inner message: %v (codec %d)", offset, err, icodec)
		}
		im.Offset = int64(binary.BigEndian.Uint64(head[0:8]))
		inner = append(inner, im)
	}
	if magic == 1 && len(inner) > 0 {
		shift := offset - inner[len(inner)-1].Offset
		for i := range inner {
			inner[i].Offset += shift
		}
	}
	for i, m := range inner {
		if m.Offset < from {
			continue
		}
		if !k.take(RecordBytes(m), first && len(b.records) == 0) {
			b.cut, b.cutAt = true, inner[i].Offset
			break
		}
		b.records = append(b.records, m)
	}
	return b, nil
}

// parseLegacy reads a legacy message after its magic byte: attributes,
// the timestamp (magic 1), key and value.
func parseLegacy(raw []byte, magic byte) (kafka.Message, int, error) {
	var m kafka.Message
	if magic > 1 {
		return m, 0, fmt.Errorf("magic byte %d inside a legacy message", magic)
	}
	if len(raw) < 1 {
		return m, 0, errors.New("truncated")
	}
	codec := int(raw[0] & 7)
	raw = raw[1:]
	if magic == 1 {
		if len(raw) < 8 {
			return m, 0, errors.New("truncated timestamp")
		}
		m.Time = millis(int64(binary.BigEndian.Uint64(raw[:8])))
		raw = raw[8:]
	}
	field := func() ([]byte, error) {
		if len(raw) < 4 {
			return nil, errors.New("truncated length")
		}
		n := int64(int32(binary.BigEndian.Uint32(raw[:4])))
		raw = raw[4:]
		if n < 0 {
			return nil, nil
		}
		if n > int64(len(raw)) {
			return nil, fmt.Errorf("a field of %d bytes with %d left", n, len(raw))
		}
		out := raw[:n:n]
		raw = raw[n:]
		return out, nil
	}
	var err error
	if m.Key, err = field(); err != nil {
		return m, 0, err
	}
	if m.Value, err = field(); err != nil {
		return m, 0, err
	}
	return m, codec, nil
}
