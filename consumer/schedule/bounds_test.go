package schedule

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestClaimsBounds: a claims-log record out of bounds (a timestamp or a
// pause a century ahead, a snapshot of a million grants, a megabyte member
// id) is refused with why, and a far pause is never obeyed by the gate;
// outside text is cut and its control characters escaped.
func TestClaimsBounds(t *testing.T) {
	now := time.Now()
	century := now.AddDate(100, 0, 0).UnixNano()
	bad := map[string]claimRecord{
		"timestamp a century ahead": {By: "x", TS: century},
		"pause a century ahead":     {By: "x", TS: now.UnixNano(), Pause: &pauseRecord{Code: 10007, Next: century}},
		"a million grants":          {By: "x", TS: now.UnixNano(), State: chainState{Grants: make([]slotGrant, 1_000_000)}},
		"a grant a century ahead":   {By: "x", TS: now.UnixNano(), State: chainState{Grants: []slotGrant{{At: century}}}},
		"a megabyte member id":      {By: strings.Repeat("m", 1<<20), TS: now.UnixNano()},
	}
	for name, r := range bad {
		if _, err := decodeClaim(encodeClaim(r), now, false); err == nil || len(err.Error()) > 300 {
			t.Errorf("%s: decoded (%v), want a short refusal", name, err)
		}
	}
	ok := claimRecord{By: "m1", TS: now.UnixNano(), Pause: &pauseRecord{Code: 10007, Info: "off\x1b[2J" + strings.Repeat("i", 4000), Next: now.Add(time.Second).UnixNano()}}
	got, err := decodeClaim(encodeClaim(ok), now, false)
	if err != nil {
		t.Fatal(err)
	}
	if info := got.Pause.Info; strings.ContainsRune(info, 0x1b) || len(info) > 512 {
		t.Errorf("pause info kept raw: %d bytes, %q...", len(info), info[:10])
	}

	g := newGate(time.Second, 5*time.Second, nil)
	if err := g.remote(claimRecord{By: "x", Pause: &pauseRecord{Code: 10007, Next: now.Add(time.Hour).UnixNano()}}); err == nil || g.closed() {
		t.Errorf("a pause an hour ahead with PAUSE_MAX 5s: %v, closed %v; want refused, open", err, g.closed())
	}
	if err := g.remote(claimRecord{By: "x", Pause: &pauseRecord{Code: 70050, Next: now.Add(50 * time.Second).UnixNano()}}); err != nil || !g.closed() {
		t.Errorf("a pause of a minute for 70050: %v, closed %v; want obeyed", err, g.closed())
	}
	if err := g.remote(claimRecord{By: "x", Pause: &pauseRecord{Code: 10007, Next: now.Add(3 * time.Second).UnixNano()}}); err != nil || !g.closed() {
		t.Errorf("a pause within PAUSE_MAX: %v, closed %v; want obeyed", err, g.closed())
	}
}

// FuzzDecodeClaim: any bytes in the claims log decode to a record within
// bounds or a short error, and a decoded record applies to a chain (and
// its snapshot to a new one) without a panic.
func FuzzDecodeClaim(f *testing.F) {
	now := time.Now().UnixNano()
	f.Add(encodeClaim(claimRecord{V: claimsVersion, By: "m1", Seq: 1, TS: now}))
	f.Add(encodeClaim(claimRecord{By: "m2", TS: now, Urgent: true, State: chainState{Seen: 3, Latest: now,
		Grants: []slotGrant{{By: "m1", Seq: 1, TS: now, At: now}}}}))
	f.Add(encodeClaim(claimRecord{By: "m3", TS: now, Pause: &pauseRecord{Code: 10007, Info: "off", Next: now + 1e9}}))
	f.Add([]byte(`{"v":2,"by":"x","ts":1,"state":{"seen":-5,"grants":[{"at":-1}]}}`))
	f.Add([]byte(`{"v":2,"app":7,"by":"x","ts":1,"hold":{"by":"op","reason":"r","for_ms":60000},"pause":{"next":1},"state":{"seen":-1,"hold":{"by":"a","since":5,"until":-3}}}`))
	f.Add([]byte(`{"v":2,"app":7,"by":"x","ts":1,"release":true,"resume":true,"state":{"seen":-1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		stamped := len(b)%2 == 0
		r, err := decodeClaim(b, time.Unix(0, now), stamped)
		if err != nil {
			if len(err.Error()) > 400 {
				t.Errorf("an error of %d bytes", len(err.Error()))
			}
			return
		}
		if len(r.By) > 512 || len(r.State.Grants) > 10_000 {
			t.Errorf("decoded out of bounds: by %d bytes, %d grants", len(r.By), len(r.State.Grants))
		}
		c := newChain(100*time.Millisecond, 250*time.Millisecond, chainState{Seen: -1})
		c.apply(0, r, 0)
		c.apply(1, r, now)
		fromSnapshot(100*time.Millisecond, 250*time.Millisecond, r.State, now).apply(r.State.Seen+1, r, now)
		if c.Hold != nil && c.Hold.Until != 0 && c.Hold.Until-c.Hold.Last > holdMaxMs*int64(time.Millisecond) {
			t.Errorf("a hold of %v", time.Duration(c.Hold.Until-c.Hold.Last))
		}
	})
}

// FuzzFastClaim: where the claims log's fast reader reads a record, it
// reads exactly what encoding/json reads; what it gives up on, encoding/json
// reads as before. The records this release writes are read fast.
func FuzzFastClaim(f *testing.F) {
	now := time.Now().UnixNano()
	written := [][]byte{
		encodeClaim(claimRecord{App: 1400000123, By: "a1b2c3d4", Seq: 104, TS: now, State: chainState{Seen: 12345, Latest: now,
			Grants: []slotGrant{{By: "a1b2c3d4", Seq: 100, TS: now, At: now}, {By: "ffee", TS: now - 5, At: now + 1e9, Urgent: true, Fixed: true}}}}),
		encodeClaim(claimRecord{App: 7, By: "m", TS: now, Took: true, Unsynced: true, State: chainState{Seen: -1}}),
		encodeClaim(claimRecord{By: "m", TS: -3, Urgent: true, Resume: true, Release: true}),
	}
	for _, b := range written {
		var r claimRecord
		if !fastClaim(b, &r) {
			f.Fatalf("a record this release writes is not read fast: %s", b)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"v":2,"by":"x","ts":1,"state":{"seen":-5,"grants":[{"at":-1}]}}`))
	f.Add([]byte(`{"v":2,"by":"x","BY":"y","ts":01,"state":{"grants":[]}}`))
	f.Add([]byte(`{"v":2,"by":"x\u00e9","ts":1e3,"seq":-0}`))
	f.Add([]byte(`{"v":2,"by":"x","ts":-9223372036854775808,"seq":18446744073709551615,"state":{"seen":9223372036854775807}}`))
	f.Add([]byte(`{"v":2,"by":"x","ts":9223372036854775808,"seq":18446744073709551616}`))
	f.Add([]byte(`{"v":2,"app":7,"by":"x","ts":1,"hold":{"by":"op","reason":"r","for_ms":60000},"pause":{"next":1},"state":{"seen":-1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast claimRecord
		if !fastClaim(b, &fast) {
			return
		}
		var slow claimRecord
		if err := json.Unmarshal(b, &slow); err != nil {
			t.Fatalf("read fast, refused by encoding/json (%v): %q", err, b)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("read fast as %+v, by encoding/json as %+v: %q", fast, slow, b)
		}
	})
}

// FuzzClaimReader: the claims log's reader (interned ids, a snapshot's
// grants checked, not kept) refuses exactly the records decodeClaim
// refuses, and reads the others as decodeClaim does but for the grants,
// of which it keeps the count.
func FuzzClaimReader(f *testing.F) {
	now := time.Now().UnixNano()
	f.Add(encodeClaim(claimRecord{App: 1400000123, By: "a1b2c3d4", Seq: 104, TS: now, State: chainState{Seen: 12345, Latest: now,
		Grants: []slotGrant{{By: "a1b2c3d4", Seq: 100, TS: now, At: now}, {By: "ffee", TS: now - 5, At: now + 1e9, Urgent: true, Fixed: true}}}}))
	f.Add(encodeClaim(claimRecord{By: "m", TS: now, State: chainState{Seen: 1, Grants: []slotGrant{{By: "m", At: now + int64(48*time.Hour)}}}}))
	f.Add([]byte(`{"v":2,"by":"x","ts":-9223372036854775808,"seq":18446744073709551615,"state":{"seen":-5,"grants":[{"at":9223372036854775807}]}}`))
	f.Add([]byte(`{"v":2,"by":"x","ts":9223372036854775808,"state":{"grants":[]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		stamped := len(b)%2 == 0
		var cr claimReader
		full, ferr := decodeClaim(b, time.Unix(0, now), stamped)
		grants := len(full.State.Grants)
		for range 2 { // the second time with the ids interned
			lean, lerr := cr.decode(b, time.Unix(0, now), stamped)
			if (ferr == nil) != (lerr == nil) {
				t.Fatalf("decodeClaim: %v; the reader: %v (%q)", ferr, lerr, b)
			}
			if ferr != nil {
				return
			}
			if lean.lean.read && lean.lean.n != grants {
				t.Fatalf("the reader saw %d grants, decodeClaim %d (%q)", lean.lean.n, grants, b)
			}
			full.State.Grants, lean.State.Grants, lean.lean = nil, nil, grantsSeen{}
			if !reflect.DeepEqual(full, lean) {
				t.Fatalf("decodeClaim read %+v, the reader %+v (%q)", full, lean, b)
			}
		}
	})
}

// BenchmarkDecodeClaim: a claim with a snapshot of four grants, as every
// member reads each record of every app: the fast reader (as at start,
// and as the claims log's reader reads it) and encoding/json.
//
//	go test -run '^$' -bench DecodeClaim -benchmem ./consumer/schedule
func BenchmarkDecodeClaim(b *testing.B) {
	now := time.Now()
	st := chainState{Seen: 12345, Latest: now.UnixNano()}
	for i := range 4 {
		st.Grants = append(st.Grants, slotGrant{By: "a1b2c3d4", Seq: uint64(100 + i), TS: now.UnixNano(),
			At: now.Add(time.Duration(i) * time.Second).UnixNano()})
	}
	raw := encodeClaim(claimRecord{App: 1400000123, By: "a1b2c3d4", Seq: 104, TS: now.UnixNano(), State: st})
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeClaim(raw, now, true); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reader", func(b *testing.B) {
		var cr claimReader
		for b.Loop() {
			if _, err := cr.decode(raw, now, true); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			var r claimRecord
			if err := json.Unmarshal(raw, &r); err != nil {
				b.Fatal(err)
			}
			if err := r.check(now, true); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzAppendClaim: the claims log's writer writes every record byte for
// byte as encoding/json does (the format pinned by the goldens, read by
// earlier releases), whatever its strings and numbers.
func FuzzAppendClaim(f *testing.F) {
	f.Add(2, uint64(1400000123), "a1b2c3d4", uint64(104), int64(1e18), uint16(0), 0, "", int64(0), "op", "", int64(0), int64(0), int64(0), int64(12345), int64(1e18), uint8(2), "ffee", uint64(3), int64(5), int64(7))
	f.Add(0, uint64(0), "m<&>\"\\\u2028é\x00\xff", uint64(0), int64(-3), uint16(0xffff), 10023, "info\n", int64(-1), "op\t", "why <not>", int64(60000), int64(-5), int64(9), int64(-1), int64(0), uint8(0), "", uint64(0), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, v int, app uint64, by string, seq uint64, ts int64, flags uint16, code int, info string, next int64,
		holdBy, reason string, forMs, since, until, seen, latest int64, grants uint8, gBy string, gSeq uint64, gTS, gAt int64) {
		flag := func(i int) bool { return flags&(1<<i) != 0 }
		r := claimRecord{V: v, App: app, By: by, Seq: seq, TS: ts, Urgent: flag(0), Took: flag(1), Resume: flag(2), Unsynced: flag(3),
			Release: flag(4), State: chainState{Seen: seen, Latest: latest}}
		if flag(5) {
			r.Pause = &pauseRecord{Code: code, Info: info, Next: next}
		}
		if flag(6) {
			r.Hold = &holdRecord{By: holdBy, Reason: reason, ForMs: forMs, Since: since, Until: until}
		}
		if flag(7) {
			r.State.Hold = &holdState{By: holdBy, Reason: reason, Since: since, Until: until, Last: forMs}
		}
		if flag(8) {
			r.State.Grants = []slotGrant{}
		}
		for i := range int(grants % 8) {
			r.State.Grants = append(r.State.Grants, slotGrant{By: gBy, Seq: gSeq + uint64(i), TS: gTS, At: gAt + int64(i),
				Urgent: flag(9 + i%2), Fixed: flag(11 + i%3)})
		}
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendClaim(nil, &r); !bytes.Equal(got, want) {
			t.Fatalf("appendClaim wrote\n%s\nencoding/json writes\n%s", got, want)
		}
	})
}

// BenchmarkEncodeClaim: a claim with a snapshot of four grants, as a
// member writes one for each call: the writer and encoding/json.
//
//	go test -run '^$' -bench EncodeClaim -benchmem ./consumer/schedule
func BenchmarkEncodeClaim(b *testing.B) {
	now := time.Now()
	r := claimRecord{V: claimsVersion, App: 1400000123, By: "a1b2c3d4", Seq: 104, TS: now.UnixNano(), State: chainState{Seen: 12345, Latest: now.UnixNano()}}
	for i := range 4 {
		r.State.Grants = append(r.State.Grants, slotGrant{By: "a1b2c3d4", Seq: uint64(100 + i), TS: now.UnixNano(),
			At: now.Add(time.Duration(i) * time.Second).UnixNano()})
	}
	b.Run("append", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = appendClaim(buf[:0], &r)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
