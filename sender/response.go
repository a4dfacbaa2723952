package sender

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Response is the API's answer.
type Response struct {
	ActionStatus string `json:"ActionStatus"`
	ErrorCode    int    `json:"ErrorCode"`
	ErrorInfo    string `json:"ErrorInfo"`
	MsgSeq       uint64 `json:"MsgSeq,omitempty"`
	// Attempts is the number of HTTP requests the send took (not part of
	// the API's answer).
	Attempts int `json:"-"`
}

// DecodeResponse parses an API answer. It fails on anything that is not a
// JSON object carrying ActionStatus or ErrorCode.
func DecodeResponse(b []byte) (*Response, error) {
	var r Response
	if !fastResponse(b, &r) {
		return decodeResponse(b)
	}
	if r.ErrorCode == 0 && r.ActionStatus != "" && r.ActionStatus != "OK" {
		r.ErrorCode = -1 // as decodeResponse
	}
	return &r, nil
}

// decodeResponse is DecodeResponse by encoding/json: every answer
// fastResponse does not read.
func decodeResponse(b []byte) (*Response, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || raw == nil {
		return nil, fmt.Errorf("answer is not a JSON object: %.80q", b)
	}
	_, hasStatus := raw["ActionStatus"]
	_, hasCode := raw["ErrorCode"]
	if !hasStatus && !hasCode {
		return nil, fmt.Errorf("answer has neither ActionStatus nor ErrorCode: %.80q", b)
	}
	var r Response
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode answer: %w", err)
	}
	if r.ErrorCode == 0 && r.ActionStatus != "" && r.ActionStatus != "OK" {
		// FAIL without a code: treat as an unknown failure, not a success.
		r.ErrorCode = -1
	}
	return &r, nil
}

// fastResponse reads an answer of the API's own shape (an object of
// ActionStatus, ErrorCode, ErrorInfo and MsgSeq, each at most once, plain
// strings and integers, and other keys of plain values, skipped) in one pass without reflection: encoding/json
// read each answer twice, a twentieth of a worker's time at a thousand
// calls a second. Anything else (another key, an escape, null, a number it
// would have to round) makes it give up, and decodeResponse reads the
// answer; where it does not give up it yields exactly what decodeResponse
// yields (FuzzFastResponse checks it).
func fastResponse(b []byte, r *Response) bool {
	p := respParser{b: b}
	if !p.byte('{') {
		return false
	}
	var seen [4]bool
	if !p.byte('}') {
		for {
			key, ok := p.str()
			if !ok || !p.byte(':') {
				return false
			}
			var i int
			switch string(key) {
			case "ActionStatus":
				i, ok = 0, p.text(&r.ActionStatus)
			case "ErrorCode":
				i = 1
				var v int64
				v, ok = p.int()
				r.ErrorCode = int(v)
				ok = ok && int64(r.ErrorCode) == v
			case "ErrorInfo":
				i, ok = 2, p.text(&r.ErrorInfo)
			case "MsgSeq":
				i = 3
				r.MsgSeq, ok = p.uint()
			default:
				// Another key (the API's RequestId) is skipped, as
				// encoding/json skips it, unless it could be one of ours in
				// another case (encoding/json matches keys without case).
				if !asciiOther(key) {
					return false
				}
				i, ok = 4, p.skip()
			}
			if i == 4 {
				if !ok {
					return false
				}
			} else if !ok || seen[i] {
				return false
			}
			if i < 4 {
				seen[i] = true
			}
			if p.byte('}') {
				break
			}
			if !p.byte(',') {
				return false
			}
		}
	}
	p.space()
	return p.i == len(p.b) && (seen[0] || seen[1])
}

// asciiOther reports whether key is plain ASCII and none of Response's
// keys in any case.
func asciiOther(key []byte) bool {
	for _, c := range key {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	for _, k := range []string{"ActionStatus", "ErrorCode", "ErrorInfo", "MsgSeq"} {
		if strings.EqualFold(string(key), k) {
			return false
		}
	}
	return true
}

// respParser reads the tokens fastResponse knows, skipping JSON's white
// space before each.
type respParser struct {
	b []byte
	i int
}

func (p *respParser) space() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
}

// byte consumes c if it comes next.
func (p *respParser) byte(c byte) bool {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str reads a string without escapes or control characters, of valid
// UTF-8.
func (p *respParser) str() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	start := p.i
	ascii := true
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, ascii || utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

// text reads a string (str) into dst.
func (p *respParser) text(dst *string) bool {
	v, ok := p.str()
	*dst = string(v)
	return ok
}

// skip reads a value of a key fastResponse does not keep: a plain string,
// a number, true, false or null.
func (p *respParser) skip() bool {
	p.space()
	if p.i >= len(p.b) {
		return false
	}
	switch c := p.b[p.i]; {
	case c == '"':
		_, ok := p.str()
		return ok
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	for _, lit := range []string{"true", "false", "null"} {
		if strings.HasPrefix(string(p.b[p.i:]), lit) {
			p.i += len(lit)
			return true
		}
	}
	return false
}

// number reads a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *respParser) number() bool {
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	start := p.i
	if n := digits(); n == 0 || n > 1 && p.b[start] == '0' {
		return false
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return false
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}

// uint reads digits without a sign or a leading zero, within uint64.
func (p *respParser) uint() (uint64, bool) {
	p.space()
	return p.digits()
}

// digits reads digits without a leading zero, within uint64, where the
// number starts.
func (p *respParser) digits() (uint64, bool) {
	start := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	d := p.b[start:p.i]
	if len(d) == 0 || len(d) > 1 && d[0] == '0' || p.i < len(p.b) && (p.b[p.i] == '.' || p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		return 0, false
	}
	v, err := strconv.ParseUint(string(d), 10, 64)
	return v, err == nil
}

// int reads an integer within int64 (not -0).
func (p *respParser) int() (int64, bool) {
	p.space()
	neg := p.i < len(p.b) && p.b[p.i] == '-'
	if neg {
		p.i++
	}
	u, ok := p.digits()
	switch {
	case !ok || neg && u == 0:
		return 0, false
	case neg && u <= 1<<63:
		return -int64(u-1) - 1, true
	case !neg && u < 1<<63:
		return int64(u), true
	}
	return 0, false
}
