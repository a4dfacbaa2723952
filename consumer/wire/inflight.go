package wire

import (
	"strconv"
	"strings"
	"time"
)

// inFlightTag starts the committed-offset metadata of an in-flight call.
const inFlightTag = "tb1 "

// deliveredTag marks an in-flight call the API has already answered OK.
const deliveredTag = "delivered"

// InFlight is a call recorded in the committed-offset metadata before it
// is made: the records from the committed offset to Last form one call
// whose Random is Random.
type InFlight struct {
	// Last is the offset of the call's last record.
	Last int64
	// Random is the call's Random.
	Random uint32
	// Delivered, when set, says the API answered the call OK and only
	// its receipts remain to be written: the next owner writes them and
	// commits, without sending again.
	Delivered *Delivered
}

// Delivered is what a delivered call's receipts need, recorded in the
// committed-offset metadata between the API's answer and the receipts.
type Delivered struct {
	// MsgSeq is the API's MsgSeq.
	MsgSeq uint64
	// Attempts is the number of API requests the call took.
	Attempts int
	// FirstAttempt, Call and Final are the first attempt's start, the
	// delivering attempt's start and the answer's arrival
	// (millisecond precision in the metadata).
	FirstAttempt, Call, Final time.Time
}

// String returns the metadata form: "tb1 <last> <random>", followed for a
// delivered call by " delivered <msgseq> <attempts> <first> <call>
// <final>" (times in Unix milliseconds).
func (f InFlight) String() string {
	s := inFlightTag + strconv.FormatInt(f.Last, 10) + " " + strconv.FormatUint(uint64(f.Random), 10)
	if d := f.Delivered; d != nil {
		s += " " + deliveredTag + " " + strconv.FormatUint(d.MsgSeq, 10) + " " + strconv.Itoa(d.Attempts) +
			" " + strconv.FormatInt(d.FirstAttempt.UnixMilli(), 10) + " " + strconv.FormatInt(d.Call.UnixMilli(), 10) +
			" " + strconv.FormatInt(d.Final.UnixMilli(), 10)
	}
	return s
}

// ParseInFlight reads committed-offset metadata. ok is false for metadata
// that is not an in-flight record (empty, or written by another tool).
func ParseInFlight(s string) (f InFlight, ok bool) {
	if !strings.HasPrefix(s, inFlightTag) {
		return InFlight{}, false
	}
	parts := strings.Fields(strings.TrimPrefix(s, inFlightTag))
	if len(parts) != 2 && (len(parts) != 8 || parts[2] != deliveredTag) {
		return InFlight{}, false
	}
	last, err1 := strconv.ParseInt(parts[0], 10, 64)
	r, err2 := strconv.ParseUint(parts[1], 10, 32)
	if err1 != nil || err2 != nil || last < 0 {
		return InFlight{}, false
	}
	f = InFlight{Last: last, Random: uint32(r)}
	if len(parts) == 8 {
		seq, err1 := strconv.ParseUint(parts[3], 10, 64)
		attempts, err2 := strconv.Atoi(parts[4])
		var ms [3]int64
		var err3 error
		for i := range ms {
			if ms[i], err3 = strconv.ParseInt(parts[5+i], 10, 64); err3 != nil {
				break
			}
		}
		if err1 != nil || err2 != nil || err3 != nil {
			return InFlight{}, false
		}
		f.Delivered = &Delivered{MsgSeq: seq, Attempts: attempts,
			FirstAttempt: time.UnixMilli(ms[0]), Call: time.UnixMilli(ms[1]), Final: time.UnixMilli(ms[2])}
	}
	return f, true
}

// inFlightsTag starts the committed-offset metadata of several apps'
// calls in flight in one partition (several apps in one deployment).
const inFlightsTag = "tb2 "

// AppInFlight is one app's call in flight in a partition whose committed
// offset may be below it: its records from First to Last (the app's
// records among them) form the call.
type AppInFlight struct {
	// App is the app's SDKAppID; 0 when unknown (read from a "tb1"
	// record: the app of the record at First).
	App   uint64
	First int64
	InFlight
}

// MaxInFlights bounds the calls a "tb2" record holds: with delivered
// calls at about 110 bytes each it stays within Kafka's default
// offset.metadata.max.bytes (4096).
const MaxInFlights = 32

// InFlightsString returns the metadata form of fs:
// "tb2 <app> <first> <last> <random>[ delivered ...]" with the calls
// separated by ";".
func InFlightsString(fs []AppInFlight) string {
	var b strings.Builder
	b.WriteString(inFlightsTag)
	for i, f := range fs {
		if i > 0 {
			b.WriteString(";")
		}
		b.WriteString(strconv.FormatUint(f.App, 10) + " " + strconv.FormatInt(f.First, 10) + " " +
			strings.TrimPrefix(f.InFlight.String(), inFlightTag))
	}
	return b.String()
}

// ParseInFlights reads committed-offset metadata at committed offset
// committed: a "tb2" list, or a "tb1" record (one call at committed, its
// app unknown). Calls below committed, malformed or past MaxInFlights are
// left out; ok is false when there is none.
func ParseInFlights(s string, committed int64) (fs []AppInFlight, ok bool) {
	if f, ok := ParseInFlight(s); ok {
		if f.Last < committed {
			return nil, false
		}
		return []AppInFlight{{First: committed, InFlight: f}}, true
	}
	if !strings.HasPrefix(s, inFlightsTag) {
		return nil, false
	}
	for _, part := range strings.Split(strings.TrimPrefix(s, inFlightsTag), ";") {
		if len(fs) == MaxInFlights {
			break
		}
		fields := strings.SplitN(strings.TrimSpace(part), " ", 3)
		if len(fields) != 3 {
			continue
		}
		app, err1 := strconv.ParseUint(fields[0], 10, 64)
		first, err2 := strconv.ParseInt(fields[1], 10, 64)
		f, ok := ParseInFlight(inFlightTag + fields[2])
		if err1 != nil || err2 != nil || !ok || first < committed || f.Last < first {
			continue
		}
		fs = append(fs, AppInFlight{App: app, First: first, InFlight: f})
	}
	return fs, len(fs) > 0
}
