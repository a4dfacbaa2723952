package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"
)

// HeaderExpiresAt is the optional record header holding an RFC 3339 time
// after which the event must not be sent.
const HeaderExpiresAt = "timbroadcast-expires-at"

// HeaderReplayedFrom marks a record re-published by `timbroadcast replay`:
// "<dead-letter topic>/<partition>/<offset>".
const HeaderReplayedFrom = "timbroadcast-replayed-from"

// HeaderApp is the optional record header naming the record's app (a
// name of the apps file or an SDKAppID).
const HeaderApp = "timbroadcast-app"

// Dead-letter record headers. A dead-letter record carries the original
// key, value and headers, plus these.
const (
	HeaderDLQReason   = "timbroadcast-dlq-reason"
	HeaderDLQClass    = "timbroadcast-dlq-class"
	HeaderDLQCode     = "timbroadcast-dlq-code"
	HeaderDLQInfo     = "timbroadcast-dlq-info"
	HeaderDLQField    = "timbroadcast-dlq-field"
	HeaderDLQAttempts = "timbroadcast-dlq-attempts"
	HeaderDLQFailedAt = "timbroadcast-dlq-failed-at"
	HeaderDLQRandom   = "timbroadcast-dlq-random"
	// HeaderDLQApp and HeaderDLQSDKAppID name the app the record was for
	// (several apps in one deployment); absent when it has none.
	HeaderDLQApp          = "timbroadcast-dlq-app"
	HeaderDLQSDKAppID     = "timbroadcast-dlq-sdkappid"
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
	// MaxFieldBytes caps the dead-letter field header (a field's name comes
	// from the record: a producer may write a name of megabytes).
	MaxFieldBytes = 256
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
	// App and SDKAppID name the app the record was for ("" and 0 when it
	// was routed to none).
	App      string
	SDKAppID uint64
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

// MaxKeyBytes is the longest record key a receipt or the last dead-letter
// step copies; a longer key is replaced by KeyDigest.
const MaxKeyBytes = 1024

// Cut returns s cut to at most n bytes on a character boundary, marked
// with the original length when cut: outside text in a header, a receipt
// or a log line is bounded wherever it is written.
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	mark := fmt.Sprintf("...(%d bytes)", len(s))
	keep := max(n-len(mark), 0)
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + mark
}

// Printable is s with what a terminal would act on (control characters,
// DEL, C1 controls, invalid UTF-8) escaped as Go escapes; s itself when it
// holds none. Text from outside (member ids, keys, a registry's answer)
// goes through it before it reaches a screen.
func Printable(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError }) {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return q[1 : len(q)-1]
}

// KeyDigest is what stands for a key longer than MaxKeyBytes: its SHA-256
// (the key's bytes can be found again in the source by its coordinates).
func KeyDigest(key []byte) []byte {
	sum := sha256.Sum256(key)
	return []byte("sha256:" + hex.EncodeToString(sum[:]))
}

// boundKey is key, or its KeyDigest when longer than MaxKeyBytes.
func boundKey(key []byte) []byte {
	if len(key) > MaxKeyBytes {
		return KeyDigest(key)
	}
	return key
}

// cutInfo is the failure's Info cut to MaxInfoBytes, as dead-letter
// headers and receipts carry it.
func (f Failure) cutInfo() string { return Cut(f.Info, MaxInfoBytes) }

// cutField is the failure's Field cut to MaxFieldBytes.
func (f Failure) cutField() string { return Cut(f.Field, MaxFieldBytes) }

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
		add(HeaderDLQField, f.cutField())
	}
	add(HeaderDLQAttempts, strconv.Itoa(f.Attempts))
	add(HeaderDLQFailedAt, f.FailedAt.UTC().Format(TimeLayout))
	if f.Random != 0 {
		add(HeaderDLQRandom, strconv.FormatUint(uint64(f.Random), 10))
	}
	if f.App != "" {
		add(HeaderDLQApp, f.App)
	}
	if f.SDKAppID != 0 {
		add(HeaderDLQSDKAppID, strconv.FormatUint(f.SDKAppID, 10))
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

// TruncateSteps is the number of steps of TruncateDeadLetter: the last
// one fits any topic that takes records of a few kilobytes.
const TruncateSteps = 3

// TruncateDeadLetter returns a smaller copy of a dead-letter record that
// the dead-letter topic refused as too large. Step 1 cuts the value to
// TruncatedValueBytes; step 2 also drops the value, the producer's headers
// and cuts the key to 256 bytes; step 3 (the last: a record of about a
// kilobyte) keeps only the reason, class, code, a short info and where the
// record is (the source headers), with the key replaced by its KeyDigest.
// Each adds HeaderDLQTruncated, HeaderDLQOriginalSize and
// HeaderDLQOriginalSHA256 of the original value.
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
	if step >= 3 {
		out.Key = nil
		if len(dl.Key) > 0 {
			out.Key = KeyDigest(dl.Key)
		}
	}
	for _, h := range dl.Headers {
		ours := strings.HasPrefix(h.Key, dlqHeaderPrefix) || strings.HasPrefix(h.Key, sourceHeaderPrefix)
		if h.Key == HeaderDLQTruncated || h.Key == HeaderDLQOriginalSize || h.Key == HeaderDLQOriginalSHA256 {
			continue
		}
		if step >= 3 {
			switch h.Key {
			case HeaderDLQInfo:
				h.Value = []byte(Cut(string(h.Value), 256))
			case HeaderDLQField:
				h.Value = []byte(Cut(string(h.Value), 64))
			}
			if len(h.Value) > 256 { // nothing of ours is longer
				continue
			}
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

// MaxAppValue bounds the app a record names (a name is at most 32 bytes,
// an SDKAppID 20 digits), in the header HeaderApp or a mapping's field
// app: a longer one is cut, and names no app.
const MaxAppValue = 64
