package schedule

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Every member reads every record of the claims log, of every app: with a
// thousand apps, a few thousand records a second, and encoding/json took
// most of a member's time spent on them. fastClaim reads the records this
// release's members write (a claim, a lone member's call, with the chain's
// snapshot) in one pass without reflection; anything else (a pause, a
// hold, a key it does not know or knows twice, an escape in a string, a
// number it would have to round, null, whitespace it does not expect)
// makes it give up, and encoding/json reads the record as before. Where it
// does not give up it yields exactly what encoding/json yields
// (FuzzFastClaim checks it).

// fastClaim reads b into r; false when encoding/json must read it.
func fastClaim(b []byte, r *claimRecord) bool {
	return fastClaimWith(&fastParser{b: b}, r)
}

// fastClaimWith is fastClaim with p's way of reading: interned member
// ids, a snapshot's grants only checked (claimReader).
func fastClaimWith(p *fastParser, r *claimRecord) bool {
	b := p.b
	ok := p.object(func(key []byte) bool {
		var ok bool
		switch string(key) {
		case "v":
			var v int64
			v, ok = p.int()
			r.V = int(v)
			ok = ok && int64(r.V) == v
		case "app":
			r.App, ok = p.uint()
		case "by":
			r.By, ok = p.name()
		case "seq":
			r.Seq, ok = p.uint()
		case "ts":
			r.TS, ok = p.int()
		case "urgent":
			r.Urgent, ok = p.bool()
		case "took":
			r.Took, ok = p.bool()
		case "resume":
			r.Resume, ok = p.bool()
		case "unsynced":
			r.Unsynced, ok = p.bool()
		case "release":
			r.Release, ok = p.bool()
		case "state":
			ok = p.state(&r.State, &r.lean)
		default:
			return false
		}
		return ok
	})
	return ok && p.i == len(b)
}

// fastParser reads the subset of JSON fastClaim accepts.
type fastParser struct {
	b []byte
	i int
	// names, if set, interns member ids; lean says a snapshot's grants
	// are checked, not kept (claimReader).
	names *names
	lean  bool
}

// names interns the member ids a claims reader meets: a group has a few
// members, so every record's ids are the same few strings. It holds at
// most namesMax (a log written by something else may name many).
type names map[string]string

const namesMax = 256

func (n *names) get(b []byte) string {
	if s, ok := (*n)[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(*n) >= namesMax {
		clear(*n)
	}
	(*n)[s] = s
	return s
}

// name reads a member id.
func (p *fastParser) name() (string, bool) {
	if p.names == nil {
		return p.string()
	}
	s, ok := p.rawString()
	if !ok {
		return "", false
	}
	return p.names.get(s), true
}

func (p *fastParser) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *fastParser) take(c byte) bool {
	if p.peek() != c {
		return false
	}
	p.i++
	return true
}

// object reads {"key":value,...}, value by value(key), with no whitespace
// and no key twice (encoding/json would keep the last).
func (p *fastParser) object(value func(key []byte) bool) bool {
	if !p.take('{') {
		return false
	}
	if p.take('}') {
		return true
	}
	var seen [12][]byte // the keys read (at most 11 known)
	keys := seen[:0]
	for {
		key, ok := p.rawString()
		if !ok || slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, key) }) || !p.take(':') || !value(key) {
			return false
		}
		keys = append(keys, key)
		if p.take('}') {
			return true
		}
		if !p.take(',') {
			return false
		}
	}
}

// rawString reads a string with no escape, no control character and valid
// UTF-8, returning its bytes.
func (p *fastParser) rawString() ([]byte, bool) {
	if !p.take('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		}
		p.i++
	}
	return nil, false
}

func (p *fastParser) string() (string, bool) {
	s, ok := p.rawString()
	return string(s), ok
}

// digits reads an integer's text: an optional minus (when signed), then a
// digit, or digits not starting with 0; no fraction, no exponent. u is the
// digits' value when there are at most 19 of them.
func (p *fastParser) digits(signed bool) (text []byte, u uint64, ok bool) {
	start := p.i
	if signed {
		p.take('-')
	}
	first := p.i
	for ; p.i < len(p.b); p.i++ {
		c := p.b[p.i]
		if c < '0' || c > '9' {
			break
		}
		u = u*10 + uint64(c-'0') // below 10^19 for 19 digits: no wrap
	}
	n := p.i - first
	if n == 0 || n > 1 && p.b[first] == '0' {
		return nil, 0, false
	}
	switch p.peek() {
	case '.', 'e', 'E':
		return nil, 0, false
	}
	return p.b[start:p.i], u, true
}

func (p *fastParser) int() (int64, bool) {
	d, u, ok := p.digits(true)
	if !ok {
		return 0, false
	}
	neg := d[0] == '-'
	if len(d)-btoi(neg) <= 19 {
		switch {
		case !neg && u <= math.MaxInt64:
			return int64(u), true
		case neg && u <= math.MaxInt64+1:
			return -int64(u), true // -(MaxInt64+1) wraps to MinInt64
		}
		return 0, false
	}
	v, err := strconv.ParseInt(string(d), 10, 64)
	return v, err == nil
}

func (p *fastParser) uint() (uint64, bool) {
	d, u, ok := p.digits(false)
	if !ok {
		return 0, false
	}
	if len(d) <= 19 {
		return u, true
	}
	v, err := strconv.ParseUint(string(d), 10, 64)
	return v, err == nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (p *fastParser) bool() (bool, bool) {
	switch {
	case len(p.b)-p.i >= 4 && string(p.b[p.i:p.i+4]) == "true":
		p.i += 4
		return true, true
	case len(p.b)-p.i >= 5 && string(p.b[p.i:p.i+5]) == "false":
		p.i += 5
		return false, true
	}
	return false, false
}

// state reads a chain's snapshot without a hold (its grants only checked,
// into lean, when p.lean).
func (p *fastParser) state(st *chainState, lean *grantsSeen) bool {
	return p.object(func(key []byte) bool {
		var ok bool
		switch string(key) {
		case "seen":
			st.Seen, ok = p.int()
		case "latest":
			st.Latest, ok = p.int()
		case "grants":
			ok = p.grants(&st.Grants, lean)
		default:
			return false
		}
		return ok
	})
}

// grantsSeen is what a claims reader keeps of a snapshot's grants it
// only checks (claimReader): how many, the latest times and the longest
// member id, which is all claimRecord.check looks at.
type grantsSeen struct {
	read         bool
	n            int
	maxAt, maxTS int64
	maxBy        int
}

// grants reads a snapshot's grants, at most claimMaxGrants+1 (more is
// out of bounds anyway: encoding/json reads it and the bounds refuse it):
// into gs, or, when p.lean, only into seen (accepting and refusing the
// same).
func (p *fastParser) grants(gs *[]slotGrant, seen *grantsSeen) bool {
	if !p.take('[') {
		return false
	}
	out := []slotGrant{}
	if p.lean {
		out = nil
		*seen = seenOf(nil)
	}
	end := func() bool {
		if !p.lean {
			*gs = out
		}
		return true
	}
	if p.take(']') {
		return end()
	}
	for n := 0; n <= claimMaxGrants; n++ {
		var g slotGrant
		var by []byte
		if !p.object(func(key []byte) bool {
			var ok bool
			switch string(key) {
			case "by":
				by, ok = p.rawString()
			case "seq":
				g.Seq, ok = p.uint()
			case "ts":
				g.TS, ok = p.int()
			case "at":
				g.At, ok = p.int()
			case "u":
				g.Urgent, ok = p.bool()
			case "f":
				g.Fixed, ok = p.bool()
			default:
				return false
			}
			return ok
		}) {
			return false
		}
		if p.lean {
			seen.add(g.At, g.TS, len(by))
		} else {
			g.By = string(by)
			out = append(out, g)
		}
		if p.take(']') {
			return end()
		}
		if !p.take(',') {
			return false
		}
	}
	return false
}

// appendClaim appends r as JSON to dst, byte for byte what encoding/json
// writes for it (FuzzAppendClaim checks it; the goldens pin it): a member
// writes a record for each call, and encoding/json's reflection was a
// twentieth of a member's time. A string with anything encoding/json
// would escape is written by encoding/json.
func appendClaim(dst []byte, r *claimRecord) []byte {
	dst = append(dst, '{')
	if r.V != 0 {
		dst = strconv.AppendInt(append(dst, `"v":`...), int64(r.V), 10)
		dst = append(dst, ',')
	}
	if r.App != 0 {
		dst = strconv.AppendUint(append(dst, `"app":`...), r.App, 10)
		dst = append(dst, ',')
	}
	dst = appendJSONString(append(dst, `"by":`...), r.By)
	if r.Seq != 0 {
		dst = strconv.AppendUint(append(dst, `,"seq":`...), r.Seq, 10)
	}
	dst = strconv.AppendInt(append(dst, `,"ts":`...), r.TS, 10)
	if r.Urgent {
		dst = append(dst, `,"urgent":true`...)
	}
	if r.Took {
		dst = append(dst, `,"took":true`...)
	}
	if p := r.Pause; p != nil {
		dst = strconv.AppendInt(append(dst, `,"pause":{"code":`...), int64(p.Code), 10)
		if p.Info != "" {
			dst = appendJSONString(append(dst, `,"info":`...), p.Info)
		}
		dst = strconv.AppendInt(append(dst, `,"next":`...), p.Next, 10)
		dst = append(dst, '}')
	}
	if r.Resume {
		dst = append(dst, `,"resume":true`...)
	}
	if r.Unsynced {
		dst = append(dst, `,"unsynced":true`...)
	}
	if h := r.Hold; h != nil {
		dst = appendJSONString(append(dst, `,"hold":{"by":`...), h.By)
		if h.Reason != "" {
			dst = appendJSONString(append(dst, `,"reason":`...), h.Reason)
		}
		for _, f := range []struct {
			key string
			v   int64
		}{{`,"for_ms":`, h.ForMs}, {`,"since":`, h.Since}, {`,"until":`, h.Until}} {
			if f.v != 0 {
				dst = strconv.AppendInt(append(dst, f.key...), f.v, 10)
			}
		}
		dst = append(dst, '}')
	}
	if r.Release {
		dst = append(dst, `,"release":true`...)
	}
	st := &r.State
	dst = strconv.AppendInt(append(dst, `,"state":{"seen":`...), st.Seen, 10)
	if st.Latest != 0 {
		dst = strconv.AppendInt(append(dst, `,"latest":`...), st.Latest, 10)
	}
	if len(st.Grants) > 0 {
		dst = append(dst, `,"grants":[`...)
		for i := range st.Grants {
			g := &st.Grants[i]
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(append(dst, `{"by":`...), g.By)
			if g.Seq != 0 {
				dst = strconv.AppendUint(append(dst, `,"seq":`...), g.Seq, 10)
			}
			dst = strconv.AppendInt(append(dst, `,"ts":`...), g.TS, 10)
			dst = strconv.AppendInt(append(dst, `,"at":`...), g.At, 10)
			if g.Urgent {
				dst = append(dst, `,"u":true`...)
			}
			if g.Fixed {
				dst = append(dst, `,"f":true`...)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	if h := st.Hold; h != nil {
		dst = appendJSONString(append(dst, `,"hold":{"by":`...), h.By)
		if h.Reason != "" {
			dst = appendJSONString(append(dst, `,"reason":`...), h.Reason)
		}
		dst = strconv.AppendInt(append(dst, `,"since":`...), h.Since, 10)
		if h.Until != 0 {
			dst = strconv.AppendInt(append(dst, `,"until":`...), h.Until, 10)
		}
		dst = strconv.AppendInt(append(dst, `,"last":`...), h.Last, 10)
		dst = append(dst, '}')
	}
	return append(dst, "}}"...)
}

// appendJSONString appends s quoted as encoding/json quotes it.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string never fails
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
