package wire

import (
	"encoding/json"
	"fmt"

	"github.com/timbroadcast/timbroadcast/sender"
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

// UnpackEnvelope returns the events of a merged custom element, or ok false
// when the element is an ordinary custom element.
func UnpackEnvelope(c sender.CustomElem) (events []EnvelopeEvent, ok bool, err error) {
	if c.Ext != EnvelopeExt {
		return nil, false, nil
	}
	var env Envelope
	if err := decodeEnvelope(c.Data, &env, &env.Version, EnvelopeExt); err != nil {
		return nil, true, err
	}
	return env.Events, true, nil
}

// decodeEnvelope parses an envelope's Data into env, whose version field
// must then read want.
func decodeEnvelope(data string, env any, version *string, want string) error {
	if err := json.Unmarshal([]byte(data), env); err != nil {
		return fmt.Errorf("unpack envelope: %w", err)
	}
	if *version != want {
		return fmt.Errorf("unpack envelope: unknown version %q", *version)
	}
	return nil
}

// EnvelopeV2Ext marks a TIMCustomElem whose Data is an EnvelopeV2 (merge
// mode "envelope"): a whole sequence of events in one element.
const EnvelopeV2Ext = "timbroadcast/merged/v2"

// EnvelopeV2 is the Data of an envelope-mode message: every event of the
// call, in order, with its own elements and CloudCustomData.
type EnvelopeV2 struct {
	// Version is "timbroadcast/merged/v2".
	Version string `json:"v"`
	// Events are the events, in order.
	Events []MergedEvent `json:"events"`
}

// MergedEvent is one event inside a merged message, as a receiver sees it
// once unpacked.
type MergedEvent struct {
	// Key is the event's record key ("" for a keyless record).
	Key string `json:"key,omitempty"`
	// CloudCustomData is the event's own CloudCustomData.
	CloudCustomData string `json:"CloudCustomData,omitempty"`
	// MsgBody is the event's elements.
	MsgBody []sender.Element `json:"MsgBody"`
}

// Unpack returns the events a message element carries: the events of a
// version 1 or version 2 envelope, or ok false for any other element.
func Unpack(el sender.Element) (events []MergedEvent, ok bool, err error) {
	if el.MsgType != sender.TypeCustom {
		return nil, false, nil
	}
	var c sender.CustomElem
	if err := json.Unmarshal(el.MsgContent, &c); err != nil {
		return nil, false, nil
	}
	switch c.Ext {
	case EnvelopeExt:
		v1, _, err := UnpackEnvelope(c)
		if err != nil {
			return nil, true, err
		}
		for _, e := range v1 {
			ce, _ := sender.NewElement(sender.TypeCustom, sender.CustomElem{Data: e.Data, Desc: e.Desc, Ext: e.Ext, Sound: e.Sound})
			events = append(events, MergedEvent{Key: e.Key, MsgBody: []sender.Element{ce}})
		}
		return events, true, nil
	case EnvelopeV2Ext:
		var env EnvelopeV2
		if err := decodeEnvelope(c.Data, &env, &env.Version, EnvelopeV2Ext); err != nil {
			return nil, true, err
		}
		return env.Events, true, nil
	}
	return nil, false, nil
}
