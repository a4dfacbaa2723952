package schema

import (
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/hamba/avro/v2"
)

// avroAPI decodes with byte and allocation limits on top of checkAvro's
// walk: no string, bytes or slice larger than a record may be.
var avroAPI = avro.Config{MaxByteSliceSize: 16 << 20, MaxSliceAllocSize: avroMaxValues}.Freeze()

// compileAvro parses an Avro schema (its named references parsed first,
// into one cache) into a decoder.
func compileAvro(text string, refs map[string]string) (*compiled, error) {
	cache := &avro.SchemaCache{}
	for name, ref := range refs {
		if _, err := avro.ParseWithCache(ref, "", cache); err != nil {
			return nil, fmt.Errorf("reference %s: %w", name, err)
		}
	}
	s, err := avro.ParseWithCache(text, "", cache)
	if err != nil {
		return nil, err
	}
	return &compiled{decode: func(payload []byte, _ []int) (any, error) {
		if err := checkAvro(s, payload); err != nil {
			return nil, err
		}
		var v any
		if err := avroAPI.Unmarshal(s, payload, &v); err != nil {
			return nil, err
		}
		return avroJSON(s, v), nil
	}}, nil
}

// avroJSON converts a value hamba decoded with schema s into the values of
// Avro's JSON encoding.
func avroJSON(s avro.Schema, v any) any {
	if v == nil {
		return nil
	}
	switch sc := s.(type) {
	case *avro.RecordSchema:
		m, ok := v.(map[string]any)
		if !ok {
			return v
		}
		out := make(map[string]any, len(m))
		for _, f := range sc.Fields() {
			if fv, ok := m[f.Name()]; ok {
				out[f.Name()] = avroJSON(f.Type(), fv)
			}
		}
		return out
	case *avro.ArraySchema:
		items, ok := v.([]any)
		if !ok {
			return v
		}
		out := make([]any, len(items))
		for i, it := range items {
			out[i] = avroJSON(sc.Items(), it)
		}
		return out
	case *avro.MapSchema:
		m, ok := v.(map[string]any)
		if !ok {
			return v
		}
		out := make(map[string]any, len(m))
		for k, e := range m {
			out[k] = avroJSON(sc.Values(), e)
		}
		return out
	case *avro.UnionSchema:
		branch := unionBranch(sc, v)
		if branch == nil {
			return v
		}
		return map[string]any{typeName(branch): avroJSON(branch, v)}
	case *avro.FixedSchema:
		if b, ok := v.([]byte); ok {
			return codePoints(b)
		}
		if b, ok := v.([]any); ok { // hamba decodes fixed into an array
			return b
		}
		return logical(v)
	case *avro.PrimitiveSchema:
		if b, ok := v.([]byte); ok && sc.Logical() == nil {
			return codePoints(b)
		}
		return logical(v)
	}
	return logical(v)
}

// logical writes a logical type's value as its underlying type (a
// decimal as its decimal string).
func logical(v any) any {
	switch x := v.(type) {
	case time.Time:
		return x.UnixMilli()
	case time.Duration:
		return x.Milliseconds()
	case *big.Rat:
		return x.FloatString(decimalPlaces(x))
	case [16]byte: // uuid as fixed
		return fmt.Sprintf("%x-%x-%x-%x-%x", x[0:4], x[4:6], x[6:8], x[8:10], x[10:])
	}
	return v
}

// decimalPlaces is enough places to write r exactly when its denominator
// is a power of ten (a decimal's), else 18.
func decimalPlaces(r *big.Rat) int {
	d := new(big.Int).Set(r.Denom())
	ten := big.NewInt(10)
	for n := 0; n < 40; n++ {
		if d.Cmp(big.NewInt(1)) == 0 {
			return n
		}
		q, m := new(big.Int).QuoRem(d, ten, new(big.Int))
		if m.Sign() != 0 {
			break
		}
		d = q
	}
	return 18
}

// codePoints writes bytes as Avro's JSON encoding does: a string whose
// code points are the byte values.
func codePoints(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		s.WriteRune(rune(c))
	}
	return s.String()
}

// unionBranch finds the branch of u that a non-nil decoded value v came
// from.
func unionBranch(u *avro.UnionSchema, v any) avro.Schema {
	for _, t := range u.Types() {
		if fits(t, v) {
			return t
		}
	}
	return nil
}

// fits reports whether decoded value v can be of schema t.
func fits(t avro.Schema, v any) bool {
	switch t.Type() {
	case avro.Null:
		return v == nil
	case avro.Boolean:
		_, ok := v.(bool)
		return ok
	case avro.Int:
		switch v.(type) {
		case int, int32, time.Time, time.Duration:
			return true
		}
	case avro.Long:
		switch v.(type) {
		case int64, time.Time, time.Duration:
			return true
		}
	case avro.Float:
		_, ok := v.(float32)
		return ok
	case avro.Double:
		_, ok := v.(float64)
		return ok
	case avro.String, avro.Enum:
		_, ok := v.(string)
		return ok
	case avro.Bytes, avro.Fixed:
		switch v.(type) {
		case []byte, *big.Rat, [16]byte:
			return true
		}
	case avro.Array:
		_, ok := v.([]any)
		return ok
	case avro.Map, avro.Record:
		_, ok := v.(map[string]any)
		return ok
	}
	return false
}

// typeName is the name Avro's JSON encoding keys a union value with: the
// full name of a named type, else the type's name.
func typeName(t avro.Schema) string {
	if n, ok := t.(avro.NamedSchema); ok {
		return n.FullName()
	}
	return string(t.Type())
}
