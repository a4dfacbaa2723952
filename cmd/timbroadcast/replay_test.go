package main

import (
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

func TestReplayFilter(t *testing.T) {
	failed := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	dl := func(offset int64, reason, code string) kafka.Message {
		return kafka.Message{Offset: offset, Headers: []kafka.Header{
			{Key: wire.HeaderDLQReason, Value: []byte(reason)},
			{Key: wire.HeaderDLQCode, Value: []byte(code)},
			{Key: wire.HeaderDLQFailedAt, Value: []byte(failed.Format(wire.TimeLayout))},
		}}
	}
	open := replayFilter{fromOff: -1, toOff: -1}
	tests := []struct {
		name string
		f    replayFilter
		m    kafka.Message
		want bool
	}{
		{"no filter", open, dl(5, "expired", "0"), true},
		{"reason matches", replayFilter{reasons: []string{"api_rejected", "expired"}, fromOff: -1, toOff: -1}, dl(5, "expired", "0"), true},
		{"reason differs", replayFilter{reasons: []string{"api_rejected"}, fromOff: -1, toOff: -1}, dl(5, "expired", "0"), false},
		{"code matches", replayFilter{codes: []int{80001}, fromOff: -1, toOff: -1}, dl(5, "content_blocked", "80001"), true},
		{"code differs", replayFilter{codes: []int{10004}, fromOff: -1, toOff: -1}, dl(5, "content_blocked", "80001"), false},
		{"code missing", replayFilter{codes: []int{10004}, fromOff: -1, toOff: -1}, kafka.Message{}, false},
		{"since inclusive", replayFilter{since: failed, fromOff: -1, toOff: -1}, dl(5, "x", "0"), true},
		{"since after", replayFilter{since: failed.Add(time.Second), fromOff: -1, toOff: -1}, dl(5, "x", "0"), false},
		{"until exclusive", replayFilter{until: failed, fromOff: -1, toOff: -1}, dl(5, "x", "0"), false},
		{"until after", replayFilter{until: failed.Add(time.Second), fromOff: -1, toOff: -1}, dl(5, "x", "0"), true},
		{"offset range", replayFilter{fromOff: 5, toOff: 5}, dl(5, "x", "0"), true},
		{"below range", replayFilter{fromOff: 6, toOff: -1}, dl(5, "x", "0"), false},
		{"above range", replayFilter{fromOff: -1, toOff: 4}, dl(5, "x", "0"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.match(tt.m); got != tt.want {
				t.Errorf("match = %v, want %v", got, tt.want)
			}
		})
	}
	a := replayGroup("t.dlq", "t", replayFilter{reasons: []string{"expired"}, fromOff: -1, toOff: -1})
	b := replayGroup("t.dlq", "t", replayFilter{reasons: []string{"api_rejected"}, fromOff: -1, toOff: -1})
	if a == b || a != replayGroup("t.dlq", "t", replayFilter{reasons: []string{"expired"}, fromOff: -1, toOff: -1}) {
		t.Errorf("replay groups %q, %q: want one per filter, stable", a, b)
	}
}
