package consumer

import (
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

// Dead-letter record headers. A dead-letter record carries the original
// key, value and headers, plus these.
const (
	HeaderDLQReason       = "timbroadcast-dlq-reason"
	HeaderDLQClass        = "timbroadcast-dlq-class"
	HeaderDLQCode         = "timbroadcast-dlq-code"
	HeaderDLQInfo         = "timbroadcast-dlq-info"
	HeaderDLQField        = "timbroadcast-dlq-field"
	HeaderDLQAttempts     = "timbroadcast-dlq-attempts"
	HeaderDLQFailedAt     = "timbroadcast-dlq-failed-at"
	HeaderDLQRandom       = "timbroadcast-dlq-random"
	HeaderSourceTopic     = "timbroadcast-source-topic"
	HeaderSourcePartition = "timbroadcast-source-partition"
	HeaderSourceOffset    = "timbroadcast-source-offset"
	HeaderSourceTimestamp = "timbroadcast-source-timestamp"
	dlqHeaderPrefix       = "timbroadcast-dlq-"
	sourceHeaderPrefix    = "timbroadcast-source-"
	maxDLQInfoBytes       = 2048
	dlqTimestampLayout    = time.RFC3339Nano
	dlqDefaultClass       = "reject"
)

// Failure describes why a record is dead-lettered.
type Failure struct {
	// Reason is a short machine-readable reason (expired, invalid_json,
	// invalid_event, body_too_long, api_rejected, content_blocked,
	// unknown_error).
	Reason string
	// Class is the error class ("reject").
	Class string
	// Code is the API error code, 0 if the API was not called.
	Code int
	// Info is the human-readable description.
	Info string
	// Field names the offending field or header, if known.
	Field string
	// Attempts is the number of API requests made for the record.
	Attempts int
	// Random is the Random the record was (or would have been) sent with.
	Random uint32
	// FailedAt is when the failure became final.
	FailedAt time.Time
}

// OriginalHeaders returns a record's headers without the dead-letter and
// source headers timbroadcast adds: the headers the producer wrote.
func OriginalHeaders(hs []protocol.Header) []protocol.Header {
	out := make([]protocol.Header, 0, len(hs))
	for _, h := range hs {
		if strings.HasPrefix(h.Key, dlqHeaderPrefix) || strings.HasPrefix(h.Key, sourceHeaderPrefix) {
			continue
		}
		out = append(out, h)
	}
	return out
}

// deadLetterMessage builds the dead-letter record for m. A record replayed
// from the dead-letter topic carries the headers of its earlier failure:
// the new ones replace them.
func deadLetterMessage(m kafka.Message, f Failure) kafka.Message {
	headers := OriginalHeaders(m.Headers)
	class := f.Class
	if class == "" {
		class = dlqDefaultClass
	}
	info := f.Info
	if len(info) > maxDLQInfoBytes {
		info = info[:maxDLQInfoBytes]
	}
	add := func(k, v string) { headers = append(headers, protocol.Header{Key: k, Value: []byte(v)}) }
	add(HeaderDLQReason, f.Reason)
	add(HeaderDLQClass, class)
	add(HeaderDLQCode, strconv.Itoa(f.Code))
	add(HeaderDLQInfo, info)
	if f.Field != "" {
		add(HeaderDLQField, f.Field)
	}
	add(HeaderDLQAttempts, strconv.Itoa(f.Attempts))
	add(HeaderDLQFailedAt, f.FailedAt.UTC().Format(dlqTimestampLayout))
	if f.Random != 0 {
		add(HeaderDLQRandom, strconv.FormatUint(uint64(f.Random), 10))
	}
	add(HeaderSourceTopic, m.Topic)
	add(HeaderSourcePartition, strconv.Itoa(m.Partition))
	add(HeaderSourceOffset, strconv.FormatInt(m.Offset, 10))
	add(HeaderSourceTimestamp, m.Time.UTC().Format(dlqTimestampLayout))
	return kafka.Message{Key: m.Key, Value: m.Value, Headers: headers}
}

// headerMap returns a record's headers by key; the last value wins.
func headerMap(hs []protocol.Header) map[string][]byte {
	if len(hs) == 0 {
		return nil
	}
	out := make(map[string][]byte, len(hs))
	for _, h := range hs {
		out[h.Key] = h.Value
	}
	return out
}
