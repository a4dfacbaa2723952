package consumer

import (
	"fmt"
	"strings"
	"testing"
)

// TestReadyTextBounded: /readyz lines carry outside text (a pause
// record's info, a registry's answer): each is cut to a kilobyte with its
// control characters escaped, and at most 50 lines are shown.
func TestReadyTextBounded(t *testing.T) {
	hostile := "paused: member evil\x1b[2J was answered 10007 (" + strings.Repeat("x", 1<<20) + "\x1b]0;owned\x07)"
	lines := []string{hostile}
	for i := range 100 {
		lines = append(lines, fmt.Sprintf("partition t/%d stuck", i))
	}
	out := readyText(lines)
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("/readyz carries raw control characters")
	}
	got := strings.Split(out, "\n")
	if len(got) != 50 || len(got[0]) > 1024 || !strings.HasPrefix(got[49], "... and 52 more") {
		t.Errorf("%d lines, the first %d bytes, the last %q", len(got), len(got[0]), got[len(got)-1])
	}
}
