package schedule

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// grantCase is one recorded sequence of the claims log: the records as
// they are written (the claims record's wire form, pinned) and the grant
// every member computes for each claim once it has applied the records up
// to it. It is an oracle for any release: a member of another version
// must compute the same grants from the same records.
type grantCase struct {
	Name     string    `json:"name"`
	PeriodNs int64     `json:"period_ns"`
	Horizon  int64     `json:"horizon_ns"`
	Records  []string  `json:"records"` // each record's value, byte for byte
	Grants   []grantAt `json:"grants"`
}

// grantAt is a claim's grant after the records up to Offset (the claim's
// own record and those before it) are applied.
type grantAt struct {
	Offset int64  `json:"offset"`
	By     string `json:"by"`
	Seq    uint64 `json:"seq"`
	At     int64  `json:"at"`
}

// grantScenarios are the sequences recorded in testdata/grants.golden.json.
func grantScenarios() []grantCase {
	const t0 = int64(1764111600000000000) // 2025-11-25T23:00:00Z
	ms := int64(time.Millisecond)
	claim := func(by string, seq uint64, ts int64) claimRecord { return claimRecord{By: by, Seq: seq, TS: t0 + ts} }
	urgent := func(by string, seq uint64, ts int64) claimRecord {
		r := claim(by, seq, ts)
		r.Urgent = true
		return r
	}
	took := func(by string, ts int64) claimRecord { return claimRecord{By: by, TS: t0 + ts, Took: true} }
	pause := claimRecord{By: "m1", TS: t0 + 700*ms, Pause: &pauseRecord{Code: 10007, Info: "no permission", Next: t0 + 5700*ms}}
	resume := claimRecord{By: "m1", TS: t0 + 900*ms, Resume: true}
	enc := func(rs ...claimRecord) []string {
		out := make([]string, len(rs))
		for i, r := range rs {
			r.State.Seen = int64(i) - 1 // the writer had read everything before
			out[i] = string(encodeClaim(r))
		}
		return out
	}
	return []grantCase{
		{Name: "idle claims leave at their own time", PeriodNs: 1000 * ms, Horizon: 300 * ms,
			Records: enc(claim("m1", 1, 0), claim("m2", 1, 2500*ms), claim("m3", 1, 5000*ms))},
		{Name: "a backlog is spaced one period apart", PeriodNs: 200 * ms, Horizon: 100 * ms,
			Records: enc(claim("m1", 1, 0), claim("m2", 1, 0), claim("m1", 2, 10*ms), claim("m3", 1, 20*ms), claim("m2", 2, 30*ms))},
		{Name: "an urgent claim goes before bulk grants past the horizon", PeriodNs: 1000 * ms, Horizon: 300 * ms,
			Records: enc(claim("m1", 1, 0), claim("m2", 1, 0), claim("m3", 1, 0), urgent("m2", 2, 100*ms), claim("m1", 2, 200*ms))},
		{Name: "a lone member's calls are fixed", PeriodNs: 500 * ms, Horizon: 100 * ms,
			Records: enc(took("m1", 0), took("m1", 600*ms), claim("m2", 1, 700*ms), took("m1", 800*ms), claim("m2", 2, 800*ms))},
		{Name: "pause and resume records grant nothing", PeriodNs: 1000 * ms, Horizon: 300 * ms,
			Records: enc(claim("m1", 1, 0), pause, resume, claim("m2", 1, 1000*ms))},
		// A record of a release before 0.9.0 (no "v") and one of a later
		// version with a field this one does not know: both apply by the
		// version-1 fields.
		{Name: "records of other versions apply by the version-1 fields", PeriodNs: 200 * ms, Horizon: 100 * ms,
			Records: append(enc(claim("m1", 1, 0)),
				fmt.Sprintf(`{"by":"m2","seq":1,"ts":%d,"state":{"seen":0}}`, t0),
				fmt.Sprintf(`{"v":2,"by":"m3","seq":1,"ts":%d,"lane":"future","state":{"seen":1}}`, t0+10*ms))},
	}
}

// computeGrants applies c's records in order and returns each claim's
// grant as of its own record.
func computeGrants(t *testing.T, c grantCase) []grantAt {
	t.Helper()
	ch := newChain(time.Duration(c.PeriodNs), time.Duration(c.Horizon), chainState{Seen: -1})
	var out []grantAt
	for off, raw := range c.Records {
		var r claimRecord
		if err := json.Unmarshal([]byte(raw), &r); err != nil {
			t.Fatalf("%s: record %d: %v", c.Name, off, err)
		}
		if !ch.apply(int64(off), r) {
			t.Fatalf("%s: record %d not applied", c.Name, off)
		}
		if r.Pause != nil || r.Resume || r.Took {
			continue
		}
		g, ok := ch.find(r.By, r.Seq)
		if !ok {
			t.Fatalf("%s: no grant for %s/%d", c.Name, r.By, r.Seq)
		}
		out = append(out, grantAt{Offset: int64(off), By: r.By, Seq: r.Seq, At: g.At})
	}
	return out
}

// TestGrantOracle pins the claims record's wire form and the grants
// computed from recorded sequences (testdata/grants.golden.json): a change
// to either is a change every member of a rolling upgrade would disagree
// on. go test -run GrantOracle -update rewrites the file (review the diff
// as a format change).
func TestGrantOracle(t *testing.T) {
	path := filepath.Join("testdata", "grants.golden.json")
	if *update {
		cases := grantScenarios()
		for i := range cases {
			cases[i].Grants = computeGrants(t, cases[i])
		}
		b, err := json.MarshalIndent(cases, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cases []grantCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatal("no recorded sequences")
	}
	for _, c := range cases {
		got := computeGrants(t, c)
		if len(got) != len(c.Grants) {
			t.Fatalf("%s: %d grants, recorded %d", c.Name, len(got), len(c.Grants))
		}
		for i := range got {
			if got[i] != c.Grants[i] {
				t.Errorf("%s: grant %d is %+v, recorded %+v", c.Name, i, got[i], c.Grants[i])
			}
		}
		// The records' wire form: decoding and encoding again gives the
		// recorded bytes, so every field this release writes is pinned.
		for i, raw := range c.Records {
			var r claimRecord
			_ = json.Unmarshal([]byte(raw), &r)
			if r.V != claimsVersion {
				continue // another version's record: applied, not written by this one
			}
			if again := encodeClaim(r); string(again) != raw {
				t.Errorf("%s: record %d encodes as %s, recorded %s", c.Name, i, again, raw)
			}
		}
		// A member that joins late starts from the last record's snapshot
		// and computes the same grants for what follows.
		if n := len(c.Records); n >= 3 {
			mid := n / 2
			full := newChain(time.Duration(c.PeriodNs), time.Duration(c.Horizon), chainState{Seen: -1})
			for off := 0; off < mid; off++ {
				var r claimRecord
				_ = json.Unmarshal([]byte(c.Records[off]), &r)
				full.apply(int64(off), r)
			}
			late := newChain(time.Duration(c.PeriodNs), time.Duration(c.Horizon), full.state())
			for off := mid; off < n; off++ {
				var r claimRecord
				_ = json.Unmarshal([]byte(c.Records[off]), &r)
				full.apply(int64(off), r)
				late.apply(int64(off), r)
			}
			if a, b := full.state(), late.state(); !bytes.Equal(encodeState(a), encodeState(b)) {
				t.Errorf("%s: a member joining at record %d computes %+v, one that read everything %+v", c.Name, mid, b, a)
			}
		}
	}
}

func encodeState(s chainState) []byte {
	b, _ := json.Marshal(s)
	return b
}
