package wire

import (
	"strings"

	"github.com/segmentio/kafka-go"
)

// HeaderCarrier lets an OpenTelemetry propagator read and write the trace
// context (W3C traceparent, tracestate, baggage; B3, ...) in a record's headers:
// it implements propagation.TextMapCarrier. Names match case-insensitively.
type HeaderCarrier struct {
	Headers *[]kafka.Header
}

// Get returns the value of the last header named key, or "".
func (c HeaderCarrier) Get(key string) string {
	hs := *c.Headers
	for i := len(hs) - 1; i >= 0; i-- {
		if strings.EqualFold(hs[i].Key, key) {
			return string(hs[i].Value)
		}
	}
	return ""
}

// Set replaces every header named key with one holding value.
func (c HeaderCarrier) Set(key, value string) {
	hs := (*c.Headers)[:0:0]
	for _, h := range *c.Headers {
		if !strings.EqualFold(h.Key, key) {
			hs = append(hs, h)
		}
	}
	*c.Headers = append(hs, kafka.Header{Key: key, Value: []byte(value)})
}

// Keys returns the header names.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, len(*c.Headers))
	for i, h := range *c.Headers {
		keys[i] = h.Key
	}
	return keys
}
