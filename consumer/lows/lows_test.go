package lows

import (
	"math/rand/v2"
	"testing"
)

// TestLowest: whatever the order of changes, Lowest is the least low of
// the items, None for none.
func TestLowest(t *testing.T) {
	var h Heap
	if h.Lowest() != None {
		t.Fatalf("empty heap: %d, want None", h.Lowest())
	}
	items := make([]*Item, 50)
	for i := range items {
		items[i] = &Item{}
		h.Add(items[i])
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		it := items[r.IntN(len(items))]
		low := int64(None)
		if r.IntN(4) > 0 {
			low = r.Int64N(1000)
		}
		h.Set(it, low)
		want := int64(None)
		for _, x := range items {
			want = min(want, x.Low())
		}
		if got := h.Lowest(); got != want {
			t.Fatalf("Lowest = %d, want %d", got, want)
		}
	}
}
