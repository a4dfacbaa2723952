package mapping_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/timbroadcast/timbroadcast/consumer/mapping"
)

func gift() mapping.Input {
	v, _ := mapping.ParseJSON([]byte(`{"type":"gift","user":"u1","amount":500,"room":"r9","big":12345678901234}`))
	return mapping.Input{Value: v, Key: []byte("g-1"), Headers: map[string][]byte{"source": []byte("shop")},
		Topic: "gifts", Partition: 2, Offset: 41, Timestamp: time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)}
}

func TestMap(t *testing.T) {
	tests := []struct {
		name, prog string
		want       string // "" for skipped
		err        string // substring of the *mapping.Error
	}{
		{"object", `{MsgBody: [{MsgType: "TIMTextElem", MsgContent: {Text: "\(.user) sent \(.amount)"}}]}`,
			`{"MsgBody":[{"MsgContent":{"Text":"u1 sent 500"},"MsgType":"TIMTextElem"}]}`, ""},
		{"string shorthand", `"\(.user) sent a gift in \(.room)"`,
			`{"MsgBody":[{"MsgContent":{"Text":"u1 sent a gift in r9"},"MsgType":"TIMTextElem"}]}`, ""},
		{"variables", `"\($key) \($topic)/\($partition)@\($offset) \($timestamp) \($headers.source)"`,
			`{"MsgBody":[{"MsgContent":{"Text":"g-1 gifts/2@41 2026-11-25T20:00:00Z shop"},"MsgType":"TIMTextElem"}]}`, ""},
		{"big integers stay exact", `"\(.big)"`,
			`{"MsgBody":[{"MsgContent":{"Text":"12345678901234"},"MsgType":"TIMTextElem"}]}`, ""},
		{"filtered by select", `select(.amount > 1000) | "big gift"`, "", ""},
		{"null skips", `null`, "", ""},
		{"empty skips", `empty`, "", ""},
		{"two outputs", `"a", "b"`, "", "more than one output"},
		{"a number", `.amount`, "", "gave number"},
		{"runtime error", `.user | tonumber`, "", "jq:"},
		{"error()", `error("no")`, "", "jq:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := mapping.Compile(tt.prog)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Map(gift())
			if tt.err != "" {
				var me *mapping.Error
				if !errors.As(err, &me) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Map = %s, %v; want a mapping error with %q", got, err, tt.err)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("Map = %s, %v; want %s", got, err, tt.want)
			}
		})
	}
}

// The same record always maps to the same bytes.
func TestMapIsStable(t *testing.T) {
	p, err := mapping.Compile(`{MsgBody: [{MsgType: "TIMCustomElem", MsgContent: {Data: (. | tojson), Desc: .type}}], CloudCustomData: .room}`)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := p.Map(gift())
	for range 20 {
		if again, _ := p.Map(gift()); string(again) != string(first) {
			t.Fatalf("%s then %s", first, again)
		}
	}
}

func TestCompileRefuses(t *testing.T) {
	for _, prog := range []string{`now`, `{t: now}`, `$ENV.HOME`, `env.PATH`, `input`, `[inputs]`, `input_filename`,
		`localtime`, `.a |`, `$nope`, `def f: now; f`} {
		if _, err := mapping.Compile(prog); err == nil {
			t.Errorf("Compile(%q) succeeded, want an error", prog)
		}
	}
	// A function of its own named like an impure builtin is fine, and so
	// is the word in a string.
	for _, prog := range []string{`def now: 1; now`, `"now"`, `.env`, `gmtime | todate`} {
		if _, err := mapping.Compile(prog); err != nil {
			t.Errorf("Compile(%q) = %v, want it accepted", prog, err)
		}
	}
}

func BenchmarkMap(b *testing.B) {
	p, err := mapping.Compile(`select(.type == "gift") | {MsgBody: [{MsgType: "TIMCustomElem", MsgContent: {Data: ({user, amount, room} | tojson), Desc: "gift"}}]}`)
	if err != nil {
		b.Fatal(err)
	}
	raw := []byte(`{"type":"gift","user":"u1","amount":500,"room":"r9","at":"2026-11-25T20:00:00Z"}`)
	b.ReportAllocs()
	for b.Loop() {
		v, _ := mapping.ParseJSON(raw)
		in := gift()
		in.Value = v
		if _, err := p.Map(in); err != nil {
			b.Fatal(err)
		}
	}
}

// Values a schema decoder builds (int64, float32, ...) are taken, never a
// panic.
func TestMapDecodedTypes(t *testing.T) {
	p, err := mapping.Compile(`{MsgBody: [{MsgType: "TIMCustomElem", MsgContent: {Data: tojson}}]}`)
	if err != nil {
		t.Fatal(err)
	}
	in := gift()
	in.Value = map[string]any{"a": int64(5), "b": int32(6), "c": float32(1.5), "d": uint64(1 << 63), "e": []any{int64(7)}}
	got, err := p.Map(in)
	want := `{"MsgBody":[{"MsgContent":{"Data":"{\"a\":5,\"b\":6,\"c\":1.5,\"d\":9223372036854775808,\"e\":[7]}"},"MsgType":"TIMCustomElem"}]}`
	if err != nil || string(got) != want {
		t.Errorf("Map = %s, %v; want %s", got, err, want)
	}
}

// TestMapBounds: a program whose work depends on the record (n = 10^15)
// ends at its deadline, and an output over the size limit is refused;
// both are *mapping.Error naming the limit.
func TestMapBounds(t *testing.T) {
	v, _ := mapping.ParseJSON([]byte(`{"n":1000000000000000,"s":"x"}`))
	in := mapping.Input{Value: v}
	runaway, err := mapping.Compile(`"\(last(range(.n)))"`)
	if err != nil {
		t.Fatal(err)
	}
	runaway.Timeout = 50 * time.Millisecond
	start := time.Now()
	_, err = runaway.Map(in)
	var me *mapping.Error
	if !errors.As(err, &me) || !strings.Contains(err.Error(), "TIM_MAP_TIMEOUT") {
		t.Fatalf("got %v, want a mapping error naming TIM_MAP_TIMEOUT", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the runaway ran %v", d)
	}
	big, err := mapping.Compile(`.s * 100000`)
	if err != nil {
		t.Fatal(err)
	}
	big.MaxOutputBytes = 1000
	if _, err := big.Map(in); !errors.As(err, &me) || !strings.Contains(err.Error(), "TIM_MAP_MAX_OUTPUT_BYTES") {
		t.Fatalf("got %v, want a mapping error naming TIM_MAP_MAX_OUTPUT_BYTES", err)
	}
	obj, _ := mapping.Compile(`{MsgBody: [{MsgType: "TIMTextElem", MsgContent: {Text: (.s * 100000)}}]}`)
	obj.MaxOutputBytes = 1000
	if _, err := obj.Map(in); !errors.As(err, &me) || !strings.Contains(err.Error(), "over its limit of 1000") {
		t.Fatalf("got %v, want the output limit", err)
	}
}

// FuzzMap: any record value, parsed and mapped by a program that walks
// it, maps or fails as the record's fault (a *mapping.Error), never
// panics, within its time limit.
func FuzzMap(f *testing.F) {
	f.Add([]byte(`{"type":"gift","user":"u1","amount":500}`))
	f.Add([]byte(`{"n":[1,{"a":null}],"s":"\u0000"}`))
	p, err := mapping.Compile(`if type == "object" then (.. | strings? // empty) as $s | "\($s)" else {MsgBody: [{MsgType: "TIMTextElem", MsgContent: {Text: tostring}}]} end`)
	if err != nil {
		f.Fatal(err)
	}
	p.Timeout = 100 * time.Millisecond
	f.Fuzz(func(t *testing.T, value []byte) {
		v, err := mapping.ParseJSON(value)
		if err != nil {
			return
		}
		_, err = p.Map(mapping.Input{Value: v, Key: value})
		var me *mapping.Error
		if err != nil && !errors.As(err, &me) {
			t.Fatalf("Map failed with %T: %v", err, err)
		}
	})
}
