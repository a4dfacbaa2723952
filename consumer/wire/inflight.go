package wire

import (
	"strconv"
	"strings"
)

// inFlightTag starts the committed-offset metadata of an in-flight call.
const inFlightTag = "tb1 "

// InFlight is a call recorded in the committed-offset metadata before it
// is made: the records from the committed offset to Last form one call
// whose Random is Random.
type InFlight struct {
	// Last is the offset of the call's last record.
	Last int64
	// Random is the call's Random.
	Random uint32
}

// String returns the metadata form: "tb1 <last> <random>".
func (f InFlight) String() string {
	return inFlightTag + strconv.FormatInt(f.Last, 10) + " " + strconv.FormatUint(uint64(f.Random), 10)
}

// ParseInFlight reads committed-offset metadata. ok is false for metadata
// that is not an in-flight record (empty, or written by another tool).
func ParseInFlight(s string) (f InFlight, ok bool) {
	if !strings.HasPrefix(s, inFlightTag) {
		return InFlight{}, false
	}
	parts := strings.Fields(strings.TrimPrefix(s, inFlightTag))
	if len(parts) != 2 {
		return InFlight{}, false
	}
	last, err1 := strconv.ParseInt(parts[0], 10, 64)
	r, err2 := strconv.ParseUint(parts[1], 10, 32)
	if err1 != nil || err2 != nil || last < 0 {
		return InFlight{}, false
	}
	return InFlight{Last: last, Random: uint32(r)}, true
}
