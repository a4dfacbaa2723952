package schema

import (
	"errors"
	"fmt"

	"github.com/hamba/avro/v2"
)

// Avro's binary encoding lets a few bytes claim any size: a block count of
// 2^45 items of a type that takes no bytes (null, an empty record), a
// string length of 2^60. Decoders that believe a count before reading what
// it counts allocate it (hamba panics with "allocation size out of range"
// or runs for days). So a payload is first walked against its schema, with
// nothing allocated, and decoded only when everything it claims is there
// and within these bounds.
const (
	// avroMaxValues caps the values (fields, items, entries) one payload may
	// hold: far more than any event, and a decoded value of about 100 bytes
	// each keeps the worst case to tens of megabytes.
	avroMaxValues = 1 << 18
	// avroMaxDepth caps how deep values nest (recursive schemas).
	avroMaxDepth = 64
)

// errAvroBounds is wrapped by every bounds failure of checkAvro.
var errAvroBounds = errors.New("avro bounds")

// avroWalk walks one payload against a schema without allocating.
type avroWalk struct {
	b      []byte
	values int
}

// checkAvro reports whether payload is a well-formed encoding of s within
// the bounds above; the error names the bound a payload broke.
func checkAvro(s avro.Schema, payload []byte) error {
	w := &avroWalk{b: payload}
	return w.value(s, 0)
}

func (w *avroWalk) fail(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errAvroBounds, fmt.Sprintf(format, args...))
}

func (w *avroWalk) long() (int64, error) {
	var u uint64
	for shift := uint(0); ; shift += 7 {
		if len(w.b) == 0 {
			return 0, w.fail("truncated varint")
		}
		if shift >= 64 {
			return 0, w.fail("varint longer than 10 bytes")
		}
		c := w.b[0]
		w.b = w.b[1:]
		u |= uint64(c&0x7f) << shift
		if c < 0x80 {
			break
		}
	}
	return int64(u>>1) ^ -int64(u&1), nil
}

func (w *avroWalk) skip(n int64, what string) error {
	if n < 0 || n > int64(len(w.b)) {
		return w.fail("%s of %d bytes with %d left in the payload", what, n, len(w.b))
	}
	w.b = w.b[n:]
	return nil
}

func (w *avroWalk) value(s avro.Schema, depth int) error {
	if depth > avroMaxDepth {
		return w.fail("values nest deeper than %d", avroMaxDepth)
	}
	if w.values++; w.values > avroMaxValues {
		return w.fail("more than %d values", avroMaxValues)
	}
	if ref, ok := s.(*avro.RefSchema); ok {
		s = ref.Schema()
	}
	switch sc := s.(type) {
	case *avro.RecordSchema:
		for _, f := range sc.Fields() {
			if err := w.value(f.Type(), depth+1); err != nil {
				return err
			}
		}
		return nil
	case *avro.ArraySchema:
		return w.blocks(depth, func() error { return w.value(sc.Items(), depth+1) })
	case *avro.MapSchema:
		return w.blocks(depth, func() error {
			n, err := w.long()
			if err != nil {
				return err
			}
			if err := w.skip(n, "map key"); err != nil {
				return err
			}
			return w.value(sc.Values(), depth+1)
		})
	case *avro.UnionSchema:
		i, err := w.long()
		if err != nil {
			return err
		}
		types := sc.Types()
		if i < 0 || i >= int64(len(types)) {
			return w.fail("union branch %d of %d", i, len(types))
		}
		return w.value(types[i], depth+1)
	case *avro.FixedSchema:
		return w.skip(int64(sc.Size()), "fixed")
	case *avro.EnumSchema:
		i, err := w.long()
		if err != nil {
			return err
		}
		if i < 0 || i >= int64(len(sc.Symbols())) {
			return w.fail("enum symbol %d of %d", i, len(sc.Symbols()))
		}
		return nil
	}
	switch s.Type() {
	case avro.Null:
		return nil
	case avro.Boolean:
		return w.skip(1, "boolean")
	case avro.Int, avro.Long:
		_, err := w.long()
		return err
	case avro.Float:
		return w.skip(4, "float")
	case avro.Double:
		return w.skip(8, "double")
	case avro.String, avro.Bytes:
		n, err := w.long()
		if err != nil {
			return err
		}
		return w.skip(n, string(s.Type()))
	}
	return w.fail("schema type %s", s.Type())
}

// blocks walks an array's or map's blocks: a count (negative: followed by
// the block's size in bytes), the items, until a count of zero.
func (w *avroWalk) blocks(depth int, item func() error) error {
	for {
		n, err := w.long()
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if n < 0 {
			if n == -n { // math.MinInt64
				return w.fail("block count out of range")
			}
			n = -n
			size, err := w.long()
			if err != nil {
				return err
			}
			if size < 0 || size > int64(len(w.b)) {
				return w.fail("block of %d bytes with %d left in the payload", size, len(w.b))
			}
		}
		if n > avroMaxValues-int64(w.values) {
			return w.fail("a block claims %d items, more than the %d values a payload may hold", n, avroMaxValues)
		}
		for range n {
			if err := item(); err != nil {
				return err
			}
		}
	}
}
