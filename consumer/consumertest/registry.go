package consumertest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"
)

// RegistryValue is a record value in the registry's wire format: magic
// byte 0, schema id, the Protobuf message indexes (index; nil for other
// schema types), then payload.
func RegistryValue(tb testing.TB, id int, index []int, payload []byte) []byte {
	tb.Helper()
	var h sr.ConfluentHeader
	b, err := h.AppendEncode(nil, id, index)
	if err != nil {
		tb.Fatal(err)
	}
	return append(b, payload...)
}

// Registry is a Confluent Schema Registry served in-process over real
// HTTP, speaking the part of its documented REST API timbroadcast reads:
// GET /schemas/ids/{id} and GET /subjects/{subject}/versions/{version},
// with the registry's error bodies (404 with error_code 40403 for an
// unknown id). Down makes it answer 503, as a registry that is down.
type Registry struct {
	URL string
	// User and Password, if set, are required as basic auth.
	User, Password string

	srv *httptest.Server

	mu       sync.Mutex
	byID     map[int]registrySchema
	subjects map[string]map[int]int // subject -> version -> id
	fetches  map[int]int            // GET /schemas/ids/{id} answered
	asked    map[int]int            // GET /schemas/ids/{id} received, known or not
	stalls   map[int]chan struct{}
	down     bool
}

// RegistryRef is a reference of a registered schema.
type RegistryRef struct {
	Name    string `json:"name"`
	Subject string `json:"subject"`
	Version int    `json:"version"`
}

type registrySchema struct {
	Schema     string        `json:"schema"`
	SchemaType string        `json:"schemaType,omitempty"`
	References []RegistryRef `json:"references,omitempty"`
}

// NewRegistry starts a registry, closed when the test ends.
func NewRegistry(tb testing.TB) *Registry {
	tb.Helper()
	r := &Registry{byID: map[int]registrySchema{}, subjects: map[string]map[int]int{}, fetches: map[int]int{},
		asked: map[int]int{}, stalls: map[int]chan struct{}{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	r.URL = r.srv.URL
	tb.Cleanup(r.srv.Close)
	return r
}

// Add registers schema text of type kind (AVRO, PROTOBUF, JSON) as id,
// under subject at version 1 when subject is set.
func (r *Registry) Add(id int, kind, subject, text string, refs ...RegistryRef) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if kind == "AVRO" {
		kind = "" // the registry's default type is not written out
	}
	r.byID[id] = registrySchema{Schema: text, SchemaType: kind, References: refs}
	if subject != "" {
		if r.subjects[subject] == nil {
			r.subjects[subject] = map[int]int{}
		}
		r.subjects[subject][1] = id
	}
}

// Down makes the registry answer 503 (true) or work again (false).
func (r *Registry) Down(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = down
}

// Fetches is how often schema id was fetched.
func (r *Registry) Fetches(id int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fetches[id]
}

// Stall holds every answer for schema id until release is closed, as a
// registry slow on one request.
func (r *Registry) Stall(id int, release chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stalls[id] = release
}

// Asked is how often schema id was asked for, known or not.
func (r *Registry) Asked(id int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.asked[id]
}

func (r *Registry) serve(w http.ResponseWriter, req *http.Request) {
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	if len(parts) == 3 && parts[0] == "schemas" && parts[1] == "ids" {
		id, _ := strconv.Atoi(parts[2])
		r.mu.Lock()
		r.asked[id]++
		stall := r.stalls[id]
		r.mu.Unlock()
		if stall != nil {
			select {
			case <-stall:
			case <-req.Context().Done():
				return
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	fail := func(status, code int, msg string) {
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"error_code": code, "message": msg})
	}
	if r.down {
		fail(http.StatusServiceUnavailable, 50003, "registry down")
		return
	}
	if r.User != "" {
		if u, p, ok := req.BasicAuth(); !ok || u != r.User || p != r.Password {
			fail(http.StatusUnauthorized, 40101, "Unauthorized")
			return
		}
	}
	switch {
	case req.Method == http.MethodGet && len(parts) == 3 && parts[0] == "schemas" && parts[1] == "ids":
		id, _ := strconv.Atoi(parts[2])
		s, ok := r.byID[id]
		if !ok {
			fail(http.StatusNotFound, 40403, fmt.Sprintf("Schema %d not found", id))
			return
		}
		r.fetches[id]++
		_ = json.NewEncoder(w).Encode(s)
	case req.Method == http.MethodGet && len(parts) == 4 && parts[0] == "subjects" && parts[2] == "versions":
		version, _ := strconv.Atoi(parts[3])
		id, ok := r.subjects[parts[1]][version]
		if !ok {
			fail(http.StatusNotFound, 40402, "Version not found")
			return
		}
		s := r.byID[id]
		_ = json.NewEncoder(w).Encode(map[string]any{"subject": parts[1], "version": version, "id": id,
			"schema": s.Schema, "schemaType": s.SchemaType, "references": s.References})
	default:
		fail(http.StatusNotFound, 404, "not found")
	}
}
