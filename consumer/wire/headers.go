package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// HeaderExpiresAt is the optional record header holding an RFC 3339 time
// after which the event must not be sent.
const HeaderExpiresAt = "timbroadcast-expires-at"

// HeaderReplayedFrom marks a record re-published by `timbroadcast replay`:
// "<dead-letter topic>/<partition>/<offset>".
const HeaderReplayedFrom = "timbroadcast-replayed-from"

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
	// HeaderDLQTruncated marks a dead-letter record whose copy of the
	// original had to be cut to fit the dead-letter topic: "value", or
	// "value,key,headers" when more had to go.
	HeaderDLQTruncated = "timbroadcast-dlq-truncated"
	// HeaderDLQOriginalSize and HeaderDLQOriginalSHA256 describe the
	// original value of a truncated dead-letter record (bytes; lowercase
	// hex), so it can be found again in the source topic.
	HeaderDLQOriginalSize   = "timbroadcast-dlq-original-size"
	HeaderDLQOriginalSHA256 = "timbroadcast-dlq-original-sha256"
)

const (
	dlqHeaderPrefix    = "timbroadcast-dlq-"
	sourceHeaderPrefix = "timbroadcast-source-"
	// MaxInfoBytes caps the dead-letter info header.
	MaxInfoBytes = 2048
	// TimeLayout is the layout of the dead-letter time headers.
	TimeLayout   = time.RFC3339Nano
	defaultClass = "reject"
)

// DeadLetterTopic returns the dead-letter topic of a source topic when
// none is configured: "<topic>.dlq".
func DeadLetterTopic(topic string) string { return topic + ".dlq" }

// Failure describes why a record is dead-lettered.
type Failure struct {
	// Reason is a short machine-readable reason (expired, invalid_json,
	// invalid_event, body_too_long, api_rejected, content_blocked,
	// unknown_error).
	Reason string
	// Class is the error class; empty means "reject".
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

// originalHeaders returns a record's headers without the dead-letter and
// source headers timbroadcast adds: the headers the producer wrote.
func originalHeaders(hs []kafka.Header) []kafka.Header {
	out := make([]kafka.Header, 0, len(hs))
	for _, h := range hs {
		if strings.HasPrefix(h.Key, dlqHeaderPrefix) || strings.HasPrefix(h.Key, sourceHeaderPrefix) {
			continue
		}
		out = append(out, h)
	}
	return out
}

// cutInfo is the failure's Info cut to MaxInfoBytes, as dead-letter
// headers and receipts carry it.
func (f Failure) cutInfo() string {
	if len(f.Info) > MaxInfoBytes {
		return f.Info[:MaxInfoBytes]
	}
	return f.Info
}

// DeadLetterMessage builds the dead-letter record for m. A record replayed
// from the dead-letter topic carries the headers of its earlier failure:
// the new ones replace them.
func DeadLetterMessage(m kafka.Message, f Failure) kafka.Message {
	headers := originalHeaders(m.Headers)
	class := f.Class
	if class == "" {
		class = defaultClass
	}
	info := f.cutInfo()
	add := func(k, v string) { headers = append(headers, kafka.Header{Key: k, Value: []byte(v)}) }
	add(HeaderDLQReason, f.Reason)
	add(HeaderDLQClass, class)
	add(HeaderDLQCode, strconv.Itoa(f.Code))
	add(HeaderDLQInfo, info)
	if f.Field != "" {
		add(HeaderDLQField, f.Field)
	}
	add(HeaderDLQAttempts, strconv.Itoa(f.Attempts))
	add(HeaderDLQFailedAt, f.FailedAt.UTC().Format(TimeLayout))
	if f.Random != 0 {
		add(HeaderDLQRandom, strconv.FormatUint(uint64(f.Random), 10))
	}
	add(HeaderSourceTopic, m.Topic)
	add(HeaderSourcePartition, strconv.Itoa(m.Partition))
	add(HeaderSourceOffset, strconv.FormatInt(m.Offset, 10))
	add(HeaderSourceTimestamp, m.Time.UTC().Format(TimeLayout))
	return kafka.Message{Key: m.Key, Value: m.Value, Headers: headers}
}

// TruncatedValueBytes is how much of the original value a truncated
// dead-letter record keeps at the first step: far more than any event that
// could ever be sent (12,000 bytes), far less than any topic's limit.
const TruncatedValueBytes = 16 << 10

// TruncateDeadLetter returns a smaller copy of a dead-letter record that
// the dead-letter topic refused as too large. Step 1 cuts the value to
// TruncatedValueBytes; step 2 (and later) also drops the value, the
// producer's headers and cuts the key to 256 bytes. Both keep the
// dead-letter headers and add HeaderDLQTruncated, HeaderDLQOriginalSize
// and HeaderDLQOriginalSHA256 of the original value.
func TruncateDeadLetter(dl kafka.Message, original []byte, step int) kafka.Message {
	sum := sha256.Sum256(original)
	out := kafka.Message{Key: dl.Key, Value: dl.Value}
	what := "value"
	if len(out.Value) > TruncatedValueBytes {
		out.Value = out.Value[:TruncatedValueBytes]
	}
	if step >= 2 {
		what = "value,key,headers"
		out.Value = nil
		if len(out.Key) > 256 {
			out.Key = out.Key[:256]
		}
	}
	for _, h := range dl.Headers {
		ours := strings.HasPrefix(h.Key, dlqHeaderPrefix) || strings.HasPrefix(h.Key, sourceHeaderPrefix)
		if h.Key == HeaderDLQTruncated || h.Key == HeaderDLQOriginalSize || h.Key == HeaderDLQOriginalSHA256 {
			continue
		}
		if ours || step < 2 {
			out.Headers = append(out.Headers, h)
		}
	}
	out.Headers = append(out.Headers,
		kafka.Header{Key: HeaderDLQTruncated, Value: []byte(what)},
		kafka.Header{Key: HeaderDLQOriginalSize, Value: []byte(strconv.Itoa(len(original)))},
		kafka.Header{Key: HeaderDLQOriginalSHA256, Value: []byte(hex.EncodeToString(sum[:]))})
	return out
}

// ReplayMessage is the record `timbroadcast replay` re-publishes for a
// dead-letter record m: the original key, value and headers, without the
// dead-letter headers, marked with HeaderReplayedFrom.
func ReplayMessage(m kafka.Message) kafka.Message {
	out := kafka.Message{Key: m.Key, Value: m.Value, Headers: originalHeaders(m.Headers)}
	out.Headers = append(out.Headers, kafka.Header{Key: HeaderReplayedFrom,
		Value: []byte(fmt.Sprintf("%s/%d/%d", m.Topic, m.Partition, m.Offset))})
	return out
}

// Header returns the value of the last header of m named key, or "".
func Header(m kafka.Message, key string) string {
	v := ""
	for _, h := range m.Headers {
		if h.Key == key {
			v = string(h.Value)
		}
	}
	return v
}

// RecordOf returns what DecodeEvent needs of a Kafka record.
func RecordOf(m kafka.Message) Record {
	r := Record{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value}
	if len(m.Headers) > 0 {
		r.Headers = make(map[string][]byte, len(m.Headers))
		for _, h := range m.Headers {
			r.Headers[h.Key] = h.Value // the last value wins
		}
	}
	return r
}
