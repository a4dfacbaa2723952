package sendertest

import (
	"testing"
	"time"
)

func TestLimiterModels(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	tests := []struct {
		model string
		calls []int // milliseconds
		want  []bool
	}{
		// Evenly paced at the limit: every model accepts.
		{LimiterBucket, []int{0, 200, 400, 600, 800, 1000, 1200}, []bool{true, true, true, true, true, true, true}},
		{LimiterWindow, []int{0, 200, 400, 600, 800, 1000, 1200}, []bool{true, true, true, true, true, true, true}},
		{LimiterSliding, []int{0, 200, 400, 600, 800, 1000, 1200}, []bool{true, true, true, true, true, true, true}},
		{LimiterSpacing, []int{0, 200, 400, 600, 800, 1000, 1200}, []bool{true, true, true, true, true, true, true}},
		// A burst of six: the bucket, window and sliding window take five.
		{LimiterBucket, []int{0, 0, 0, 0, 0, 0}, []bool{true, true, true, true, true, false}},
		{LimiterWindow, []int{0, 0, 0, 0, 0, 0}, []bool{true, true, true, true, true, false}},
		{LimiterSliding, []int{0, 0, 0, 0, 0, 0}, []bool{true, true, true, true, true, false}},
		{LimiterSpacing, []int{0, 0, 100, 179, 181}, []bool{true, false, false, false, true}},
		// The fixed window resets on the second; the sliding one does not.
		{LimiterWindow, []int{900, 900, 900, 900, 900, 1000, 1000}, []bool{true, true, true, true, true, true, true}},
		{LimiterSliding, []int{900, 900, 900, 900, 900, 1000, 1899, 1900}, []bool{true, true, true, true, true, false, false, true}},
	}
	for _, tt := range tests {
		l, err := newLimiter(tt.model, 5, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i, ms := range tt.calls {
			if got := l.allow(at(ms)); got != tt.want[i] {
				t.Errorf("%s: call %d at %dms allowed %v, want %v", tt.model, i, ms, got, tt.want[i])
			}
		}
	}
	if _, err := newLimiter("leaky", 5, 0); err == nil {
		t.Error("an unknown model was accepted")
	}
}
