package wire

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/timbroadcast/timbroadcast/sender"
)

// MergeMode says how events share one call.
type MergeMode int

const (
	// MergeNative packs events into one ordinary message: their elements
	// one after the other, in event order. A message may hold one
	// TIMCustomElem, so the custom-bearing events of a call are either one
	// event, or one run of consecutive events that are a lone custom
	// element each, packed into one envelope (EnvelopeExt, version 1) at
	// the run's place: non-custom events may come before and after it.
	MergeNative MergeMode = iota + 1
	// MergeEnvelope packs any sequence of events (of one From_Account)
	// into one custom element whose Data is an EnvelopeV2: each event's
	// elements, CloudCustomData and key, in order. Receivers must unpack
	// it (README "Merge mode").
	MergeEnvelope
)

// MergePart is one event offered to Merge.
type MergePart struct {
	// Key is the event's record key.
	Key string
	// Message is the event's message.
	Message *sender.Message
}

// customs counts the custom elements of m.
func customs(m *sender.Message) int {
	n := 0
	for _, el := range m.MsgBody {
		if el.MsgType == sender.TypeCustom {
			n++
		}
	}
	return n
}

// loneCustom reports whether m is a single TIMCustomElem.
func loneCustom(m *sender.Message) bool {
	return len(m.MsgBody) == 1 && m.MsgBody[0].MsgType == sender.TypeCustom
}

// Joiner decides, event by event, what may share one call: feed it the
// call's events in order; Add reports whether each may join. It keeps what
// the rules need (the first sender and CloudCustomData, where the custom
// run stands), so building a call of n events costs n steps.
type Joiner struct {
	mode  MergeMode
	n     int
	first *sender.Message
	// custom-bearing events so far: none, one run of lone custom
	// elements still open (it ended at the last event), or closed
	// (ended earlier, or an event with a custom element among others).
	bearing, runOpen, runClosed bool
}

// NewJoiner returns a Joiner for an empty call.
func NewJoiner(mode MergeMode) *Joiner { return &Joiner{mode: mode} }

// Add reports whether m may join the call as its next event, and if so
// records it.
func (j *Joiner) Add(m *sender.Message) bool {
	if j.n > 0 && !j.allows(m) {
		return false
	}
	if j.n == 0 {
		j.first = m
	}
	j.n++
	switch {
	case customs(m) == 0:
		j.runOpen = false
		if j.bearing {
			j.runClosed = true
		}
	case loneCustom(m) && !j.runClosed:
		j.bearing, j.runOpen = true, true
	default: // a custom element among others, or the only one allowed
		j.bearing, j.runOpen, j.runClosed = true, false, true
	}
	return true
}

func (j *Joiner) allows(m *sender.Message) bool {
	if j.first.FromAccount != m.FromAccount {
		return false
	}
	if j.mode == MergeEnvelope {
		return true
	}
	if j.first.CloudCustomData != m.CloudCustomData {
		return false
	}
	if customs(m) == 0 || !j.bearing {
		return true
	}
	// m carries a custom element and the call already has one: only as
	// the next of a run of lone custom elements still open.
	return loneCustom(m) && j.runOpen
}

// CanJoin reports whether next may join a call holding parts (in order),
// keeping every element in event order.
func CanJoin(mode MergeMode, parts []MergePart, next *sender.Message) bool {
	j := NewJoiner(mode)
	for _, p := range parts {
		j.Add(p.Message)
	}
	return j.Add(next)
}

// Merge packs parts into one message (Random left 0 for the caller). The
// result is a pure function of the parts and the mode, so whoever rebuilds
// a recorded call gets the same bytes. Every part must have been accepted
// by CanJoin.
func Merge(mode MergeMode, parts []MergePart) (*sender.Message, error) {
	if len(parts) == 0 {
		return nil, errors.New("merge: no parts")
	}
	j := NewJoiner(mode)
	for _, p := range parts {
		if !j.Add(p.Message) {
			return nil, fmt.Errorf("merge: event %q cannot join the call", p.Key)
		}
	}
	if mode == MergeEnvelope {
		return mergeEnvelope(parts)
	}
	first := parts[0].Message
	out := &sender.Message{FromAccount: first.FromAccount, CloudCustomData: first.CloudCustomData}
	var run []EnvelopeEvent // the run of lone custom elements
	var runEl sender.Element
	runAt := -1
	for _, p := range parts {
		if loneCustom(p.Message) {
			el := p.Message.MsgBody[0]
			var c sender.CustomElem
			if err := json.Unmarshal(el.MsgContent, &c); err != nil {
				return nil, fmt.Errorf("merge: event %q: custom element: %w", p.Key, err)
			}
			if runAt < 0 {
				runAt = len(out.MsgBody)
				out.MsgBody = append(out.MsgBody, sender.Element{}) // the run's place
			}
			run = append(run, EnvelopeEvent{Key: p.Key, Data: c.Data, Desc: c.Desc, Ext: c.Ext, Sound: c.Sound})
			runEl = el
			continue
		}
		out.MsgBody = append(out.MsgBody, p.Message.MsgBody...)
	}
	switch {
	case len(run) == 1:
		out.MsgBody[runAt] = runEl
	case len(run) > 1:
		data, err := sender.Marshal(Envelope{Version: EnvelopeExt, Events: run})
		if err != nil {
			return nil, fmt.Errorf("merge: envelope: %w", err)
		}
		el, err := sender.NewElement(sender.TypeCustom, sender.CustomElem{Data: string(data), Desc: "timbroadcast merged custom elements", Ext: EnvelopeExt})
		if err != nil {
			return nil, err
		}
		out.MsgBody[runAt] = el
	}
	return out, nil
}

func mergeEnvelope(parts []MergePart) (*sender.Message, error) {
	env := EnvelopeV2{Version: EnvelopeV2Ext}
	for _, p := range parts {
		env.Events = append(env.Events, MergedEvent{Key: p.Key, CloudCustomData: p.Message.CloudCustomData, MsgBody: p.Message.MsgBody})
	}
	data, err := sender.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("merge: envelope: %w", err)
	}
	el, err := sender.NewElement(sender.TypeCustom, sender.CustomElem{Data: string(data), Desc: "timbroadcast merged events", Ext: EnvelopeV2Ext})
	if err != nil {
		return nil, err
	}
	return &sender.Message{FromAccount: parts[0].Message.FromAccount, MsgBody: []sender.Element{el}}, nil
}
