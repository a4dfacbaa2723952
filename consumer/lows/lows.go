// Package lows orders a partition's streams by their low: the first
// offset each holds without a final outcome. The partition commits below
// the lowest, which it reads at once; a low that changes costs a log of
// the streams. A partition shared by a thousand apps has a thousand
// streams, and a call of any of them settles its stream.
package lows

import (
	"container/heap"
	"math"
)

// None is the low of an item that holds nothing without an outcome.
const None = math.MaxInt64

// Item is one stream's place in a Heap.
type Item struct {
	low int64
	at  int // index in the heap; -1 outside one
}

// Low is the item's low (None outside a heap).
func (it *Item) Low() int64 {
	if it.at < 0 {
		return None
	}
	return it.low
}

// Heap orders items by their low; the zero value is empty. It is not
// safe for concurrent use: its owner locks it.
type Heap struct{ items order }

// Add adds it with the low None.
func (h *Heap) Add(it *Item) {
	it.low = None
	heap.Push(&h.items, it)
}

// Set sets it's low.
func (h *Heap) Set(it *Item, low int64) {
	if it.low != low {
		it.low = low
		heap.Fix(&h.items, it.at)
	}
}

// Lowest is the least low of the items (None without any).
func (h *Heap) Lowest() int64 {
	if len(h.items) == 0 {
		return None
	}
	return h.items[0].low
}

// order is the items as container/heap orders them.
type order []*Item

func (o order) Len() int           { return len(o) }
func (o order) Less(i, j int) bool { return o[i].low < o[j].low }
func (o order) Swap(i, j int) {
	o[i], o[j] = o[j], o[i]
	o[i].at, o[j].at = i, j
}

// Push adds an item (heap.Push).
func (o *order) Push(x any) {
	it := x.(*Item)
	it.at = len(*o)
	*o = append(*o, it)
}

// Pop removes the last item (heap.Pop).
func (o *order) Pop() any {
	old := *o
	it := old[len(old)-1]
	it.at = -1
	*o = old[:len(old)-1]
	return it
}
