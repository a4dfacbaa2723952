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
	"time"

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
//
// Lookups of different ids never wait on each other: each id has its own
// entry, and one lookup of it is in flight at a time (every other decode
// of that id waits for it). An id the registry does not know, or whose
// schema does not compile, is remembered as such for UnknownTTL, so random
// ids in hostile records cost one registry request each per UnknownTTL,
// not one per record; and at most MaxUnknown of them are kept.
type Decoder struct {
	reg Registry
	now func() time.Time

	mu   sync.Mutex
	byID map[int]*entry
}

// UnknownTTL is how long an id the registry did not know (or a schema that
// did not compile) is answered from memory before it is asked again.
const UnknownTTL = time.Minute

// MaxUnknown bounds the ids remembered as unknown.
const MaxUnknown = 10000

// entry is one schema id: ready once its lookup ended, then either a
// compiled schema or the record's fault.
type entry struct {
	ready chan struct{}
	c     *compiled
	fault error     // an *wire.InvalidEventError, for every record naming the id
	until time.Time // when a fault is forgotten
}

// compiled is a schema ready to decode with.
type compiled struct {
	kind   sr.SchemaType
	decode func(payload []byte, index []int) (any, error)
}

// New returns a decoder reading schemas from reg.
func New(reg Registry) *Decoder {
	return &Decoder{reg: reg, now: time.Now, byID: map[int]*entry{}}
}

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

// schema returns the compiled schema id, fetching it once: lookups of
// one id share one request, lookups of others go on meanwhile.
func (d *Decoder) schema(ctx context.Context, id int) (*compiled, error) {
	for {
		d.mu.Lock()
		e, ok := d.byID[id]
		if ok && e.fault != nil && d.now().After(e.until) {
			delete(d.byID, id)
			ok = false
		}
		if !ok {
			e = &entry{ready: make(chan struct{})}
			d.byID[id] = e
			d.mu.Unlock()
			return d.lookup(ctx, id, e)
		}
		d.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if e.c != nil || e.fault != nil {
			return e.c, e.fault
		}
		// The lookup failed in a way a retry may cure (the entry is gone):
		// look it up again, or wait for whoever does.
	}
}

// lookup fetches and compiles id into e, then wakes who waits for it. A
// failure a retry may cure leaves no entry behind (the waiters look again)
// and is returned to the caller alone.
func (d *Decoder) lookup(ctx context.Context, id int, e *entry) (*compiled, error) {
	c, err := d.fetch(ctx, id)
	d.mu.Lock()
	var ie *wire.InvalidEventError
	switch {
	case err == nil:
		e.c = c
	case errors.As(err, &ie):
		e.fault, e.until = err, d.now().Add(UnknownTTL)
		d.pruneUnknownLocked()
	default:
		delete(d.byID, id)
	}
	d.mu.Unlock()
	close(e.ready)
	return c, err
}

// pruneUnknownLocked drops expired faults, then the oldest, while more
// than MaxUnknown are kept.
func (d *Decoder) pruneUnknownLocked() {
	now, n := d.now(), 0
	for id, e := range d.byID {
		if e.fault != nil {
			if now.After(e.until) {
				delete(d.byID, id)
			} else {
				n++
			}
		}
	}
	for n > MaxUnknown {
		oldest, at := -1, time.Time{}
		for id, e := range d.byID {
			if e.fault != nil && (oldest < 0 || e.until.Before(at)) {
				oldest, at = id, e.until
			}
		}
		delete(d.byID, oldest)
		n--
	}
}

// fetch reads id and the schemas it references from the registry and
// compiles it.
func (d *Decoder) fetch(ctx context.Context, id int) (*compiled, error) {
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
