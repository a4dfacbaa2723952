package consumer

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// holds tracks, per owned partition, the record it is taking to its final
// outcome and since when that record has been failing (a send answered
// with a retry-class error, a lost connection, a dead-letter write that
// failed). A partition failing longer than Config.StuckAfter is stuck:
// /readyz and the metrics say so. Nothing retries forever in silence.
type holds struct {
	mu sync.Mutex
	by map[topicPartition]*hold
}

// hold is one partition's record in progress.
type hold struct {
	offset       int64
	failingSince time.Time // zero while nothing has failed
	failures     int
	lastError    string
}

func newHolds() *holds { return &holds{by: map[topicPartition]*hold{}} }

// start records that partition is now taking offset to its outcome.
func (h *holds) start(partition topicPartition, offset int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.by[partition] = &hold{offset: offset}
}

// ensure starts offset for partition unless it is already held: a write
// after the call (dead letter, receipt) continues the call's hold.
func (h *holds) ensure(partition topicPartition, offset int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur := h.by[partition]; cur == nil || cur.offset != offset {
		h.by[partition] = &hold{offset: offset}
	}
}

// fail records a failure of partition's current record.
func (h *holds) fail(partition topicPartition, at time.Time, what string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := h.by[partition]
	if cur == nil {
		return
	}
	if cur.failingSince.IsZero() {
		cur.failingSince = at
	}
	cur.failures++
	cur.lastError = what
}

// done records that partition finished its record (committed or given
// up), or that it is no longer owned.
func (h *holds) done(partition topicPartition) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.by, partition)
}

// doneAll records that no stream of partition holds a record: the
// partition is no longer owned.
func (h *holds) doneAll(partition topicPartition) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for tp := range h.by {
		if tp.topic == partition.topic && tp.partition == partition.partition {
			delete(h.by, tp)
		}
	}
}

// stuck returns a description of every partition failing on its record
// for longer than after, and the longest failing time of any partition.
func (h *holds) stuck(now time.Time, after time.Duration) (lines []string, longest time.Duration) {
	return h.failing(now, after, func(p topicPartition, cur *hold, d time.Duration) string {
		return fmt.Sprintf("partition %s stuck on offset %d for %s (%d failures, last: %s)",
			p, cur.offset, d.Round(time.Second), cur.failures, cur.lastError)
	})
}

// failing returns a line, as describe words it, for every partition
// failing for longer than after, in partition order, and the longest
// failing time of any partition.
func (h *holds) failing(now time.Time, after time.Duration, describe func(topicPartition, *hold, time.Duration) string) (lines []string, longest time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	parts := make([]topicPartition, 0, len(h.by))
	for p := range h.by {
		parts = append(parts, p)
	}
	sortPartitions(parts)
	for _, p := range parts {
		cur := h.by[p]
		if cur.failingSince.IsZero() {
			continue
		}
		d := now.Sub(cur.failingSince)
		longest = max(longest, d)
		if d >= after {
			lines = append(lines, describe(p, cur, d))
		}
	}
	return lines, longest
}

// readFailures tracks, per partition, reading that keeps failing before
// any record is taken (a fetch refused, a decode the Schema Registry
// cannot serve, the delivered log unreadable, a wait for room in
// TIM_BUFFER_BYTES): at the offset the partition reads from, since when,
// and the last error. It is kept apart from the holds of records being
// sent, which say what a partition's send is stuck on.
type readFailures struct{ h *holds }

func newReadFailures() *readFailures { return &readFailures{h: newHolds()} }

// fail records that reading partition at offset failed at with what.
func (r *readFailures) fail(partition topicPartition, offset int64, at time.Time, what string) {
	r.h.ensure(partition, offset)
	r.h.fail(partition, at, what)
}

// ok records that reading partition works (again), or that it is no
// longer owned.
func (r *readFailures) ok(partition topicPartition) { r.h.done(partition) }

// lines describes the partitions whose reading has kept failing (a
// rotated password, a broker down) for longer than after.
func (r *readFailures) lines(now time.Time, after time.Duration) []string {
	lines, _ := r.h.failing(now, after, func(p topicPartition, cur *hold, d time.Duration) string {
		return fmt.Sprintf("partition %s cannot read records for %s: %s", p, d.Round(time.Second), cur.lastError)
	})
	return lines
}

// stuckSummary is the readiness text for stuck partitions, or "".
func (w *Worker) stuckSummary() string {
	lines, _ := w.holds.stuck(w.cfg.Now(), w.cfg.StuckAfter)
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "; ") + fmt.Sprintf(" (longer than TIM_STUCK_AFTER=%s)", w.cfg.StuckAfter)
}

// notes keeps the last events that readiness reports without failing: a
// skipped range of offsets, say. They are never silent.
type notes struct {
	mu   sync.Mutex
	list []string
}

const maxNotes = 10

// add records a note, stamped with at.
func (n *notes) add(at time.Time, text string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.list = append(n.list, at.UTC().Format(time.RFC3339)+" "+text)
	if len(n.list) > maxNotes {
		n.list = n.list[len(n.list)-maxNotes:]
	}
}

// all returns the notes, oldest first.
func (n *notes) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.list...)
}
