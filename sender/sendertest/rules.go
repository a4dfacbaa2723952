package sendertest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// The emulator's request rules, written from Tencent Cloud Chat's public
// documentation (the broadcast page and the message-format page), not from
// package sender's validation: where the two disagree, a test fails. Only
// the message's shape is checked here; answers are in server.go.

// maxBody is the broadcast page's body limit in bytes (80002 above it).
const maxBody = 12000

// Error codes the emulator answers with, from the documentation.
const (
	codeInvalidParameter = 10004
	codeAccountNotFound  = 10019
	codeBadBody          = 60003
	codeMalformed        = 60002
	codeBodyTooLong      = 80002
)

// body is a decoded request body.
type body struct {
	FromAccount     string            `json:"From_Account"`
	Random          uint32            `json:"Random"`
	MsgBody         []json.RawMessage `json:"MsgBody"`
	CloudCustomData string            `json:"CloudCustomData"`
}

// kind is a JSON value type in the documentation's tables.
type kind byte

const (
	str kind = 's'
	num kind = 'n'
	arr kind = 'a'
)

// spec is one MsgContent field: its type, whether the emulator insists on
// it (the documentation has no "required" column; these are the fields
// without which the element shows nothing), and the values the
// documentation allows, if it lists them.
type spec struct {
	kind    kind
	needed  bool
	allowed []float64
}

// elementSpecs is the message-format page's field tables.
var elementSpecs = map[string]map[string]spec{
	"TIMTextElem":     {"Text": {kind: str, needed: true}},
	"TIMLocationElem": {"Desc": {kind: str}, "Latitude": {kind: num, needed: true}, "Longitude": {kind: num, needed: true}},
	"TIMFaceElem":     {"Index": {kind: num, needed: true}, "Data": {kind: str}},
	"TIMCustomElem":   {"Data": {kind: str, needed: true}, "Desc": {kind: str}, "Ext": {kind: str}, "Sound": {kind: str}},
	"TIMSoundElem": {"Url": {kind: str, needed: true}, "UUID": {kind: str}, "Size": {kind: num}, "Second": {kind: num},
		"Download_Flag": {kind: num, needed: true, allowed: []float64{2}}},
	"TIMImageElem": {"UUID": {kind: str}, "ImageFormat": {kind: num, allowed: []float64{1, 2, 3, 4, 255}},
		"ImageInfoArray": {kind: arr, needed: true}},
	"TIMFileElem": {"Url": {kind: str, needed: true}, "UUID": {kind: str}, "FileSize": {kind: num}, "FileName": {kind: str},
		"Download_Flag": {kind: num, needed: true, allowed: []float64{2}}},
	"TIMVideoFileElem": {"VideoUrl": {kind: str, needed: true}, "VideoUUID": {kind: str}, "VideoSize": {kind: num},
		"VideoSecond": {kind: num}, "VideoFormat": {kind: str}, "VideoDownloadFlag": {kind: num, needed: true, allowed: []float64{2}},
		"ThumbUrl": {kind: str}, "ThumbUUID": {kind: str}, "ThumbSize": {kind: num}, "ThumbWidth": {kind: num},
		"ThumbHeight": {kind: num}, "ThumbFormat": {kind: str}, "ThumbDownloadFlag": {kind: num, needed: true, allowed: []float64{2}}},
}

// imageInfoSpec is one ImageInfoArray entry.
var imageInfoSpec = map[string]spec{
	"Type": {kind: num, needed: true, allowed: []float64{1, 2, 3}}, "Size": {kind: num}, "Width": {kind: num},
	"Height": {kind: num}, "URL": {kind: str, needed: true},
}

// checkBody applies the documented rules to a request body. It returns
// the decoded body, or the code and info the server would answer.
func checkBody(raw []byte) (*body, int, string) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, codeBadBody, "request body is empty"
	}
	if len(raw) > maxBody {
		return nil, codeBodyTooLong, fmt.Sprintf("message body too long: %d bytes, limit %d", len(raw), maxBody)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil || top == nil {
		return nil, codeBadBody, "request body is not a JSON object"
	}
	// The documentation lists four fields. What the real server does with
	// others is not documented; the emulator is strict, so a client that
	// sends a typo finds out here.
	var unknown []string
	for k := range top {
		switch k {
		case "From_Account", "Random", "MsgBody", "CloudCustomData":
		default:
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, codeInvalidParameter, "unknown field(s): " + strings.Join(unknown, ", ")
	}
	r, ok := top["Random"]
	if !ok {
		return nil, codeInvalidParameter, "Random is required"
	}
	if _, err := strconv.ParseUint(string(r), 10, 32); err != nil {
		return nil, codeInvalidParameter, "Random must be an unsigned 32-bit integer"
	}
	var b body
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, codeInvalidParameter, "invalid field type: " + err.Error()
	}
	if len(b.MsgBody) == 0 {
		return nil, codeInvalidParameter, "MsgBody is required and must not be empty"
	}
	customs := 0
	for i, el := range b.MsgBody {
		var e struct {
			MsgType    string
			MsgContent json.RawMessage
		}
		if err := json.Unmarshal(el, &e); err != nil {
			return nil, codeInvalidParameter, fmt.Sprintf("MsgBody[%d] is not an element", i)
		}
		specs, ok := elementSpecs[e.MsgType]
		if !ok {
			return nil, codeInvalidParameter, fmt.Sprintf("MsgBody[%d].MsgType %q is not a message type", i, e.MsgType)
		}
		if e.MsgType == "TIMCustomElem" {
			customs++
		}
		if info := checkObject(fmt.Sprintf("MsgBody[%d].MsgContent", i), e.MsgContent, specs); info != "" {
			return nil, codeInvalidParameter, info
		}
		if e.MsgType == "TIMImageElem" {
			var img struct{ ImageInfoArray []json.RawMessage }
			_ = json.Unmarshal(e.MsgContent, &img)
			for j, info := range img.ImageInfoArray {
				if msg := checkObject(fmt.Sprintf("MsgBody[%d].MsgContent.ImageInfoArray[%d]", i, j), info, imageInfoSpec); msg != "" {
					return nil, codeInvalidParameter, msg
				}
			}
		}
	}
	if customs > 1 {
		return nil, codeInvalidParameter, fmt.Sprintf("a message may hold one TIMCustomElem, this one holds %d", customs)
	}
	return &b, 0, ""
}

// checkObject checks one MsgContent object against its field specs.
func checkObject(path string, raw json.RawMessage, specs map[string]spec) string {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return path + " must be an object"
	}
	for name, v := range obj {
		sp, ok := specs[name]
		if !ok {
			return path + "." + name + " is not a field of this element"
		}
		var got any
		if err := json.Unmarshal(v, &got); err != nil {
			return path + "." + name + " is not JSON"
		}
		switch x := got.(type) {
		case string:
			if sp.kind != str {
				return path + "." + name + " has the wrong type"
			}
		case float64:
			if sp.kind != num {
				return path + "." + name + " has the wrong type"
			}
			if len(sp.allowed) > 0 && !contains(sp.allowed, x) {
				return fmt.Sprintf("%s.%s is %v; allowed: %v", path, name, x, sp.allowed)
			}
		case []any:
			if sp.kind != arr || len(x) == 0 {
				return path + "." + name + " must be a non-empty array"
			}
		default:
			return path + "." + name + " has the wrong type"
		}
	}
	for name, sp := range specs {
		if _, ok := obj[name]; sp.needed && !ok {
			return path + "." + name + " is required"
		}
	}
	return ""
}

func contains(set []float64, x float64) bool {
	for _, v := range set {
		if math.Abs(v-x) < 1e-9 {
			return true
		}
	}
	return false
}
