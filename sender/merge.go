package sender

import (
	"encoding/json"
	"errors"
	"fmt"
)

// EnvelopeExt marks a TIMCustomElem whose Data is a merge envelope: its Ext
// field is exactly this string. Receivers unpack it with UnpackEnvelope (or
// the JavaScript in the README).
const EnvelopeExt = "timbroadcast/merged/v1"

// Envelope is the Data of a merged custom element: the custom elements of
// several events, in order, each with its event's key.
type Envelope struct {
	// Version is "timbroadcast/merged/v1".
	Version string `json:"v"`
	// Events are the original custom elements.
	Events []EnvelopeEvent `json:"events"`
}

// EnvelopeEvent is one original custom element inside an envelope.
type EnvelopeEvent struct {
	// Key is the record key of the event ("" for a keyless record).
	Key   string `json:"key,omitempty"`
	Data  string `json:"Data"`
	Desc  string `json:"Desc,omitempty"`
	Ext   string `json:"Ext,omitempty"`
	Sound string `json:"Sound,omitempty"`
}

// MergePart is one event offered to Merge.
type MergePart struct {
	// Key is the event's record key.
	Key string
	// Message is the event's message.
	Message *Message
}

// mergeKind sorts messages by how they merge: "plain" (no custom element:
// elements are concatenated), "custom" (exactly one element, a
// TIMCustomElem: wrapped in an envelope), "" (custom and other elements
// together: sent alone, since merging it would reorder its elements).
func mergeKind(m *Message) string {
	customs := 0
	for _, el := range m.MsgBody {
		if el.MsgType == TypeCustom {
			customs++
		}
	}
	switch {
	case customs == 0:
		return "plain"
	case len(m.MsgBody) == 1:
		return "custom"
	}
	return ""
}

// Mergeable reports whether two messages can share one merged message: the
// same From_Account and CloudCustomData, and the same kind (both without a
// custom element, or both a lone custom element), so a merged message keeps
// every element in event order.
func Mergeable(a, b *Message) bool {
	k := mergeKind(a)
	return k != "" && k == mergeKind(b) && a.FromAccount == b.FromAccount && a.CloudCustomData == b.CloudCustomData
}

// Merge packs events into one message (Random left 0 for the caller):
// events without custom elements have their elements concatenated in
// event order; events that are a lone TIMCustomElem become one custom
// element holding an Envelope of them all, in order (Ext = EnvelopeExt).
// All parts must be Mergeable with the first. The result is a pure
// function of the parts.
func Merge(parts []MergePart) (*Message, error) {
	if len(parts) == 0 {
		return nil, errors.New("merge: no parts")
	}
	first := parts[0].Message
	out := &Message{FromAccount: first.FromAccount, CloudCustomData: first.CloudCustomData}
	var customs []EnvelopeEvent
	var lone Element
	for _, p := range parts {
		if len(parts) > 1 && !Mergeable(first, p.Message) {
			return nil, fmt.Errorf("merge: event %q differs in From_Account or CloudCustomData", p.Key)
		}
		for _, el := range p.Message.MsgBody {
			if el.MsgType != TypeCustom {
				out.MsgBody = append(out.MsgBody, el)
				continue
			}
			var c CustomElem
			if err := json.Unmarshal(el.MsgContent, &c); err != nil {
				return nil, fmt.Errorf("merge: event %q: custom element: %w", p.Key, err)
			}
			customs = append(customs, EnvelopeEvent{Key: p.Key, Data: c.Data, Desc: c.Desc, Ext: c.Ext, Sound: c.Sound})
			lone = el
		}
	}
	switch len(customs) {
	case 0:
	case 1:
		out.MsgBody = append(out.MsgBody, lone)
	default: // every part is a lone custom element
		data, err := marshal(Envelope{Version: EnvelopeExt, Events: customs})
		if err != nil {
			return nil, fmt.Errorf("merge: envelope: %w", err)
		}
		el, err := NewElement(TypeCustom, CustomElem{Data: string(data), Desc: "timbroadcast merged custom elements", Ext: EnvelopeExt})
		if err != nil {
			return nil, err
		}
		out.MsgBody = append(out.MsgBody, el)
	}
	return out, nil
}

// UnpackEnvelope returns the events of a merged custom element, or ok false
// when the element is an ordinary custom element.
func UnpackEnvelope(c CustomElem) (events []EnvelopeEvent, ok bool, err error) {
	if c.Ext != EnvelopeExt {
		return nil, false, nil
	}
	var env Envelope
	if err := json.Unmarshal([]byte(c.Data), &env); err != nil {
		return nil, true, fmt.Errorf("unpack envelope: %w", err)
	}
	if env.Version != EnvelopeExt {
		return nil, true, fmt.Errorf("unpack envelope: unknown version %q", env.Version)
	}
	return env.Events, true, nil
}
