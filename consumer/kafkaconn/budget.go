package kafkaconn

import (
	"context"
	"sync"

	"github.com/segmentio/kafka-go"
)

// Budget bounds the bytes of fetched records a process holds between the
// fetch and their end (RecordBytes each): a fetch keeps a record only if
// the budget takes it, and whoever ends the record (commits it, or drops
// it unsent) releases it. So the records buffered by every partition
// together never exceed the budget, whatever their count or size.
type Budget struct {
	mu    sync.Mutex
	size  int64
	used  int64
	freed chan struct{} // closed and replaced on every release
}

// NewBudget returns a budget of size bytes.
func NewBudget(size int64) *Budget {
	return &Budget{size: size, freed: make(chan struct{})}
}

// Size is the budget's size in bytes.
func (b *Budget) Size() int64 { return b.size }

// Used is what is taken now.
func (b *Budget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// TryTake takes n bytes if they fit.
func (b *Budget) TryTake(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.size {
		return false
	}
	b.used += n
	return true
}

// Release gives back n bytes taken earlier.
func (b *Budget) Release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used = max(b.used-n, 0)
	close(b.freed)
	b.freed = make(chan struct{})
}

// Wait waits until n bytes would fit, or ctx ends.
func (b *Budget) Wait(ctx context.Context, n int64) error {
	for {
		b.mu.Lock()
		fits, freed := b.used+n <= b.size, b.freed
		b.mu.Unlock()
		if fits {
			return nil
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Held is what one partition session holds of a Budget: the RecordBytes
// of every record its fetch received, given back when the record has its final outcome (or a
// stream lets it go, to read it again later), and all of it when the
// session ends (what is not committed is fetched again by the next
// session or owner).
type Held struct {
	budget *Budget

	mu      sync.Mutex
	records map[int64]int64 // bytes by offset
}

// NewHeld returns a partition session's share of b.
func NewHeld(b *Budget) *Held {
	return &Held{budget: b, records: map[int64]int64{}}
}

// Add records what the pump received.
func (h *Held) Add(ms []kafka.Message) {
	if h == nil || h.budget == nil || len(ms) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range ms {
		h.records[m.Offset] += RecordBytes(m)
	}
}

// Release gives back the record at offset.
func (h *Held) Release(offset int64) {
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

// ReleaseAll gives back everything still held.
func (h *Held) ReleaseAll() {
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
