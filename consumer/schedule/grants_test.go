package schedule

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
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
	Name     string `json:"name"`
	PeriodNs int64  `json:"period_ns"`
	Horizon  int64  `json:"horizon_ns"`
	// DefaultApp is the app of records that name none.
	DefaultApp uint64   `json:"default_app,omitempty"`
	Records    []string `json:"records"` // each record's value, byte for byte
	// Stamps are the broker's time of each record (Unix ns, a whole
	// millisecond as Kafka stamps; none or 0: a log the broker does not
	// stamp, CreateTime).
	Stamps []int64   `json:"stamps,omitempty"`
	Grants []grantAt `json:"grants"`
	Holds  []holdAt  `json:"holds,omitempty"`
}

// holdAt is an app's hold after the record at Offset is applied.
type holdAt struct {
	Offset int64      `json:"offset"`
	App    uint64     `json:"app"`
	Hold   *holdState `json:"hold"`
}

// grantAt is a claim's grant after the records up to Offset (the claim's
// own record and those before it) are applied.
type grantAt struct {
	Offset int64  `json:"offset"`
	App    uint64 `json:"app,omitempty"`
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
	cases := []grantCase{
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
				fmt.Sprintf(`{"v":3,"by":"m3","seq":1,"ts":%d,"lane":"future","state":{"seen":1}}`, t0+10*ms))},
	}
	// Version 2: the broker stamps every record; a record's own time is
	// kept within claimAhead after its stamp and claimBehind before it.
	hour := int64(time.Hour)
	v2 := func(app uint64, rs ...claimRecord) []claimRecord {
		for i := range rs {
			rs[i].App = app
		}
		return rs
	}
	unsynced := func(r claimRecord) claimRecord {
		r.Unsynced = true
		return r
	}
	stamps := func(ts ...int64) []int64 {
		out := make([]int64, len(ts))
		for i, x := range ts {
			out[i] = t0 + x
		}
		return out
	}
	hold := claimRecord{App: 7, By: "pause:alice@ops", TS: t0 + 300*ms,
		Hold:  &holdRecord{By: "alice@ops", Reason: "wrong text", ForMs: 60000},
		Pause: &pauseRecord{Info: "paused by an operator: wrong text", Next: t0 + 60300*ms}}
	release := claimRecord{App: 7, By: "resume:alice@ops", TS: t0 + 2000*ms, Release: true, Resume: true}
	cases = append(cases,
		grantCase{Name: "a claim stamped an hour ahead moves the chain by claimAhead at most", PeriodNs: 200 * ms, Horizon: 100 * ms,
			DefaultApp: 7, Records: enc(v2(7, claim("m1", 1, 0), claim("x", 1, hour), claim("m2", 1, 10*ms), claim("m1", 2, 20*ms))...),
			Stamps: stamps(1*ms, 5*ms, 11*ms, 21*ms)},
		grantCase{Name: "a claim stamped an hour behind is read claimBehind before its stamp", PeriodNs: 200 * ms, Horizon: 100 * ms,
			DefaultApp: 7, Records: enc(v2(7, claim("m1", 1, 0), claim("x", 1, -hour), claim("m2", 1, 1000*ms))...),
			Stamps: stamps(1*ms, 500*ms, 1001*ms)},
		grantCase{Name: "writers an hour ahead and behind: the grants follow the broker's stamps", PeriodNs: 200 * ms, Horizon: 100 * ms,
			DefaultApp: 7, Records: enc(v2(7, claim("ahead", 1, hour), claim("behind", 1, -hour), claim("ahead", 2, hour+5*ms),
				claim("behind", 2, -hour+6*ms), took("ahead", hour+900*ms), claim("behind", 3, -hour+901*ms))...),
			Stamps: stamps(1*ms, 2*ms, 6*ms, 7*ms, 902*ms, 903*ms)},
		grantCase{Name: "an operator's hold and its release grant nothing", PeriodNs: 1000 * ms, Horizon: 300 * ms,
			DefaultApp: 7, Records: enc(v2(7, claim("m1", 1, 0), hold, claim("m2", 1, 1000*ms), release, claim("m2", 2, 2500*ms))...),
			Stamps: stamps(1*ms, 301*ms, 1001*ms, 2001*ms, 2501*ms)},
		grantCase{Name: "an unsynced writer's time is its stamp; a lone member's call is never read earlier than claimAhead before its stamp",
			PeriodNs: 200 * ms, Horizon: 100 * ms, DefaultApp: 7,
			Records: enc(v2(7, unsynced(claim("new", 1, hour)), took("alone", -hour), claim("m2", 1, 510*ms), unsynced(took("alone", -hour)),
				claim("m3", 1, 1000*ms))...),
			Stamps: stamps(1*ms, 500*ms, 510*ms, 900*ms, 1000*ms)},
		grantCase{Name: "two apps' chains are granted apart, each at its own rate", PeriodNs: 200 * ms, Horizon: 100 * ms,
			DefaultApp: 7, Records: enc(v2(7, claim("m1", 1, 0))[0], v2(8, claim("m2", 1, 0))[0], v2(7, claim("m2", 2, 1*ms))[0],
				v2(8, claim("m1", 2, 1*ms))[0], claim("old", 1, 2*ms), v2(8, claim("m3", 1, 3*ms))[0]),
			Stamps: stamps(1*ms, 1*ms, 2*ms, 2*ms, 3*ms, 4*ms)},
	)
	return cases
}

// oracleChains are the chains of a grant case, one per app.
type oracleChains struct {
	c      grantCase
	chains map[uint64]*chain
}

func newOracle(c grantCase) *oracleChains { return &oracleChains{c: c, chains: map[uint64]*chain{}} }

func (o *oracleChains) chain(app uint64) *chain {
	if app == 0 {
		app = o.c.DefaultApp
	}
	ch := o.chains[app]
	if ch == nil {
		ch = newChain(time.Duration(o.c.PeriodNs), time.Duration(o.c.Horizon), chainState{Seen: -1})
		o.chains[app] = ch
	}
	return ch
}

func (o *oracleChains) stamp(off int) int64 {
	if off < len(o.c.Stamps) {
		return o.c.Stamps[off]
	}
	return 0
}

// record decodes the case's record at off.
func (o *oracleChains) record(t *testing.T, off int) claimRecord {
	t.Helper()
	ref, stamped := time.Unix(0, o.stamp(off)), o.stamp(off) > 0
	if !stamped {
		ref = time.Unix(0, 1764111600000000000)
	}
	r, err := decodeClaim([]byte(o.c.Records[off]), ref, stamped)
	if err != nil {
		t.Fatalf("%s: record %d: %v", o.c.Name, off, err)
	}
	return r
}

// computeGrants applies c's records in order and returns each claim's
// grant as of its own record, and each app's hold after a hold or
// release record.
func computeGrants(t *testing.T, c grantCase) ([]grantAt, []holdAt) {
	t.Helper()
	o := newOracle(c)
	var out []grantAt
	var holds []holdAt
	for off := range c.Records {
		r := o.record(t, off)
		ch := o.chain(r.App)
		if !ch.apply(int64(off), r, o.stamp(off)) {
			t.Fatalf("%s: record %d not applied", c.Name, off)
		}
		if r.Hold != nil || r.Release {
			app := r.App
			if app == 0 {
				app = c.DefaultApp
			}
			holds = append(holds, holdAt{Offset: int64(off), App: app, Hold: ch.state().Hold})
		}
		if r.Pause != nil || r.Resume || r.Took {
			continue
		}
		g, ok := ch.find(r.By, r.Seq)
		if !ok {
			t.Fatalf("%s: no grant for %s/%d", c.Name, r.By, r.Seq)
		}
		out = append(out, grantAt{Offset: int64(off), App: r.App, By: r.By, Seq: r.Seq, At: g.At})
	}
	return out, holds
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
			cases[i].Grants, cases[i].Holds = computeGrants(t, cases[i])
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
		got, holds := computeGrants(t, c)
		if !reflect.DeepEqual(holds, c.Holds) {
			t.Errorf("%s: holds %+v, recorded %+v", c.Name, holds, c.Holds)
		}
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
			full := newOracle(c)
			for off := 0; off < mid; off++ {
				r := full.record(t, off)
				full.chain(r.App).apply(int64(off), r, full.stamp(off))
			}
			late := newOracle(c)
			for app, ch := range full.chains {
				late.chains[app] = newChain(time.Duration(c.PeriodNs), time.Duration(c.Horizon), ch.state())
			}
			for off := mid; off < n; off++ {
				r := full.record(t, off)
				full.chain(r.App).apply(int64(off), r, full.stamp(off))
				late.chain(r.App).apply(int64(off), r, full.stamp(off))
			}
			for app, ch := range full.chains {
				if a, b := ch.state(), late.chain(app).state(); !bytes.Equal(encodeState(a), encodeState(b)) {
					t.Errorf("%s: app %d: a member joining at record %d computes %+v, one that read everything %+v", c.Name, app, mid, b, a)
				}
			}
		}
	}
}

func encodeState(s chainState) []byte {
	b, _ := json.Marshal(s)
	return b
}
