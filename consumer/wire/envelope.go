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
	if err := json.Unmarshal([]byte(c.Data), &env); err != nil {
		return nil, true, fmt.Errorf("unpack envelope: %w", err)
	}
	if env.Version != EnvelopeExt {
		return nil, true, fmt.Errorf("unpack envelope: unknown version %q", env.Version)
	}
	return env.Events, true, nil
}
