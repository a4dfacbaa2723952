package wire

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/timbroadcast/timbroadcast/sender"
)

// MergePart is one event offered to Merge.
type MergePart struct {
	// Key is the event's record key.
	Key string
	// Message is the event's message.
	Message *sender.Message
}

// mergeKind sorts messages by how they merge: "plain" (no custom element:
// elements are concatenated), "custom" (exactly one element, a
// TIMCustomElem: wrapped in an envelope), "" (custom and other elements
// together: sent alone, since merging it would reorder its elements).
func mergeKind(m *sender.Message) string {
	customs := 0
	for _, el := range m.MsgBody {
		if el.MsgType == sender.TypeCustom {
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
func Mergeable(a, b *sender.Message) bool {
	k := mergeKind(a)
	return k != "" && k == mergeKind(b) && a.FromAccount == b.FromAccount && a.CloudCustomData == b.CloudCustomData
}

// Merge packs events into one message (Random left 0 for the caller):
// events without custom elements have their elements concatenated in
// event order; events that are a lone TIMCustomElem become one custom
// element holding an Envelope of them all, in order (Ext = EnvelopeExt).
// All parts must be Mergeable with the first. The result is a pure
// function of the parts.
func Merge(parts []MergePart) (*sender.Message, error) {
	if len(parts) == 0 {
		return nil, errors.New("merge: no parts")
	}
	first := parts[0].Message
	out := &sender.Message{FromAccount: first.FromAccount, CloudCustomData: first.CloudCustomData}
	var customs []EnvelopeEvent
	var lone sender.Element
	for _, p := range parts {
		if len(parts) > 1 && !Mergeable(first, p.Message) {
			return nil, fmt.Errorf("merge: event %q differs in From_Account or CloudCustomData", p.Key)
		}
		for _, el := range p.Message.MsgBody {
			if el.MsgType != sender.TypeCustom {
				out.MsgBody = append(out.MsgBody, el)
				continue
			}
			var c sender.CustomElem
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
		data, err := sender.Marshal(Envelope{Version: EnvelopeExt, Events: customs})
		if err != nil {
			return nil, fmt.Errorf("merge: envelope: %w", err)
		}
		el, err := sender.NewElement(sender.TypeCustom, sender.CustomElem{Data: string(data), Desc: "timbroadcast merged custom elements", Ext: EnvelopeExt})
		if err != nil {
			return nil, err
		}
		out.MsgBody = append(out.MsgBody, el)
	}
	return out, nil
}
