// Package health keeps what the worker's readiness (/readyz) and its
// stuck metrics report: per partition, the record it is taking to its
// final outcome and since when that keeps failing (Holds), reading that
// keeps failing before any record is taken (ReadFailures), and the last
// events reported without failing (Notes). Nothing retries forever in
// silence.
package health

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// Key names a partition (or one app's share of it): comparable, printable
// in a line of /readyz.
type Key interface {
	comparable
	String() string
}

// Holds tracks, per key, the record being taken to its final outcome and
// since when that record has been failing (a send answered with a
// retry-class error, a lost connection, a write or commit refused). A key
// failing longer than the worker's StuckAfter is stuck.
type Holds[K Key] struct {
	cmp func(a, b K) int // orders the lines

	mu sync.Mutex
	by map[K]*hold
}

// hold is one key's record in progress.
type hold struct {
	offset       int64
	failingSince time.Time // zero while nothing has failed
	failures     int
	lastError    string
}

// NewHolds returns holds whose lines are in cmp's order.
func NewHolds[K Key](cmp func(a, b K) int) *Holds[K] {
	return &Holds[K]{cmp: cmp, by: map[K]*hold{}}
}

// Start records that k is now taking offset to its outcome.
func (h *Holds[K]) Start(k K, offset int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.by[k] = &hold{offset: offset}
}

// Ensure starts offset for k unless it is already held: a write after the
// call (dead letter, receipt) continues the call's hold.
func (h *Holds[K]) Ensure(k K, offset int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur := h.by[k]; cur == nil || cur.offset != offset {
		h.by[k] = &hold{offset: offset}
	}
}

// Fail records a failure, at at, of k's current record.
func (h *Holds[K]) Fail(k K, at time.Time, what string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := h.by[k]
	if cur == nil {
		return
	}
	if cur.failingSince.IsZero() {
		cur.failingSince = at
	}
	cur.failures++
	cur.lastError = what
}

// Done records that k finished its record (committed or given up), or
// that it is no longer owned.
func (h *Holds[K]) Done(k K) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.by, k)
}

// DoneAll ends the hold of every key match accepts (a partition's apps,
// once the partition is no longer owned).
func (h *Holds[K]) DoneAll(match func(K) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k := range h.by {
		if match(k) {
			delete(h.by, k)
		}
	}
}

// Stuck returns a line for every key failing on its record for longer
// than after, and the longest failing time of any key.
func (h *Holds[K]) Stuck(now time.Time, after time.Duration) (lines []string, longest time.Duration) {
	return h.failing(now, after, func(k K, cur *hold, d time.Duration) string {
		return fmt.Sprintf("partition %s stuck on offset %d for %s (%d failures, last: %s)",
			k, cur.offset, d.Round(time.Second), cur.failures, cur.lastError)
	})
}

// failing returns a line, as describe words it, for every key failing for
// longer than after, in key order, and the longest failing time of any.
func (h *Holds[K]) failing(now time.Time, after time.Duration, describe func(K, *hold, time.Duration) string) (lines []string, longest time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	keys := make([]K, 0, len(h.by))
	for k := range h.by {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, h.cmp)
	for _, k := range keys {
		cur := h.by[k]
		if cur.failingSince.IsZero() {
			continue
		}
		d := now.Sub(cur.failingSince)
		longest = max(longest, d)
		if d >= after {
			lines = append(lines, describe(k, cur, d))
		}
	}
	return lines, longest
}

// ReadFailures tracks, per key, reading that keeps failing before any
// record is taken (a fetch refused, a decode the Schema Registry cannot
// serve, the delivered log unreadable, a wait for room in
// TIM_BUFFER_BYTES): at the offset read from, since when, and the last
// error. It is kept apart from the Holds of records being sent, which say
// what a partition's send is stuck on.
type ReadFailures[K Key] struct{ h *Holds[K] }

// NewReadFailures returns read failures whose lines are in cmp's order.
func NewReadFailures[K Key](cmp func(a, b K) int) *ReadFailures[K] {
	return &ReadFailures[K]{h: NewHolds(cmp)}
}

// Fail records that reading k at offset failed at at with what.
func (r *ReadFailures[K]) Fail(k K, offset int64, at time.Time, what string) {
	r.h.Ensure(k, offset)
	r.h.Fail(k, at, what)
}

// OK records that reading k works (again), or that it is no longer owned.
func (r *ReadFailures[K]) OK(k K) { r.h.Done(k) }

// Lines describes the keys whose reading has kept failing (a rotated
// password, a broker down) for longer than after.
func (r *ReadFailures[K]) Lines(now time.Time, after time.Duration) []string {
	lines, _ := r.h.failing(now, after, func(k K, cur *hold, d time.Duration) string {
		return fmt.Sprintf("partition %s cannot read records for %s: %s", k, d.Round(time.Second), cur.lastError)
	})
	return lines
}

// Notes keeps the last events that readiness reports without failing: a
// skipped range of offsets, say. They are never silent. The zero value
// is ready to use.
type Notes struct {
	mu   sync.Mutex
	list []string
}

// maxNotes is how many notes are kept.
const maxNotes = 10

// Add records a note, stamped with at.
func (n *Notes) Add(at time.Time, text string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.list = append(n.list, at.UTC().Format(time.RFC3339)+" "+text)
	if len(n.list) > maxNotes {
		n.list = n.list[len(n.list)-maxNotes:]
	}
}

// All returns the notes, oldest first.
func (n *Notes) All() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.list...)
}
