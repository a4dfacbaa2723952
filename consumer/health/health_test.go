package health

import (
	"cmp"
	"strings"
	"testing"
	"time"
)

type key struct {
	topic     string
	partition int
}

func (k key) String() string { return k.topic + "/" + string(rune('0'+k.partition)) }

func compareKeys(a, b key) int {
	return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
}

// TestHoldsStuck: only keys failing longer than the bound are listed, in
// key order, with their offset, failures and last error; a new offset
// (Ensure) starts over, the same one continues; DoneAll ends what it
// matches.
func TestHoldsStuck(t *testing.T) {
	h := NewHolds(compareKeys)
	t0 := time.Unix(1000, 0)
	for _, k := range []key{{"b", 1}, {"a", 2}, {"a", 1}} {
		h.Start(k, 7)
		h.Fail(k, t0, "first")
		h.Fail(k, t0.Add(time.Second), "code 10002")
	}
	h.Start(key{"c", 0}, 3) // never failed: never stuck
	h.Ensure(key{"a", 1}, 7)
	lines, longest := h.Stuck(t0.Add(time.Minute), 30*time.Second)
	want := []string{
		"partition a/1 stuck on offset 7 for 1m0s (2 failures, last: code 10002)",
		"partition a/2 stuck on offset 7 for 1m0s (2 failures, last: code 10002)",
		"partition b/1 stuck on offset 7 for 1m0s (2 failures, last: code 10002)",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") || longest != time.Minute {
		t.Fatalf("stuck = %q, %s; want %q, 1m0s", lines, longest, want)
	}
	h.Ensure(key{"a", 2}, 8) // the next record: its failures are its own
	h.DoneAll(func(k key) bool { return k.topic == "b" })
	if lines, _ := h.Stuck(t0.Add(time.Minute), 30*time.Second); len(lines) != 1 || !strings.HasPrefix(lines[0], "partition a/1") {
		t.Fatalf("after Ensure and DoneAll: %q, want a/1 alone", lines)
	}
	if lines, _ := h.Stuck(t0.Add(20*time.Second), 30*time.Second); len(lines) != 0 {
		t.Fatalf("within the bound: %q, want none", lines)
	}
}

// TestReadFailuresAndNotes: a read failing is listed until it works
// again; notes keep the last ten, oldest first.
func TestReadFailuresAndNotes(t *testing.T) {
	r := NewReadFailures(compareKeys)
	t0 := time.Unix(1000, 0)
	r.Fail(key{"a", 0}, 5, t0, "fetch: refused")
	if got := r.Lines(t0.Add(time.Minute), time.Second); len(got) != 1 || got[0] != "partition a/0 cannot read records for 1m0s: fetch: refused" {
		t.Fatalf("lines = %q", got)
	}
	r.OK(key{"a", 0})
	if got := r.Lines(t0.Add(time.Minute), time.Second); len(got) != 0 {
		t.Fatalf("after OK: %q", got)
	}
	var n Notes
	for i := range 12 {
		n.Add(t0, string(rune('a'+i)))
	}
	all := n.All()
	if len(all) != maxNotes || !strings.HasSuffix(all[0], " c") || !strings.HasSuffix(all[9], " l") {
		t.Fatalf("notes = %q", all)
	}
}
