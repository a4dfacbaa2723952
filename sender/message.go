package sender

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// MaxBodyBytes is the documented limit of a broadcast message body (the
// request body as sent), in bytes.
const MaxBodyBytes = 12000

// Message element types accepted by the API.
const (
	TypeText      = "TIMTextElem"
	TypeLocation  = "TIMLocationElem"
	TypeFace      = "TIMFaceElem"
	TypeCustom    = "TIMCustomElem"
	TypeSound     = "TIMSoundElem"
	TypeImage     = "TIMImageElem"
	TypeFile      = "TIMFileElem"
	TypeVideoFile = "TIMVideoFileElem"
)

// Message is the request body of send_broadcast_msg.
//
// MsgContent of each element is kept as the raw JSON it was given, so a
// message decoded from an event is re-encoded to the same bytes on every
// attempt.
type Message struct {
	// FromAccount is the sender shown to receivers; empty means the admin.
	FromAccount string `json:"From_Account,omitempty"`
	// Random is the message identity the server dedupes on.
	Random uint32 `json:"Random"`
	// MsgBody holds one or more message elements.
	MsgBody []Element `json:"MsgBody"`
	// CloudCustomData is opaque data delivered with the message.
	CloudCustomData string `json:"CloudCustomData,omitempty"`
}

// Element is one message element: a MsgType and its MsgContent.
type Element struct {
	// MsgType is one of the Type* constants.
	MsgType string `json:"MsgType"`
	// MsgContent is the element's content as raw JSON.
	MsgContent json.RawMessage `json:"MsgContent"`
}

// TextElem is the content of a TIMTextElem.
type TextElem struct {
	Text string `json:"Text"`
}

// LocationElem is the content of a TIMLocationElem.
type LocationElem struct {
	Desc      string  `json:"Desc"`
	Latitude  float64 `json:"Latitude"`
	Longitude float64 `json:"Longitude"`
}

// FaceElem is the content of a TIMFaceElem.
type FaceElem struct {
	Index int    `json:"Index"`
	Data  string `json:"Data"`
}

// CustomElem is the content of a TIMCustomElem.
type CustomElem struct {
	Data  string `json:"Data"`
	Desc  string `json:"Desc,omitempty"`
	Ext   string `json:"Ext,omitempty"`
	Sound string `json:"Sound,omitempty"`
}

// SoundElem is the content of a TIMSoundElem.
type SoundElem struct {
	URL          string `json:"Url"`
	UUID         string `json:"UUID,omitempty"`
	Size         int    `json:"Size"`
	Second       int    `json:"Second"`
	DownloadFlag int    `json:"Download_Flag"`
}

// ImageInfo is one entry of an image element's ImageInfoArray.
type ImageInfo struct {
	Type   int    `json:"Type"`
	Size   int    `json:"Size"`
	Width  int    `json:"Width"`
	Height int    `json:"Height"`
	URL    string `json:"URL"`
}

// ImageElem is the content of a TIMImageElem.
type ImageElem struct {
	UUID           string      `json:"UUID"`
	ImageFormat    int         `json:"ImageFormat"`
	ImageInfoArray []ImageInfo `json:"ImageInfoArray"`
}

// FileElem is the content of a TIMFileElem.
type FileElem struct {
	URL          string `json:"Url"`
	UUID         string `json:"UUID,omitempty"`
	FileSize     int    `json:"FileSize"`
	FileName     string `json:"FileName"`
	DownloadFlag int    `json:"Download_Flag"`
}

// VideoFileElem is the content of a TIMVideoFileElem.
type VideoFileElem struct {
	VideoURL          string `json:"VideoUrl"`
	VideoUUID         string `json:"VideoUUID,omitempty"`
	VideoSize         int    `json:"VideoSize"`
	VideoSecond       int    `json:"VideoSecond"`
	VideoFormat       string `json:"VideoFormat"`
	VideoDownloadFlag int    `json:"VideoDownloadFlag"`
	ThumbURL          string `json:"ThumbUrl"`
	ThumbUUID         string `json:"ThumbUUID,omitempty"`
	ThumbSize         int    `json:"ThumbSize"`
	ThumbWidth        int    `json:"ThumbWidth"`
	ThumbHeight       int    `json:"ThumbHeight"`
	ThumbFormat       string `json:"ThumbFormat"`
	ThumbDownloadFlag int    `json:"ThumbDownloadFlag"`
}

// NewElement returns an element of the given type whose content is content
// encoded as JSON (one of the *Elem types, or any value of the same shape).
func NewElement(msgType string, content any) (Element, error) {
	raw, err := json.Marshal(content)
	if err != nil {
		return Element{}, fmt.Errorf("encode %s content: %w", msgType, err)
	}
	return Element{MsgType: msgType, MsgContent: raw}, nil
}

// Text returns a TIMTextElem element holding text.
func Text(text string) Element {
	e, _ := NewElement(TypeText, TextElem{Text: text}) // a struct of strings always encodes
	return e
}

// Custom returns a TIMCustomElem element holding data.
func Custom(data string) Element {
	e, _ := NewElement(TypeCustom, CustomElem{Data: data}) // a struct of strings always encodes
	return e
}

// jsonKind is the JSON type a MsgContent field must have.
type jsonKind int

const (
	kindString jsonKind = iota
	kindNumber
	kindArray
)

func (k jsonKind) String() string {
	return [...]string{"string", "number", "array"}[k]
}

// field describes one MsgContent field of an element type.
type field struct {
	name string
	kind jsonKind
	// required is the project's rule: the documentation's field tables
	// have no "required" column. A field is required here when the element
	// cannot be shown without it (a text's Text, a file's Url, ...).
	required bool
	// check, if set, checks the value beyond its JSON kind.
	check valueCheck
}

// valueCheck returns what is wrong with a value, or "".
type valueCheck func(v json.RawMessage) string

// is2 is the documented rule for the download flags: "Download_Flag can
// only be 2" (目前 Download_Flag 取值只能为2), and the same for the video
// element's VideoDownloadFlag and ThumbDownloadFlag.
var is2 = oneOf("the only value the message format allows", 2)

// oneOf accepts the integers listed.
func oneOf(why string, allowed ...int64) valueCheck {
	return func(v json.RawMessage) string {
		n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		if err == nil {
			for _, a := range allowed {
				if n == a {
					return ""
				}
			}
		}
		vals := make([]string, len(allowed))
		for i, a := range allowed {
			vals[i] = strconv.FormatInt(a, 10)
		}
		return fmt.Sprintf("must be %s (%s), got %s", strings.Join(vals, " or "), why, v)
	}
}

// count is the project's rule for sizes, durations, dimensions and
// indexes, which the documentation types only as "Number": a whole number,
// not negative.
func count(v json.RawMessage) string {
	if n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64); err != nil || n < 0 {
		return fmt.Sprintf("must be a whole number, not negative, got %s", v)
	}
	return ""
}

// within is the project's rule for coordinates (the documentation types
// them only as "Number"): a number in [lo, hi].
func within(lo, hi float64) valueCheck {
	return func(v json.RawMessage) string {
		f, err := strconv.ParseFloat(string(bytes.TrimSpace(v)), 64)
		if err != nil || f < lo || f > hi {
			return fmt.Sprintf("must be a number from %g to %g, got %s", lo, hi, v)
		}
		return ""
	}
}

// schemas lists, per MsgType, the MsgContent fields of the message-format
// page (https://www.tencentcloud.com/document/product/1047/33527).
var schemas = map[string][]field{
	TypeText: {{name: "Text", kind: kindString, required: true}},
	TypeLocation: {{name: "Desc", kind: kindString, required: true},
		{name: "Latitude", kind: kindNumber, required: true, check: within(-90, 90)},
		{name: "Longitude", kind: kindNumber, required: true, check: within(-180, 180)}},
	TypeFace: {{name: "Index", kind: kindNumber, required: true, check: count}, {name: "Data", kind: kindString, required: true}},
	TypeCustom: {{name: "Data", kind: kindString, required: true}, {name: "Desc", kind: kindString},
		{name: "Ext", kind: kindString}, {name: "Sound", kind: kindString}},
	TypeSound: {{name: "Url", kind: kindString, required: true}, {name: "UUID", kind: kindString},
		{name: "Size", kind: kindNumber, required: true, check: count}, {name: "Second", kind: kindNumber, required: true, check: count},
		{name: "Download_Flag", kind: kindNumber, required: true, check: is2}},
	TypeImage: {{name: "UUID", kind: kindString, required: true},
		{name: "ImageFormat", kind: kindNumber, required: true, check: oneOf("1 JPG, 2 GIF, 3 PNG, 4 BMP, 255 other", 1, 2, 3, 4, 255)},
		{name: "ImageInfoArray", kind: kindArray, required: true}},
	TypeFile: {{name: "Url", kind: kindString, required: true}, {name: "UUID", kind: kindString},
		{name: "FileSize", kind: kindNumber, required: true, check: count}, {name: "FileName", kind: kindString, required: true},
		{name: "Download_Flag", kind: kindNumber, required: true, check: is2}},
	TypeVideoFile: {{name: "VideoUrl", kind: kindString, required: true}, {name: "VideoUUID", kind: kindString},
		{name: "VideoSize", kind: kindNumber, required: true, check: count}, {name: "VideoSecond", kind: kindNumber, required: true, check: count},
		{name: "VideoFormat", kind: kindString, required: true}, {name: "VideoDownloadFlag", kind: kindNumber, required: true, check: is2},
		{name: "ThumbUrl", kind: kindString, required: true}, {name: "ThumbUUID", kind: kindString},
		{name: "ThumbSize", kind: kindNumber, required: true, check: count}, {name: "ThumbWidth", kind: kindNumber, required: true, check: count},
		{name: "ThumbHeight", kind: kindNumber, required: true, check: count}, {name: "ThumbFormat", kind: kindString, required: true},
		{name: "ThumbDownloadFlag", kind: kindNumber, required: true, check: is2}},
}

// imageInfoSchema lists the fields of one ImageInfoArray entry.
var imageInfoSchema = []field{
	{name: "Type", kind: kindNumber, required: true, check: oneOf("1 original, 2 large, 3 thumbnail", 1, 2, 3)},
	{name: "Size", kind: kindNumber, required: true, check: count},
	{name: "Width", kind: kindNumber, required: true, check: count},
	{name: "Height", kind: kindNumber, required: true, check: count},
	{name: "URL", kind: kindString, required: true},
}

// msgTypes returns the element types the API accepts, sorted.
func msgTypes() []string {
	types := make([]string, 0, len(schemas))
	for t := range schemas {
		types = append(types, t)
	}
	sort.Strings(types)
	return types
}

// Validate checks m as the server would before any call: at least one
// element, known MsgTypes, the documented MsgContent fields with their JSON
// types and no others, at most one TIMCustomElem, and an encoded body of at
// most MaxBodyBytes. A failure is a reject-class *Error naming the field.
func (m *Message) Validate() error {
	_, err := m.encode()
	return err
}

// Encode validates m and returns the request body bytes to send.
func (m *Message) Encode() ([]byte, error) {
	return m.encode()
}

func (m *Message) encode() ([]byte, error) {
	if len(m.MsgBody) == 0 {
		return nil, invalid("MsgBody", "MsgBody is required and must hold at least one element")
	}
	customs := 0
	for i, el := range m.MsgBody {
		if err := validateElement(i, el); err != nil {
			return nil, err
		}
		if el.MsgType == TypeCustom {
			customs++
		}
	}
	if customs > 1 {
		return nil, invalid("MsgBody", fmt.Sprintf("MsgBody holds %d TIMCustomElem elements; a message may hold at most one", customs))
	}
	body, err := Marshal(m)
	if err != nil {
		return nil, invalid("MsgBody", "cannot encode message: "+err.Error())
	}
	if len(body) > MaxBodyBytes {
		return nil, &Error{Class: ClassReject, Code: CodeBodyTooLong, Field: "MsgBody",
			Info: fmt.Sprintf("message body is %d bytes; the limit is %d", len(body), MaxBodyBytes)}
	}
	return body, nil
}

func validateElement(i int, el Element) error {
	path := fmt.Sprintf("MsgBody[%d]", i)
	if el.MsgType == "" {
		return invalid(path+".MsgType", path+".MsgType is required")
	}
	schema, ok := schemas[el.MsgType]
	if !ok {
		return invalid(path+".MsgType", fmt.Sprintf("%s.MsgType %q is not a known message type (known: %s)",
			path, el.MsgType, strings.Join(msgTypes(), ", ")))
	}
	if len(bytes.TrimSpace(el.MsgContent)) == 0 {
		return invalid(path+".MsgContent", path+".MsgContent is required")
	}
	if err := validateObject(path+".MsgContent", el.MsgContent, schema); err != nil {
		return err
	}
	if el.MsgType == TypeImage {
		var content struct{ ImageInfoArray []json.RawMessage }
		if err := json.Unmarshal(el.MsgContent, &content); err != nil {
			return invalid(path+".MsgContent.ImageInfoArray", err.Error())
		}
		if len(content.ImageInfoArray) == 0 {
			return invalid(path+".MsgContent.ImageInfoArray", path+".MsgContent.ImageInfoArray must hold at least one image")
		}
		for j, info := range content.ImageInfoArray {
			if err := validateObject(fmt.Sprintf("%s.MsgContent.ImageInfoArray[%d]", path, j), info, imageInfoSchema); err != nil {
				return err
			}
		}
	}
	return nil
}

// validateObject checks that raw is a JSON object holding the schema's
// required fields with the right JSON kinds, and no other field.
func validateObject(path string, raw json.RawMessage, schema []field) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return invalid(path, path+" must be a JSON object")
	}
	known := make(map[string]bool, len(schema))
	for _, f := range schema {
		known[f.name] = true
		v, ok := obj[f.name]
		if !ok || string(v) == "null" {
			if f.required {
				return invalid(path+"."+f.name, fmt.Sprintf("%s.%s is required", path, f.name))
			}
			continue
		}
		if !hasKind(v, f.kind) {
			return invalid(path+"."+f.name, fmt.Sprintf("%s.%s must be a %s", path, f.name, f.kind))
		}
		if f.check != nil {
			if problem := f.check(v); problem != "" {
				return invalid(path+"."+f.name, fmt.Sprintf("%s.%s %s", path, f.name, problem))
			}
		}
	}
	var unknown []string
	for name := range obj {
		if !known[name] {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		names := make([]string, len(unknown))
		for i, u := range unknown {
			names[i] = path + "." + u
		}
		return invalid(names[0], "unknown field(s) "+strings.Join(names, ", "))
	}
	return nil
}

func hasKind(v json.RawMessage, k jsonKind) bool {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return false
	}
	switch k {
	case kindString:
		return v[0] == '"'
	case kindArray:
		return v[0] == '['
	default:
		return v[0] == '-' || (v[0] >= '0' && v[0] <= '9')
	}
}

// Marshal encodes v as compact JSON without HTML escaping, so text keeps its
// bytes (and its size) as the producer wrote it.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func invalid(field, info string) *Error {
	return &Error{Class: ClassReject, Code: CodeInvalidParameter, Field: field, Info: info}
}

// IsBodyField reports whether name is a top-level field of the request
// body: From_Account, Random, MsgBody or CloudCustomData.
func IsBodyField(name string) bool {
	switch name {
	case "From_Account", "Random", "MsgBody", "CloudCustomData":
		return true
	}
	return false
}
