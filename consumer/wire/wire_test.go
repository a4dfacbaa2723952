package wire_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

// TestEventFixtures decodes the public event examples: valid/*.json must
// decode to the golden request body (golden/<name>.body.json, whose Random
// pins the derivation too); invalid/*.json must fail with the reason that
// starts the file's name.
func TestEventFixtures(t *testing.T) {
	for _, kind := range []string{"valid", "invalid"} {
		files, err := filepath.Glob(filepath.Join(publicFixtures, "events", kind, "*.json"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no %s fixtures: %v", kind, err)
		}
		for _, f := range files {
			name := filepath.Base(f)
			t.Run(kind+"/"+name, func(t *testing.T) {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				ev, err := wire.DecodeEvent(wire.Record{Topic: "broadcasts", Key: []byte("key-" + name), Value: b})
				if kind == "valid" {
					if err != nil {
						t.Fatal(err)
					}
					golden(t, filepath.Join(publicFixtures, "golden", strings.TrimSuffix(name, ".json")+".body.json"), append(ev.Body, '\n'))
					return
				}
				ie, ok := err.(*wire.InvalidEventError)
				if !ok {
					t.Fatalf("decoded without an *InvalidEventError (%v), want one", err)
				}
				if reason := strings.SplitN(name, ".", 2)[0]; ie.Reason != reason {
					t.Errorf("reason %q (%v), want %q", ie.Reason, ie, reason)
				}
			})
		}
	}
}

func TestDecodeEventRules(t *testing.T) {
	text := `{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`
	tests := []struct {
		name    string
		value   string
		headers map[string][]byte
		reason  string
		field   string
	}{
		{"ok", text, nil, "", ""},
		{"not json", `{"MsgBody":`, nil, wire.ReasonInvalidJSON, ""},
		{"array", `[1]`, nil, wire.ReasonInvalidJSON, ""},
		{"unknown top-level field", `{"MsgBody":[],"Priorty":"high"}`, nil, wire.ReasonInvalidEvent, "Priorty"},
		{"unknown element field", `{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"a"},"Extra":1}]}`, nil, wire.ReasonInvalidEvent, "MsgBody[0].Extra"},
		{"missing MsgBody", `{"From_Account":"a"}`, nil, wire.ReasonInvalidEvent, "MsgBody"},
		{"Random too large", `{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"a"}}],"Random":4294967296}`, nil, wire.ReasonInvalidEvent, "Random"},
		{"bad expiry", text, map[string][]byte{wire.HeaderExpiresAt: []byte("tomorrow")}, wire.ReasonInvalidEvent, wire.HeaderExpiresAt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wire.DecodeEvent(wire.Record{Topic: "t", Key: []byte("k"), Value: []byte(tt.value), Headers: tt.headers})
			if tt.reason == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			ie, ok := err.(*wire.InvalidEventError)
			if !ok || ie.Reason != tt.reason || ie.Field != tt.field {
				t.Errorf("err = %#v, want reason %q field %q", err, tt.reason, tt.field)
			}
		})
	}
}

func TestSameEventSameBytes(t *testing.T) {
	// Whitespace in MsgContent does not change the bytes or the Random.
	a := `{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`
	b := `{ "MsgBody" : [ { "MsgType" : "TIMTextElem", "MsgContent" : { "Text" : "hi" } } ] }`
	ea, err1 := wire.DecodeEvent(wire.Record{Topic: "t", Key: []byte("k"), Value: []byte(a)})
	eb, err2 := wire.DecodeEvent(wire.Record{Topic: "t", Key: []byte("k"), Value: []byte(b)})
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if string(ea.Body) != string(eb.Body) {
		t.Errorf("bodies differ:\n%s\n%s", ea.Body, eb.Body)
	}
	other, _ := wire.DecodeEvent(wire.Record{Topic: "t", Key: []byte("k2"), Value: []byte(a)})
	if other.Message.Random == ea.Message.Random {
		t.Error("two keys, one Random")
	}
}

func deadLetterFixture() (kafka.Message, wire.Failure) {
	m := kafka.Message{
		Topic: "broadcasts", Partition: 4, Offset: 1234, Key: []byte("k1"), Value: []byte(`{"MsgBody":[]}`),
		Time: time.Date(2026, 1, 2, 3, 4, 5, 6000000, time.UTC),
		Headers: []kafka.Header{
			{Key: "traceparent", Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")},
			{Key: wire.HeaderDLQReason, Value: []byte("an earlier failure: replaced")},
			{Key: wire.HeaderSourceOffset, Value: []byte("1")},
		},
	}
	f := wire.Failure{Reason: "content_blocked", Code: 80001, Info: "content blocked", Field: "MsgBody[0]",
		Attempts: 2, Random: 4242, FailedAt: time.Date(2026, 1, 2, 3, 4, 6, 0, time.FixedZone("CST", 8*3600))}
	return m, f
}

func renderHeaders(hs []kafka.Header) []byte {
	var b strings.Builder
	for _, h := range hs {
		fmt.Fprintf(&b, "%s: %s\n", h.Key, h.Value)
	}
	return []byte(b.String())
}

func TestDeadLetterHeadersGolden(t *testing.T) {
	m, f := deadLetterFixture()
	dl := wire.DeadLetterMessage(m, f)
	if string(dl.Key) != "k1" || string(dl.Value) != string(m.Value) || dl.Topic != "" {
		t.Errorf("dead-letter record key %q value %q topic %q: want the original key and value, topic left to the writer", dl.Key, dl.Value, dl.Topic)
	}
	golden(t, filepath.Join("testdata", "dead-letter-headers.golden"), renderHeaders(dl.Headers))

	long := f
	long.Info = strings.Repeat("x", 5000)
	if got := wire.Header(wire.DeadLetterMessage(m, long), wire.HeaderDLQInfo); len(got) != wire.MaxInfoBytes {
		t.Errorf("info header of %d bytes, want it cut at %d", len(got), wire.MaxInfoBytes)
	}
}

func TestReplayMessage(t *testing.T) {
	m, f := deadLetterFixture()
	dl := wire.DeadLetterMessage(m, f)
	dl.Topic, dl.Partition, dl.Offset = "broadcasts.dlq", 0, 77
	r := wire.ReplayMessage(dl)
	golden(t, filepath.Join("testdata", "replay-headers.golden"), renderHeaders(r.Headers))
	if string(r.Key) != "k1" || string(r.Value) != string(m.Value) {
		t.Errorf("replayed record %q=%q, want the original", r.Key, r.Value)
	}
}

func TestInFlightFormat(t *testing.T) {
	f := wire.InFlight{Last: 9007199254740993, Random: 4294967295}
	golden(t, filepath.Join("testdata", "in-flight.golden"), []byte(f.String()+"\n"))
	if got, ok := wire.ParseInFlight(f.String()); !ok || got != f {
		t.Errorf("round trip: %+v, %v", got, ok)
	}
	d := wire.InFlight{Last: 7, Random: 42, Delivered: &wire.Delivered{MsgSeq: 18446744073709551615, Attempts: 3,
		FirstAttempt: time.UnixMilli(1764111600123), Call: time.UnixMilli(1764111602456), Final: time.UnixMilli(1764111602501)}}
	golden(t, filepath.Join("testdata", "in-flight-delivered.golden"), []byte(d.String()+"\n"))
	if got, ok := wire.ParseInFlight(d.String()); !ok || got.Delivered == nil || *got.Delivered != *d.Delivered || got.Last != 7 || got.Random != 42 {
		t.Errorf("round trip of a delivered call: %+v, %v", got, ok)
	}
	for _, bad := range []string{"", "tb1", "tb1 1", "tb1 1 2 3", "tb1 x 2", "tb1 1 4294967296", "tb1 -1 2", "tb2 1 2", "TB1 1 2",
		"tb1 1 2 delivered 3 4 5 6", "tb1 1 2 sent 3 4 5 6 7", "tb1 1 2 delivered x 4 5 6 7", "tb1 1 2 delivered 3 4 5 6 x"} {
		if _, ok := wire.ParseInFlight(bad); ok {
			t.Errorf("ParseInFlight(%q) accepted", bad)
		}
	}
}

// mergedGolden merges parts in mode, with Random 1, and checks the
// request body against testdata/name.
func mergedGolden(t *testing.T, mode wire.MergeMode, parts []wire.MergePart, name string) *sender.Message {
	t.Helper()
	msg, err := wire.Merge(mode, parts)
	if err != nil {
		t.Fatal(err)
	}
	msg.Random = 1
	body, err := msg.Encode()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("testdata", name), append(body, '\n'))
	return msg
}

func TestEnvelopeGolden(t *testing.T) {
	var parts []wire.MergePart
	for i, data := range []string{`{"gift":1}`, `{"gift":2}`, `<&>`} {
		el, _ := sender.NewElement(sender.TypeCustom, sender.CustomElem{Data: data, Desc: fmt.Sprint("d", i)})
		parts = append(parts, wire.MergePart{Key: fmt.Sprint("k", i), Message: &sender.Message{CloudCustomData: "c", MsgBody: []sender.Element{el}}})
	}
	msg := mergedGolden(t, wire.MergeNative, parts, "envelope-v1.golden.json")

	var c sender.CustomElem
	if err := json.Unmarshal(msg.MsgBody[0].MsgContent, &c); err != nil {
		t.Fatal(err)
	}
	events, ok, err := wire.UnpackEnvelope(c)
	if err != nil || !ok || len(events) != 3 || events[2].Data != "<&>" || events[1].Key != "k1" {
		t.Errorf("unpacked %+v, %v, %v", events, ok, err)
	}
}

func textMsg(s string) *sender.Message {
	return &sender.Message{MsgBody: []sender.Element{sender.Text(s)}}
}
func customMsg(s string) *sender.Message {
	return &sender.Message{MsgBody: []sender.Element{sender.Custom(s)}}
}

// TestCanJoinNative: texts merge freely; the custom-bearing events of a
// call are one event or one run of lone custom elements; the sender and
// CloudCustomData must match.
func TestCanJoinNative(t *testing.T) {
	mixed := &sender.Message{MsgBody: []sender.Element{sender.Text("t"), sender.Custom("c")}}
	other := textMsg("x")
	other.FromAccount = "someone"
	ccd := textMsg("x")
	ccd.CloudCustomData = "campaign"
	seq := func(ms ...*sender.Message) []wire.MergePart {
		var out []wire.MergePart
		for _, m := range ms {
			out = append(out, wire.MergePart{Message: m})
		}
		return out
	}
	tests := []struct {
		name  string
		parts []wire.MergePart
		next  *sender.Message
		want  bool
	}{
		{"text after texts", seq(textMsg("a"), textMsg("b")), textMsg("c"), true},
		{"custom after texts", seq(textMsg("a")), customMsg("c"), true},
		{"text after the custom run", seq(textMsg("a"), customMsg("c")), textMsg("b"), true},
		{"custom run goes on", seq(textMsg("a"), customMsg("c"), customMsg("d")), customMsg("e"), true},
		{"second custom run", seq(customMsg("c"), textMsg("a")), customMsg("d"), false},
		{"custom after a mixed event", seq(mixed), customMsg("d"), false},
		{"mixed after a custom", seq(customMsg("c")), mixed, false},
		{"text after a mixed event", seq(mixed), textMsg("a"), true},
		{"another sender", seq(textMsg("a")), other, false},
		{"another CloudCustomData", seq(textMsg("a")), ccd, false},
	}
	for _, tt := range tests {
		if got := wire.CanJoin(wire.MergeNative, tt.parts, tt.next); got != tt.want {
			t.Errorf("%s: CanJoin = %v, want %v", tt.name, got, tt.want)
		}
	}
	if !wire.CanJoin(wire.MergeEnvelope, seq(customMsg("c"), mixed, ccd), customMsg("d")) || wire.CanJoin(wire.MergeEnvelope, seq(textMsg("a")), other) {
		t.Error("envelope mode joins anything of one sender, nothing of another")
	}
}

// TestMergeNativeKeepsOrder: texts before and after a run of custom
// events; the run becomes one envelope at its place.
func TestMergeNativeKeepsOrder(t *testing.T) {
	parts := []wire.MergePart{{Key: "1", Message: textMsg("a")}, {Key: "2", Message: customMsg("b")},
		{Key: "3", Message: customMsg("c")}, {Key: "4", Message: textMsg("d")}}
	msg, err := wire.Merge(wire.MergeNative, parts)
	if err != nil {
		t.Fatal(err)
	}
	if len(msg.MsgBody) != 3 || msg.MsgBody[1].MsgType != sender.TypeCustom {
		t.Fatalf("merged body %+v, want text, envelope, text", msg.MsgBody)
	}
	if got := flatten(t, msg); got != "a,b,c,d" {
		t.Errorf("unpacked order %s, want a,b,c,d", got)
	}
	if _, err := wire.Merge(wire.MergeNative, []wire.MergePart{{Message: customMsg("a")}, {Message: textMsg("b")}, {Message: customMsg("c")}}); err == nil {
		t.Error("Merge accepted two custom runs")
	}
}

// flatten returns the texts and custom Data of a message, envelopes
// unpacked, comma-separated.
func flatten(t *testing.T, m *sender.Message) string {
	t.Helper()
	var out []string
	add := func(el sender.Element) {
		var c struct{ Text, Data string }
		_ = json.Unmarshal(el.MsgContent, &c)
		out = append(out, c.Text+c.Data)
	}
	for _, el := range m.MsgBody {
		events, ok, err := wire.Unpack(el)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			add(el)
			continue
		}
		for _, e := range events {
			for _, x := range e.MsgBody {
				add(x)
			}
		}
	}
	return strings.Join(out, ",")
}

func TestEnvelopeV2Golden(t *testing.T) {
	a := textMsg("a")
	a.CloudCustomData = "room=1"
	b := &sender.Message{MsgBody: []sender.Element{sender.Custom(`{"gift":1}`), sender.Text("b")}}
	parts := []wire.MergePart{{Key: "k1", Message: a}, {Key: "k2", Message: b}, {Key: "k3", Message: customMsg("c")}}
	msg := mergedGolden(t, wire.MergeEnvelope, parts, "envelope-v2.golden.json")
	events, ok, err := wire.Unpack(msg.MsgBody[0])
	if err != nil || !ok || len(events) != 3 || events[0].CloudCustomData != "room=1" || events[1].Key != "k2" || len(events[1].MsgBody) != 2 {
		t.Errorf("unpacked %+v, %v, %v", events, ok, err)
	}
	if got := flatten(t, msg); got != `a,{"gift":1},b,c` {
		t.Errorf("order %s", got)
	}
}

// An operator's or receiver's view of a merged custom element: unpack it
// into the events it carries.
func ExampleUnpackEnvelope() {
	data := `{"v":"timbroadcast/merged/v1","events":[{"key":"room-1","Data":"{\"gift\":1}"},{"key":"room-2","Data":"{\"gift\":2}"}]}`
	events, merged, err := wire.UnpackEnvelope(sender.CustomElem{Data: data, Ext: wire.EnvelopeExt})
	if err != nil {
		panic(err)
	}
	fmt.Println("merged:", merged)
	for _, e := range events {
		fmt.Println(e.Key, e.Data)
	}
	// Output:
	// merged: true
	// room-1 {"gift":1}
	// room-2 {"gift":2}
}

// ExampleDecodeReceipt reads receipts the way a receipt consumer does:
// at least once, so it counts each event (source topic, partition,
// offset) once.
func ExampleDecodeReceipt() {
	values := []string{
		`{"schema":"timbroadcast/receipt/v1","outcome":"delivered","random":7,"call_random":7,"msg_seq":41,"attempts":1,"call_events":1,"final_at":"2026-11-25T23:00:01Z","source":{"topic":"broadcasts","partition":0,"offset":12}}`,
		`{"schema":"timbroadcast/receipt/v1","outcome":"delivered","random":7,"call_random":7,"msg_seq":41,"attempts":1,"call_events":1,"final_at":"2026-11-25T23:00:01Z","source":{"topic":"broadcasts","partition":0,"offset":12}}`,
		`{"schema":"timbroadcast/receipt/v1","outcome":"dead_lettered","random":0,"attempts":0,"call_events":0,"final_at":"2026-11-25T23:00:02Z","source":{"topic":"broadcasts","partition":0,"offset":13},"dead_letter":{"topic":"broadcasts.dlq","reason":"invalid_json","code":0}}`,
	}
	seen := map[string]bool{}
	for _, v := range values {
		rc, err := wire.DecodeReceipt([]byte(v))
		if err != nil {
			continue
		}
		id := fmt.Sprintf("%s/%d/%d", rc.Source.Topic, rc.Source.Partition, rc.Source.Offset)
		if seen[id] {
			continue // written again after a crash
		}
		seen[id] = true
		if rc.DeadLetter != nil {
			fmt.Println(id, rc.Outcome, rc.DeadLetter.Reason)
			continue
		}
		fmt.Println(id, rc.Outcome, "MsgSeq", rc.MsgSeq)
	}
	// Output:
	// broadcasts/0/12 delivered MsgSeq 41
	// broadcasts/0/13 dead_lettered invalid_json
}

// FuzzDecodeEvent: any record value either decodes to a body within the
// limit that decodes again to the same bytes, or fails with an
// *InvalidEventError; never a panic.
func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(`{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`))
	f.Add([]byte(`{"MsgBody":[{"MsgType":"TIMCustomElem","MsgContent":{"Data":"x"}}],"Random":7,"From_Account":"a"}`))
	f.Add([]byte(`{"MsgBody":[{"MsgType":"TIMFileElem","MsgContent":{"Url":"u","FileSize":1,"FileName":"f","Download_Flag":2}}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, value []byte) {
		r := wire.Record{Topic: "t", Key: []byte("k"), Value: value}
		ev, err := wire.DecodeEvent(r)
		if err != nil {
			if _, ok := err.(*wire.InvalidEventError); !ok {
				t.Fatalf("error %T %v, want *InvalidEventError", err, err)
			}
			return
		}
		if len(ev.Body) > sender.MaxBodyBytes {
			t.Fatalf("body of %d bytes accepted", len(ev.Body))
		}
		again, err := wire.DecodeEvent(wire.Record{Topic: "t", Key: []byte("k"), Value: ev.Body})
		if err != nil || string(again.Body) != string(ev.Body) {
			t.Fatalf("re-decoding the body: %v\n%s\n%s", err, ev.Body, again.Body)
		}
	})
}

func TestReceiptGolden(t *testing.T) {
	produced := time.Date(2026, 11, 25, 23, 0, 0, 0, time.UTC)
	m := kafka.Message{Topic: "announcements", Partition: 2, Offset: 41, Key: []byte("evt-1"), Time: produced,
		Headers: []kafka.Header{{Key: "traceparent", Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")},
			{Key: "tracestate", Value: []byte("vendor=1")}, {Key: "x-other", Value: []byte("not copied")}}}
	r := wire.ReceiptFor(m, wire.OutcomeDelivered, produced.Add(2600*time.Millisecond))
	r.Random, r.MsgSeq = 1234567, 99
	r.SetCall(3141592653, 40, 2, produced.Add(time.Second), produced.Add(2500*time.Millisecond))
	rm, err := wire.ReceiptMessage(m, r, nil)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("testdata", "receipt-delivered.golden.json"), append(rm.Value, '\n'))
	golden(t, filepath.Join("testdata", "receipt-headers.golden"), renderHeaders(rm.Headers))
	if string(rm.Key) != "evt-1" {
		t.Errorf("receipt key %q, want the event's", rm.Key)
	}
	back, err := wire.DecodeReceipt(rm.Value)
	if err != nil || back.MsgSeq != 99 || back.CallEvents != 40 || *back.ProduceToCallMillis != 2500 || back.Source.Offset != 41 {
		t.Errorf("round trip: %+v, %v", back, err)
	}

	dl := wire.ReceiptFor(m, wire.OutcomeDeadLettered, produced.Add(time.Second))
	dl.Random = 7
	dl.DeadLetter = wire.ReceiptDeadLetterOf("announcements.dlq", wire.Failure{Reason: "invalid_event", Info: "MsgBody is required", Field: "MsgBody"})
	dm, err := wire.ReceiptMessage(m, dl, nil)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("testdata", "receipt-dead-lettered.golden.json"), append(dm.Value, '\n'))

	fr := wire.ReceiptFor(m, wire.OutcomeFiltered, produced.Add(5*time.Millisecond))
	fm, err := wire.ReceiptMessage(m, fr, nil)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("testdata", "receipt-filtered.golden.json"), append(fm.Value, '\n'))
	if back, err := wire.DecodeReceipt(fm.Value); err != nil || back.Outcome != wire.OutcomeFiltered {
		t.Errorf("filtered receipt round trip: %+v, %v", back, err)
	}
	if _, err := wire.DecodeReceipt([]byte(`{"schema":"timbroadcast/receipt/v2"}`)); err == nil {
		t.Error("a receipt of another schema decoded")
	}
}

func TestHeaderCarrier(t *testing.T) {
	hs := []kafka.Header{{Key: "TraceParent", Value: []byte("old")}, {Key: "x", Value: []byte("1")}, {Key: "traceparent", Value: []byte("newer")}}
	c := wire.HeaderCarrier{Headers: &hs}
	if got := c.Get("traceparent"); got != "newer" {
		t.Errorf("Get = %q, want the last header of that name", got)
	}
	c.Set("traceparent", "set")
	if len(hs) != 2 || c.Get("TRACEPARENT") != "set" || c.Get("x") != "1" {
		t.Errorf("after Set: %v; want one traceparent and x kept", hs)
	}
	if keys := c.Keys(); len(keys) != 2 || keys[0] != "x" {
		t.Errorf("Keys = %v", keys)
	}
}

// TestBoundedCopies: a field name or key of megabytes never makes a dead
// letter or receipt that cannot be written: the field header is cut, the
// last truncation step is about a kilobyte whatever the record held, and
// a receipt's key is a digest past MaxKeyBytes.
func TestBoundedCopies(t *testing.T) {
	huge := strings.Repeat("é", 1<<20) // 2 MiB, cut on a character boundary
	m := kafka.Message{Topic: "t", Partition: 1, Offset: 7, Key: []byte(huge), Value: []byte(huge),
		Headers: []kafka.Header{{Key: huge, Value: []byte(huge)}, {Key: "traceparent", Value: []byte(huge)}}}
	f := wire.Failure{Reason: wire.ReasonInvalidEvent, Field: huge, Info: huge}
	dl := wire.DeadLetterMessage(m, f)
	if v := wire.Header(dl, wire.HeaderDLQField); len(v) > wire.MaxFieldBytes || !utf8.ValidString(v) || !strings.Contains(v, "bytes)") {
		t.Errorf("field header of %d bytes: %.40q", len(v), v)
	}
	last := wire.TruncateDeadLetter(dl, m.Value, wire.TruncateSteps)
	size := len(last.Key) + len(last.Value)
	for _, h := range last.Headers {
		size += len(h.Key) + len(h.Value)
	}
	if size > 2048 {
		t.Errorf("the last truncation step is %d bytes", size)
	}
	if wire.Header(last, wire.HeaderSourceOffset) != "7" || wire.Header(last, wire.HeaderDLQReason) != wire.ReasonInvalidEvent ||
		!strings.HasPrefix(string(last.Key), "sha256:") {
		t.Errorf("the last step lost where the record is: %+v", last.Headers)
	}
	r, err := wire.ReceiptMessage(m, wire.ReceiptFor(m, wire.OutcomeDelivered, time.Now()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Key) != string(wire.KeyDigest(m.Key)) || len(r.Headers) != 1 {
		t.Errorf("receipt key %.20q, %d headers", r.Key, len(r.Headers))
	}
	short := kafka.Message{Key: []byte("k")}
	if r, _ := wire.ReceiptMessage(short, wire.ReceiptFor(short, wire.OutcomeDelivered, time.Now()), nil); string(r.Key) != "k" {
		t.Errorf("a short key is kept: %q", r.Key)
	}
}

func TestWatermarkFormat(t *testing.T) {
	w := wire.Watermark{V: wire.DeliveredVersion, App: "1400000001", Topic: "events", TopicID: "AAECAwQFBgcICQoLDA0ODw",
		Partition: 3, Next: 9007199254740993, At: 1764111600123, By: "timbroadcast-7f9c"}
	golden(t, filepath.Join("testdata", "delivered-watermark.golden"), []byte(w.Key()+"\n"+string(w.Encode())+"\n"))
	p := w
	p.Pending = &wire.Pending{First: 9007199254740993, Last: 9007199254740995, Random: 4294967295, UnknownSince: 1764111600001}
	golden(t, filepath.Join("testdata", "delivered-pending.golden"), []byte(p.Key()+"\n"+string(p.Encode())+"\n"))
	r := wire.Watermark{V: 1, App: "1400000001", Topic: "events", Partition: 0, Next: 120, Reset: wire.ResetForget, At: 1764111600123, By: "forget"}
	golden(t, filepath.Join("testdata", "delivered-forget.golden"), []byte(r.Key()+"\n"+string(r.Encode())+"\n"))
	for _, e := range []wire.Watermark{w, p, r} {
		got, err := wire.ParseWatermark([]byte(e.Key()), e.Encode())
		if err != nil || string(got.Encode()) != string(e.Encode()) {
			t.Errorf("round trip of %s: %s, %v", e.Encode(), got.Encode(), err)
		}
	}
	// A reader ignores fields it does not know.
	if got, err := wire.ParseWatermark([]byte(w.Key()), []byte(`{"v":1,"app":"1400000001","topic":"events","partition":3,"next":5,"at":1,"epoch":9}`)); err != nil || got.Next != 5 {
		t.Errorf("an entry with an unknown field: %+v, %v", got, err)
	}
	for name, value := range map[string]string{
		"newer version": `{"v":2,"app":"1400000001","topic":"events","partition":3,"next":5}`,
		"key mismatch":  `{"v":1,"app":"1400000001","topic":"events","partition":4,"next":5}`,
		"negative next": `{"v":1,"app":"1400000001","topic":"events","partition":3,"next":-5}`,
		"bad reset":     `{"v":1,"app":"1400000001","topic":"events","partition":3,"next":5,"reset":"x"}`,
		"bad pending":   `{"v":1,"app":"1400000001","topic":"events","partition":3,"next":5,"pending":{"first":9,"last":2}}`,
		"not json":      `tb1 5 7`,
		"too large":     `{"v":1,"app":"1400000001","topic":"events","partition":3,"next":5,"by":"` + strings.Repeat("x", 5000) + `"}`,
	} {
		if _, err := wire.ParseWatermark([]byte(w.Key()), []byte(value)); err == nil {
			t.Errorf("%s: ParseWatermark accepted %.80s", name, value)
		}
	}
	if _, err := wire.ParseWatermark([]byte(w.Key()), []byte(`{"v":2}`)); !errors.Is(err, wire.ErrUnknownVersion) {
		t.Errorf("a newer version: %v, want ErrUnknownVersion", err)
	}
}

func FuzzParseWatermark(f *testing.F) {
	w := wire.Watermark{V: 1, App: "1", Topic: "t", Partition: 0, Next: 3, Pending: &wire.Pending{First: 3, Last: 4}}
	f.Add([]byte(w.Key()), w.Encode())
	f.Fuzz(func(t *testing.T, key, value []byte) {
		got, err := wire.ParseWatermark(key, value)
		if err == nil && (got.Key() != string(key) || got.Next < 0) {
			t.Fatalf("accepted %q as %+v", value, got)
		}
	})
}

// TestWatermarkApply pins how readers combine the entries of one key.
func TestWatermarkApply(t *testing.T) {
	at := func(next int64, id, reset string, pending *wire.Pending) wire.Watermark {
		return wire.Watermark{V: 1, App: "1", Topic: "t", TopicID: id, Next: next, Reset: reset, Pending: pending}
	}
	p := &wire.Pending{First: 10, Last: 12, Random: 7, UnknownSince: 1}
	for _, tc := range []struct {
		name     string
		entries  []wire.Watermark
		want     int64
		wantID   string
		wantPend bool
	}{
		{"raises", []wire.Watermark{at(5, "a", "", nil), at(9, "a", "", nil)}, 9, "a", false},
		{"a late lower write lowers nothing", []wire.Watermark{at(9, "a", "", nil), at(5, "a", "", nil)}, 9, "a", false},
		{"forget lowers", []wire.Watermark{at(9, "a", "", nil), at(3, "a", wire.ResetForget, nil)}, 3, "a", false},
		{"truncation lowers", []wire.Watermark{at(9, "a", "", nil), at(4, "a", wire.ResetLogTruncated, nil)}, 4, "a", false},
		{"a new topic id replaces", []wire.Watermark{at(9, "a", "", nil), at(2, "b", "", nil)}, 2, "b", false},
		{"no id keeps the known one", []wire.Watermark{at(9, "a", "", nil), at(11, "", "", nil)}, 11, "a", false},
		{"pending kept", []wire.Watermark{at(10, "a", "", nil), at(10, "a", "", p)}, 10, "a", true},
		{"pending passed", []wire.Watermark{at(13, "a", "", nil), at(10, "a", "", p)}, 13, "a", false},
		{"delivery clears pending", []wire.Watermark{at(10, "a", "", p), at(13, "a", "", nil)}, 13, "a", false},
	} {
		var w wire.Watermark
		for _, e := range tc.entries {
			w = w.Apply(e)
		}
		if w.Next != tc.want || w.TopicID != tc.wantID || (w.Pending != nil) != tc.wantPend {
			t.Errorf("%s: next %d id %q pending %v; want %d %q %v", tc.name, w.Next, w.TopicID, w.Pending != nil, tc.want, tc.wantID, tc.wantPend)
		}
	}
}
