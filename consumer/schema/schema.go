// Package schema decodes record values in the Confluent Schema Registry
// wire format (magic byte 0, a 4-byte schema id and, for Protobuf, the
// message-index list) into JSON values, by the schema's type: AVRO (the
// registry's default), PROTOBUF or JSON. Schemas are fetched by id (and
// the references they name) from the registry's REST API and kept for
// the life of the process.
//
// Avro values become JSON as Avro's JSON encoding says: a union's
// non-null value is wrapped in an object keyed by its branch's type name,
// bytes and fixed are strings of code points 0-255, logical types are
// their underlying int or long (a decimal, which Avro's JSON encoding
// would write as raw bytes, is written as its decimal string). Protobuf
// values go through protojson: 64-bit integers are strings, field names
// are the JSON (camelCase) names.
//
// A failure that retrying cannot fix (an id the registry does not know,
// bytes that do not decode with their schema) is a *wire.InvalidEventError
// (reason schema_not_found or decode_failed: the record is dead-lettered);
// any other (the registry unreachable or answering 5xx) is returned as is,
// for the caller to retry.
package schema

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/timbroadcast/timbroadcast/consumer/mapping"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// Registry is what a Decoder needs of a Schema Registry.
type Registry interface {
	SchemaByID(ctx context.Context, id int) (sr.Schema, error)
	SchemaByVersion(ctx context.Context, subject string, version int) (sr.SubjectSchema, error)
}

// Decoder decodes values in the Confluent wire format.
type Decoder struct {
	reg Registry

	mu   sync.Mutex
	byID map[int]*compiled
}

// compiled is a schema ready to decode with.
type compiled struct {
	kind   sr.SchemaType
	decode func(payload []byte, index []int) (any, error)
}

// New returns a decoder reading schemas from reg.
func New(reg Registry) *Decoder { return &Decoder{reg: reg, byID: map[int]*compiled{}} }

// IsWireFormat reports whether value starts like the Confluent wire
// format: magic byte 0 and a schema id. Other values are JSON.
func IsWireFormat(value []byte) bool { return len(value) >= 5 && value[0] == 0 }

// Decode decodes value into JSON values (maps, slices, strings, numbers,
// booleans and nil).
func (d *Decoder) Decode(ctx context.Context, value []byte) (any, error) {
	var h sr.ConfluentHeader
	id, payload, err := h.DecodeID(value)
	if err != nil {
		return nil, &wire.InvalidEventError{Reason: wire.ReasonDecodeFailed, Msg: "Schema Registry wire format: " + err.Error()}
	}
	c, err := d.schema(ctx, id)
	if err != nil {
		return nil, err
	}
	var index []int
	if c.kind == sr.TypeProtobuf {
		if index, payload, err = h.DecodeIndex(payload, 64); err != nil {
			return nil, &wire.InvalidEventError{Reason: wire.ReasonDecodeFailed, Msg: fmt.Sprintf("schema %d: message index: %v", id, err)}
		}
	}
	v, err := c.decode(payload, index)
	if err != nil {
		return nil, &wire.InvalidEventError{Reason: wire.ReasonDecodeFailed, Msg: fmt.Sprintf("schema %d (%s): %v", id, c.kind, err)}
	}
	return v, nil
}

// schema returns the compiled schema id, fetching it once.
func (d *Decoder) schema(ctx context.Context, id int) (*compiled, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.byID[id]; ok {
		return c, nil
	}
	s, err := d.reg.SchemaByID(ctx, id)
	if err != nil {
		return nil, registryError(fmt.Sprintf("schema id %d", id), err)
	}
	refs := map[string]string{}
	if err := d.references(ctx, s.References, refs, 0); err != nil {
		return nil, err
	}
	var c *compiled
	switch s.Type {
	case sr.TypeAvro:
		c, err = compileAvro(s.Schema, refs)
	case sr.TypeProtobuf:
		c, err = compileProtobuf(ctx, s.Schema, refs)
	case sr.TypeJSON:
		c = &compiled{decode: decodeJSON}
	default:
		err = fmt.Errorf("schema type %s is not supported", s.Type)
	}
	if err != nil {
		return nil, &wire.InvalidEventError{Reason: wire.ReasonDecodeFailed, Msg: fmt.Sprintf("schema %d: %v", id, err)}
	}
	c.kind = s.Type
	d.byID[id] = c
	return c, nil
}

// references fetches the schemas refs name (and theirs), by name.
func (d *Decoder) references(ctx context.Context, refs []sr.SchemaReference, into map[string]string, depth int) error {
	if depth > 16 {
		return &wire.InvalidEventError{Reason: wire.ReasonDecodeFailed, Msg: "schema references nest deeper than 16"}
	}
	for _, r := range refs {
		if _, ok := into[r.Name]; ok {
			continue
		}
		ss, err := d.reg.SchemaByVersion(ctx, r.Subject, r.Version)
		if err != nil {
			return registryError(fmt.Sprintf("reference %s (subject %s version %d)", r.Name, r.Subject, r.Version), err)
		}
		into[r.Name] = ss.Schema.Schema
		if err := d.references(ctx, ss.References, into, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// registryError sorts a registry failure: not found is the record's
// problem (dead-lettered); anything else is retried.
func registryError(what string, err error) error {
	var re *sr.ResponseError
	if errors.As(err, &re) && (re.StatusCode == 404 || sr.IsNotFoundError(re.ErrorCode)) {
		return &wire.InvalidEventError{Reason: wire.ReasonSchemaNotFound, Msg: fmt.Sprintf("%s: not in the Schema Registry: %s", what, re.Message)}
	}
	return fmt.Errorf("schema registry: %s: %w", what, err)
}

// decodeJSON decodes a JSON Schema value: the payload is JSON.
func decodeJSON(payload []byte, _ []int) (any, error) { return mapping.ParseJSON(payload) }
