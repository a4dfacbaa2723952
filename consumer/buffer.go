package consumer

import (
	"sync"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
)

// heldBytes is what one partition session holds of the worker's budget
// (Config.BufferBytes): the kafkaconn.RecordBytes of every record its pump
// received, given back when the record's offset is committed past, and all
// of it when the session ends (what is not committed is fetched again by
// the next session or owner).
type heldBytes struct {
	budget *kafkaconn.Budget

	mu      sync.Mutex
	records []heldRecord // in offset order
}

type heldRecord struct {
	offset, bytes int64
}

func newHeldBytes(b *kafkaconn.Budget) *heldBytes { return &heldBytes{budget: b} }

// add records what the pump received.
func (h *heldBytes) add(ms []kafka.Message) {
	if h == nil || h.budget == nil || len(ms) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range ms {
		h.records = append(h.records, heldRecord{m.Offset, kafkaconn.RecordBytes(m)})
	}
}

// committed gives back the records before next.
func (h *heldBytes) committed(next int64) {
	if h == nil || h.budget == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var n int64
	i := 0
	for ; i < len(h.records) && h.records[i].offset < next; i++ {
		n += h.records[i].bytes
	}
	h.records = h.records[i:]
	h.budget.Release(n)
}

// releaseAll gives back everything still held.
func (h *heldBytes) releaseAll() {
	if h == nil || h.budget == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var n int64
	for _, r := range h.records {
		n += r.bytes
	}
	h.records = nil
	h.budget.Release(n)
}
