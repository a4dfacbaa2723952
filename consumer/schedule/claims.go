package schedule

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// The claims log: the call schedule of a group with several members. Each
// member appends a claim to one single-partition topic (SlotTopic) when a
// call of its is ready, and reads the whole log; every member computes the
// same grants from the same records, so Kafka's order on one partition is
// the only arbiter and no member asks another anything.
//
// Each app has a chain of its own, granted from its claims only. A bulk
// claim read at time ts (stamp: the broker's clock) is granted
//
//	at = max(ts, at of the previous grant + T),  T = 1/AppRate
//
// so an idle claim is granted its own timestamp (the call leaves as soon as
// its member has read its claim back: one produce and one fetch) and a
// backlog keeps every grant one period after the previous one. An urgent
// claim goes before every bulk grant that is at least horizon after its
// timestamp (the grants after it move one period later); grants nearer
// than horizon are fixed, as their members may already be packing the
// call. A lone member's call (took) is recorded as a fixed grant at the
// time it left.
//
// Each claim carries its writer's state of the chain as of an earlier
// offset (Seen): a member that joins reads the log's last record and
// starts from that state, so grants never depend on how far back a member
// has read.

// claimsVersion is the version of the claims records this release writes
// (claimRecord.V).
//
// The claims record is a contract between the members of a group, which
// may run two releases during a rolling upgrade; every member must compute
// the same grants from the same records. Readers ignore fields they do not
// know. A record without "v" is version 1 (releases before 0.9.0 wrote
// none). A writer of a later version must keep the version-1 fields true
// for a version-1 reader (by, seq, ts, urgent, took, pause, resume,
// state), so a reader that meets a version it does not know applies the
// record by those fields, and warns once that a newer release shares the
// log. A change the version-1 fields cannot carry needs two releases: the
// first reads it, the second writes it. Pinned by TestGrantOracle.
//
// Version 2 (0.11.0) adds:
//   - unsynced: the writer had no reading of the broker's clock yet (its
//     first record, or none for a minute): its ts is its own clock's, and
//     a version-2 reader takes the broker's stamp instead;
//   - app: the SDKAppID whose chain the record belongs to (a record
//     without it belongs to the reader's default app, TIM_SDKAPPID);
//   - hold and release: an operator's pause of the app (timbroadcast
//     pause / resume). A hold record also carries pause (and a release
//     record resume), so a version-1 reader treats it as a pause of the
//     group, never as a claim;
//   - state.hold: the app's hold as of the snapshot.
//
// and reads "ts" on the broker's clock: a version-2 writer stamps its
// claims with its estimate of the broker's time (clock.go), and a reader
// takes a record's time from the broker's stamp (the topic's
// message.timestamp.type=LogAppendTime), keeping the writer's "ts" only
// within claimAhead after it and claimBehind before it (stamp). A writer
// whose clock is an hour off, or a record written by hand an hour ahead,
// moves the chain by claimAhead at most. On a log the broker does not
// stamp (CreateTime), "ts" is read as version 1 reads it.
const claimsVersion = 2

// claimRecord is the value of one record of the claims log (JSON).
type claimRecord struct {
	// V is the writer's claimsVersion (0 from releases before 0.9.0: 1).
	V int `json:"v,omitempty"`
	// App is the SDKAppID of the chain the record belongs to (version 2;
	// 0: the reader's default app).
	App uint64 `json:"app,omitempty"`
	// By is the member that wrote the record; Seq numbers its claims.
	By  string `json:"by"`
	Seq uint64 `json:"seq,omitempty"`
	// TS is when the claim was made (Unix ns): the writer's estimate of
	// the broker's clock (version 1: the writer's clock).
	TS     int64 `json:"ts"`
	Urgent bool  `json:"urgent,omitempty"`
	// Took records a lone member's call that left at TS; no claim.
	Took bool `json:"took,omitempty"`
	// Pause and Resume carry the pause gate across the group (gate.go);
	// no claim.
	Pause  *pauseRecord `json:"pause,omitempty"`
	Resume bool         `json:"resume,omitempty"`
	// Unsynced says the writer had no reading of the broker's clock yet
	// (version 2): its TS is its own clock's, and a reader takes the
	// broker's stamp instead.
	Unsynced bool `json:"unsynced,omitempty"`
	// Hold is an operator's pause of the app (version 2; Pause is set
	// too, for version-1 readers); Release ends it (Resume is set too).
	Hold    *holdRecord `json:"hold,omitempty"`
	Release bool        `json:"release,omitempty"`
	// State is the writer's chain as of offset State.Seen.
	State chainState `json:"state"`

	// lean, when read, stands for State.Grants, which a claims reader
	// checked without keeping them (claimReader).
	lean grantsSeen
}

// pauseRecord says the writer's call was answered with a pause-class error
// and that the writer probes the API next at Next (Unix ns).
type pauseRecord struct {
	Code int    `json:"code"`
	Info string `json:"info,omitempty"`
	Next int64  `json:"next"`
}

// holdRecord is an operator's pause of an app: no member calls for it
// until a release, or until its time is up.
type holdRecord struct {
	// By and Reason say who paused the app and why.
	By     string `json:"by"`
	Reason string `json:"reason,omitempty"`
	// ForMs is how long the hold lasts from the record's time (ms; 0:
	// until a release).
	ForMs int64 `json:"for_ms,omitempty"`
	// Since and Until (Unix ns on the broker's clock), when set, are the
	// hold's own: a member that renews a hold (holdRenew) keeps them.
	Since int64 `json:"since,omitempty"`
	Until int64 `json:"until,omitempty"`
}

// slotGrant is one grant of the chain.
type slotGrant struct {
	By     string `json:"by"`
	Seq    uint64 `json:"seq,omitempty"`
	TS     int64  `json:"ts"` // the claim's time, as applied (stamp)
	At     int64  `json:"at"` // when its call leaves (Unix ns)
	Urgent bool   `json:"u,omitempty"`
	Fixed  bool   `json:"f,omitempty"` // a lone member's call: never moves
}

// chainState is the chain as of offset Seen: the recent and future
// grants in time order, the latest claim time applied, and the app's
// hold.
type chainState struct {
	Seen   int64       `json:"seen"`
	Latest int64       `json:"latest,omitempty"`
	Grants []slotGrant `json:"grants,omitempty"`
	Hold   *holdState  `json:"hold,omitempty"`
}

// holdState is an app's hold as the chain keeps it (times in Unix ns on
// the broker's clock; Until 0: until a release).
type holdState struct {
	By     string `json:"by"`
	Reason string `json:"reason,omitempty"`
	Since  int64  `json:"since"`
	Until  int64  `json:"until,omitempty"`
	// Last is the time of the latest record that set it (renewals).
	Last int64 `json:"last"`
}

// chain computes grants from the claims log, the same in every member.
type chain struct {
	period, horizon int64 // ns
	chainState
}

// chainKeep is how long a grant is kept after the latest claim (plus the
// horizon): long enough for a claim stamped by a clock a little behind,
// short enough to keep every record's snapshot small (about fifteen
// grants at 50 calls/s). The last grant is always kept.
const chainKeep = 250 * time.Millisecond

// claimBehind is how far before the broker's stamp a record's own time is
// kept: a claim waits in its writer's queue (a slow produce, retries) at
// most this long; an earlier time is read as claimBehind before the stamp.
// A time before the stamp moves no other member's grant.
const claimBehind = 10 * time.Second

// snapshotAhead bounds how many periods after its record's stamp a
// snapshot's grants may lie: the claims outstanding in a group (two per
// member at most). Grants beyond it are not taken from a snapshot.
const snapshotAhead = 128

func newChain(period, horizon time.Duration, st chainState) *chain {
	c := &chain{period: int64(period), horizon: int64(horizon), chainState: st}
	c.Grants = append([]slotGrant(nil), st.Grants...)
	if st.Hold != nil {
		h := *st.Hold
		c.Hold = &h
	}
	return c
}

// fromSnapshot is the chain of a snapshot read from a record the broker
// stamped at stamp (Unix ns; 0: not stamped): grants and times after what
// any member of ours writes are left out, so a record forged with grants
// an hour ahead holds nobody.
func fromSnapshot(period, horizon time.Duration, st chainState, stamp int64) *chain {
	if stamp > 0 {
		limit := stamp + snapshotAhead*int64(period)
		kept := st.Grants[:0:0]
		for _, g := range st.Grants {
			if g.At <= limit && g.TS <= stamp+int64(claimAhead(period)) {
				kept = append(kept, g)
			}
		}
		st.Grants = kept
		st.Latest = min(st.Latest, stamp+int64(claimAhead(period)))
		if st.Hold != nil && st.Hold.Since > stamp+int64(claimAhead(period)) {
			st.Hold = nil
		}
	}
	return newChain(period, horizon, st)
}

// claimAhead is how far after the broker's stamp a record's own time is
// kept: a writer's estimate of the broker's clock errs by a fraction of a
// round trip, and more costs the chain at most this, a quarter period
// (25 ms at most).
func claimAhead(period time.Duration) time.Duration {
	return max(min(period/4, 25*time.Millisecond), time.Millisecond)
}

// stamp is the time the chain reads for r, stamped by the broker at
// stamp (Unix ns; 0: not stamped, a CreateTime log): the writer's own
// time, kept within claimBehind before the stamp and claimAhead after it;
// the stamp itself when the writer had no reading of the broker's clock.
//
// A lone member's call (took) is recorded after it left, so its stamp is
// later than the call: its own time is kept within claimAhead before the
// stamp too. A call placed later than it was costs the next one a little
// of the rate; placed earlier (a clock behind, or a clock that stepped
// back since its last reading) it would let the next call come too near.
func (c *chain) stamp(r claimRecord, stamp int64) int64 {
	if stamp <= 0 {
		return r.TS
	}
	if r.Unsynced {
		return stamp
	}
	ahead := int64(claimAhead(time.Duration(c.period)))
	behind := int64(claimBehind)
	if r.Took {
		behind = ahead
	}
	return min(max(r.TS, stamp-behind), stamp+ahead)
}

// state is a copy of the chain's state, for a record's snapshot.
func (c *chain) state() chainState {
	st := c.chainState
	st.Grants = append([]slotGrant(nil), c.Grants...)
	if c.Hold != nil {
		h := *c.Hold
		st.Hold = &h
	}
	return st
}

// apply applies the record at offset off, stamped by the broker at stamp
// (Unix ns; 0: not stamped). It returns false for a record at or before
// Seen (already applied).
func (c *chain) apply(off int64, r claimRecord, stamp int64) bool {
	if off <= c.Seen {
		return false
	}
	c.Seen = off
	ts := c.stamp(r, stamp)
	switch {
	case r.Hold != nil:
		c.applyHold(r, ts)
		return true
	case r.Release:
		c.Hold = nil
		return true
	case r.Pause != nil || r.Resume:
		return true
	}
	c.Latest = max(c.Latest, ts)
	g := slotGrant{By: r.By, Seq: r.Seq, TS: ts, Urgent: r.Urgent, Fixed: r.Took}
	switch {
	case r.Took:
		g.At = ts
		i := sort.Search(len(c.Grants), func(i int) bool { return c.Grants[i].At > ts })
		c.insert(i, g)
	case r.Urgent:
		i := len(c.Grants)
		for j, x := range c.Grants {
			if !x.Urgent && !x.Fixed && x.At >= ts+c.horizon {
				i = j
				break
			}
		}
		c.insert(i, g)
	default:
		c.insert(len(c.Grants), g)
	}
	c.prune()
	return true
}

// applyHold applies an operator's hold read at ts (the record's time): a
// new hold, or a renewal that keeps its Since and Until.
func (c *chain) applyHold(r claimRecord, ts int64) {
	h := &holdState{By: r.Hold.By, Reason: r.Hold.Reason, Since: ts, Last: ts}
	if r.Hold.ForMs > 0 {
		h.Until = ts + min(r.Hold.ForMs, holdMaxMs)*int64(time.Millisecond)
	}
	if r.Hold.Since > 0 && r.Hold.Since <= ts {
		h.Since = r.Hold.Since // a renewal: the hold began then
	}
	if r.Hold.Until > 0 && r.Hold.ForMs == 0 {
		h.Until = min(r.Hold.Until, ts+holdMaxMs*int64(time.Millisecond))
	}
	c.Hold = h
}

// holdMaxMs bounds a hold's length (a year): longer is until a release.
const holdMaxMs = int64(365 * 24 * time.Hour / time.Millisecond)

// insert places g at i and moves the grants from i on to keep a period
// between neighbours (a fixed grant keeps its time).
func (c *chain) insert(i int, g slotGrant) {
	c.Grants = append(c.Grants, slotGrant{})
	copy(c.Grants[i+1:], c.Grants[i:])
	c.Grants[i] = g
	for j := i; j < len(c.Grants); j++ {
		x := &c.Grants[j]
		if x.Fixed {
			continue
		}
		x.At = x.TS
		if j > 0 {
			x.At = max(x.At, c.Grants[j-1].At+c.period)
		}
	}
}

// prune forgets grants long past (the last one stays: the next claim is
// placed after it), and a lone member's calls followed by another of its
// calls (only the latest bounds what comes next). Every member prunes
// alike, so grants stay the same everywhere.
func (c *chain) prune() {
	cut := c.Latest - int64(chainKeep) - c.horizon
	kept := c.Grants[:0]
	for i, g := range c.Grants {
		last := i == len(c.Grants)-1
		if !last && (g.At < cut || g.Fixed && c.Grants[i+1].Fixed) {
			continue
		}
		kept = append(kept, g)
	}
	c.Grants = kept
}

// end is when the next bulk grant could leave at the earliest.
func (c *chain) end() int64 {
	if len(c.Grants) == 0 {
		return 0
	}
	return c.Grants[len(c.Grants)-1].At + c.period
}

// find returns member by's grant for claim seq.
func (c *chain) find(by string, seq uint64) (slotGrant, bool) {
	for _, g := range c.Grants {
		if g.By == by && g.Seq == seq && !g.Fixed {
			return g, true
		}
	}
	return slotGrant{}, false
}

// encodeClaim is the stored value of r, written as this release's
// version.
func encodeClaim(r claimRecord) []byte {
	r.V = claimsVersion
	return appendClaim(make([]byte, 0, 256), &r)
}

// decodeClaim reads a claims-log record, refusing one out of bounds. ref
// is the time its bounds are judged from: the broker's stamp when the
// broker stamped it, else this member's clock.
func decodeClaim(b []byte, ref time.Time, stamped bool) (claimRecord, error) {
	return decodeClaimWith(&fastParser{b: b}, ref, stamped)
}

// claimReader decodes the records the claims log's reader applies to the
// chains: as decodeClaim (the same records refused), with its member ids
// interned, and a snapshot's grants checked but not kept (a record
// applies by its claim; a snapshot is read at start, by decodeClaim).
// Every member reads every record of every app, so what it allocates per
// record counts. One goroutine uses it.
type claimReader struct{ names names }

func (c *claimReader) decode(b []byte, ref time.Time, stamped bool) (claimRecord, error) {
	if c.names == nil {
		c.names = names{}
	}
	return decodeClaimWith(&fastParser{b: b, names: &c.names, lean: true}, ref, stamped)
}

func decodeClaimWith(p *fastParser, ref time.Time, stamped bool) (claimRecord, error) {
	b := p.b
	var r claimRecord
	if !fastClaimWith(p, &r) {
		r = claimRecord{}
		if err := json.Unmarshal(b, &r); err != nil {
			return r, fmt.Errorf("claims log record: %w", err)
		}
	}
	if err := r.check(ref, stamped); err != nil {
		return claimRecord{}, fmt.Errorf("claims log record by %q ignored: %w", cutOutside(r.By, 64), err)
	}
	if r.Pause != nil {
		r.Pause.Info = cutOutside(r.Pause.Info, 512)
	}
	if r.Hold != nil {
		r.Hold.By = cutOutside(r.Hold.By, 128)
		r.Hold.Reason = cutOutside(r.Hold.Reason, 512)
	}
	if h := r.State.Hold; h != nil {
		h.By = cutOutside(h.By, 128)
		h.Reason = cutOutside(h.Reason, 512)
	}
	return r, nil
}

// The claims log is written by our members, and by anything else with
// write access to it: a record is obeyed only within bounds no member of
// ours leaves, so a record stamped a century ahead cannot hold every call
// of the group, nor a snapshot of a million grants fill a member's memory.
const (
	// claimSkewMax bounds how far from the reference time (the broker's
	// stamp, else this member's clock) a record's times may be; a record
	// the broker stamped has its own time bounded far closer (stamp).
	claimSkewMax = time.Hour
	// claimMaxGrants bounds a snapshot: a few dozen at 50 calls/s.
	claimMaxGrants = 10000
	// claimMaxID bounds a member id (Kafka's member ids are ~60 bytes).
	claimMaxID = 512
)

// check reports why r is out of bounds, if it is. A record the broker
// stamped (stamped) keeps its own time within bounds anyway (chain.stamp):
// only its snapshot and pause are judged here.
func (r claimRecord) check(ref time.Time, stamped bool) error {
	hi := ref.Add(claimSkewMax).UnixNano()
	switch {
	case len(r.By) > claimMaxID:
		return fmt.Errorf("a member id of %d bytes", len(r.By))
	case !stamped && r.TS > hi:
		return fmt.Errorf("timestamp %s, more than %v after this member's clock", time.Unix(0, r.TS).UTC().Format(time.RFC3339), claimSkewMax)
	case r.Pause != nil && (r.Pause.Next > hi || r.Pause.Next < 0) && r.Hold == nil:
		return fmt.Errorf("a pause until %s, more than %v from now", time.Unix(0, r.Pause.Next).UTC().Format(time.RFC3339), claimSkewMax)
	case r.Hold != nil && (r.Hold.ForMs < 0 || r.Hold.Until < 0 || r.Hold.Since < 0):
		return errors.New("a hold with a negative time")
	}
	seen := r.lean
	if !seen.read {
		seen = seenOf(r.State.Grants)
	}
	switch {
	case seen.n > claimMaxGrants:
		return fmt.Errorf("a snapshot of %d grants (at most %d)", seen.n, claimMaxGrants)
	case r.State.Latest > hi:
		return fmt.Errorf("a snapshot whose latest claim is more than %v ahead", claimSkewMax)
	case seen.maxAt > hi || seen.maxTS > hi || seen.maxBy > claimMaxID:
		return fmt.Errorf("a snapshot grant at %s, more than %v from now", time.Unix(0, seen.maxAt).UTC().Format(time.RFC3339), claimSkewMax)
	}
	return nil
}

// seenOf is what check looks at of grants.
func seenOf(grants []slotGrant) grantsSeen {
	seen := grantsSeen{read: true, maxAt: math.MinInt64, maxTS: math.MinInt64}
	for _, g := range grants {
		seen.add(g.At, g.TS, len(g.By))
	}
	return seen
}

// add counts a grant at at, claimed at ts, by a member id of by bytes.
func (s *grantsSeen) add(at, ts int64, by int) {
	s.n++
	s.maxAt, s.maxTS, s.maxBy = max(s.maxAt, at), max(s.maxTS, ts), max(s.maxBy, by)
}

// cutOutside bounds text from outside for logs and /readyz: at most n
// bytes, what a terminal would act on escaped.
func cutOutside(s string, n int) string { return wire.Cut(wire.Printable(s), n) }
