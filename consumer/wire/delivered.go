package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// DeliveredVersion is the version of the delivered log's entries
// (Watermark.V) this release writes and reads.
const DeliveredVersion = 1

// Resets of a watermark (Watermark.Reset): the entry lowers Next instead
// of raising it.
const (
	// ResetForget: an operator asked to forget deliveries from Next on
	// (`timbroadcast forget`), to show them again on purpose.
	ResetForget = "forget"
	// ResetLogTruncated: the partition's log ended below the watermark
	// (records lost to an unclean leader election, or the topic created
	// again on a broker without topic ids): offsets from Next on hold new
	// records.
	ResetLogTruncated = "log_truncated"
)

// Bounds of a delivered-log entry: a record over them is not an entry.
const (
	maxWatermarkBytes = 4096
	maxTopicName      = 249 // Kafka's own limit
	maxWatermarkApp   = 64
)

// Watermark is one entry of the delivered log, a compacted topic keyed by
// DeliveredKey: every record of (Topic, Partition) before offset Next has
// had its final outcome for the app App, whatever consumer group read it.
// A record below the watermark read again (a new group, offsets reset or
// expired) is not sent again.
//
// Readers apply entries of one key in log order: an entry raises Next
// (the higher of the two wins, so a late write of an earlier owner lowers
// nothing) unless it carries Reset, which sets it; an entry whose TopicID
// differs from the one applied replaces it (the topic was created again).
// Pending, when set, is the call in progress at Next whose first attempt
// had an unknown outcome; the entry that moves Next past it clears it.
//
// Compatibility: a reader ignores fields it does not know. V is raised
// only when an older reader would misread Next; a reader that meets a V it
// does not know does not use the entry (it skips nothing by it) and warns.
type Watermark struct {
	// V is DeliveredVersion.
	V int `json:"v"`
	// App is the destination app (its SDKAppID).
	App string `json:"app"`
	// Topic and Partition name the source partition; TopicID is the
	// topic's id (Kafka 2.8+; "" when the broker reports none).
	Topic     string `json:"topic"`
	TopicID   string `json:"topic_id,omitempty"`
	Partition int    `json:"partition"`
	// Next is the offset after the last record with a final outcome.
	Next int64 `json:"next"`
	// Reset, if set, says Next was lowered on purpose (ResetForget) or
	// because the log was truncated (ResetLogTruncated).
	Reset string `json:"reset,omitempty"`
	// Pending is a call at Next whose outcome is unknown so far.
	Pending *Pending `json:"pending,omitempty"`
	// At is when the entry was written (Unix milliseconds, the writer's
	// clock); By is the writer (member id, or "forget").
	At int64  `json:"at"`
	By string `json:"by,omitempty"`
}

// Pending is a call whose first attempt with an unknown outcome (the
// request went out, no answer proved it refused) started at UnknownSince:
// the next owner resends it only while the server still dedupes it.
type Pending struct {
	// First and Last are the offsets of the call's first and last records.
	First int64 `json:"first"`
	Last  int64 `json:"last"`
	// Random is the call's Random.
	Random uint32 `json:"random"`
	// UnknownSince is the first such attempt's start (Unix milliseconds).
	UnknownSince int64 `json:"unknown_since"`
}

// DeliveredKey is the key of the entries of one source partition for one
// app: "tb1/<app>/<topic>/<partition>". Kafka topic names hold no '/', so
// two apps or two topics never share a key.
func DeliveredKey(app, topic string, partition int) string {
	return "tb1/" + app + "/" + topic + "/" + strconv.Itoa(partition)
}

// Key is the entry's DeliveredKey.
func (w Watermark) Key() string { return DeliveredKey(w.App, w.Topic, w.Partition) }

// Encode returns the entry's record value (JSON).
func (w Watermark) Encode() []byte {
	b, _ := json.Marshal(w) // only strings and numbers: always encodes
	return b
}

// ErrUnknownVersion says an entry was written by a newer release in a
// version this one does not read.
var ErrUnknownVersion = errors.New("delivered log entry of an unknown version")

// ParseWatermark reads an entry from its record key and value, within
// bounds: an entry whose key does not match its fields, whose numbers are
// out of range or which is larger than 4 KiB is an error, and so is one of
// an unknown version (ErrUnknownVersion).
func ParseWatermark(key, value []byte) (Watermark, error) {
	var w Watermark
	if len(value) > maxWatermarkBytes || len(key) > maxWatermarkBytes {
		return w, fmt.Errorf("delivered log entry of %d bytes: over %d", len(value), maxWatermarkBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(value))
	if err := dec.Decode(&w); err != nil {
		return Watermark{}, fmt.Errorf("delivered log entry: %w", err)
	}
	switch {
	case w.V != DeliveredVersion:
		return Watermark{}, fmt.Errorf("%w: v%d", ErrUnknownVersion, w.V)
	case w.App == "" || len(w.App) > maxWatermarkApp || strings.Contains(w.App, "/"):
		return Watermark{}, fmt.Errorf("delivered log entry: app %q", Printable(Cut(w.App, 80)))
	case w.Topic == "" || len(w.Topic) > maxTopicName || strings.Contains(w.Topic, "/"):
		return Watermark{}, fmt.Errorf("delivered log entry: topic %q", Printable(Cut(w.Topic, 80)))
	case w.Partition < 0 || w.Partition > 1<<20 || w.Next < 0 || len(w.TopicID) > 64:
		return Watermark{}, fmt.Errorf("delivered log entry: partition %d, next %d", w.Partition, w.Next)
	case w.Reset != "" && w.Reset != ResetForget && w.Reset != ResetLogTruncated:
		return Watermark{}, fmt.Errorf("delivered log entry: reset %q", Printable(Cut(w.Reset, 80)))
	case w.Pending != nil && (w.Pending.First < 0 || w.Pending.Last < w.Pending.First):
		return Watermark{}, fmt.Errorf("delivered log entry: pending %d..%d", w.Pending.First, w.Pending.Last)
	case string(key) != w.Key():
		return Watermark{}, fmt.Errorf("delivered log entry keyed %q holds %q", Printable(Cut(string(key), 80)), w.Key())
	}
	return w, nil
}

// Apply returns the entry of a key after e, the next entry of that key
// in log order, is applied to w (the zero Watermark when there was none):
// a reset sets Next, any other entry raises it; an entry of another topic
// id replaces w (the topic was created again). The pending call goes with
// the entry that carries it and is dropped once Next has passed it.
func (w Watermark) Apply(e Watermark) Watermark {
	if w.V == 0 || e.Reset != "" || !w.SameTopic(e.TopicID) {
		return e
	}
	if e.TopicID == "" {
		e.TopicID = w.TopicID
	}
	e.Next = max(e.Next, w.Next)
	if e.Pending != nil && e.Pending.Last < e.Next {
		e.Pending = nil
	}
	return e
}

// SameTopic reports whether the entry is of the topic whose id is id: the
// ids are equal, or either is unknown ("": a broker before Kafka 2.8).
func (w Watermark) SameTopic(id string) bool {
	return w.TopicID == id || w.TopicID == "" || id == ""
}
