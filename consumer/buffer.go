package consumer

import (
	"sync"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
)

// heldBytes is what one partition session holds of the worker's budget
// (Config.BufferBytes): the kafkaconn.RecordBytes of every record its pump
// received, given back when the record has its final outcome (or a
// stream lets it go, to read it again later), and all of it when the
// session ends (what is not committed is fetched again by the next
// session or owner).
type heldBytes struct {
	budget *kafkaconn.Budget

	mu      sync.Mutex
	records map[int64]int64 // bytes by offset
}

func newHeldBytes(b *kafkaconn.Budget) *heldBytes {
	return &heldBytes{budget: b, records: map[int64]int64{}}
}

// add records what the pump received.
func (h *heldBytes) add(ms []kafka.Message) {
	if h == nil || h.budget == nil || len(ms) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range ms {
		h.records[m.Offset] += kafkaconn.RecordBytes(m)
	}
}

// release gives back the record at offset.
func (h *heldBytes) release(offset int64) {
	if h == nil || h.budget == nil {
		return
	}
	h.mu.Lock()
	n, ok := h.records[offset]
	delete(h.records, offset)
	h.mu.Unlock()
	if ok {
		h.budget.Release(n)
	}
}

// releaseAll gives back everything still held.
func (h *heldBytes) releaseAll() {
	if h == nil || h.budget == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var n int64
	for _, b := range h.records {
		n += b
	}
	clear(h.records)
	h.budget.Release(n)
}
