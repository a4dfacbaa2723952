package schedule

import (
	"encoding/json"
	"fmt"
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
// A bulk claim with timestamp ts is granted
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
const claimsVersion = 1

// claimRecord is the value of one record of the claims log (JSON).
type claimRecord struct {
	// V is the writer's claimsVersion (0 from releases before 0.9.0: 1).
	V int `json:"v,omitempty"`
	// By is the member that wrote the record; Seq numbers its claims.
	By  string `json:"by"`
	Seq uint64 `json:"seq,omitempty"`
	// TS is when the claim was made (Unix ns, the writer's clock).
	TS     int64 `json:"ts"`
	Urgent bool  `json:"urgent,omitempty"`
	// Took records a lone member's call that left at TS; no claim.
	Took bool `json:"took,omitempty"`
	// Pause and Resume carry the pause gate across the group (gate.go);
	// no claim.
	Pause  *pauseRecord `json:"pause,omitempty"`
	Resume bool         `json:"resume,omitempty"`
	// State is the writer's chain as of offset State.Seen.
	State chainState `json:"state"`
}

// pauseRecord says the writer's call was answered with a pause-class error
// and that the writer probes the API next at Next (Unix ns).
type pauseRecord struct {
	Code int    `json:"code"`
	Info string `json:"info,omitempty"`
	Next int64  `json:"next"`
}

// slotGrant is one grant of the chain.
type slotGrant struct {
	By     string `json:"by"`
	Seq    uint64 `json:"seq,omitempty"`
	TS     int64  `json:"ts"` // the claim's timestamp
	At     int64  `json:"at"` // when its call leaves (Unix ns)
	Urgent bool   `json:"u,omitempty"`
	Fixed  bool   `json:"f,omitempty"` // a lone member's call: never moves
}

// chainState is the chain as of offset Seen: the recent and future
// grants in time order, and the latest claim timestamp applied.
type chainState struct {
	Seen   int64       `json:"seen"`
	Latest int64       `json:"latest,omitempty"`
	Grants []slotGrant `json:"grants,omitempty"`
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

func newChain(period, horizon time.Duration, st chainState) *chain {
	c := &chain{period: int64(period), horizon: int64(horizon), chainState: st}
	c.Grants = append([]slotGrant(nil), st.Grants...)
	return c
}

// state is a copy of the chain's state, for a record's snapshot.
func (c *chain) state() chainState {
	st := c.chainState
	st.Grants = append([]slotGrant(nil), c.Grants...)
	return st
}

// apply applies the record at offset off. It returns false for a record
// at or before Seen (already applied).
func (c *chain) apply(off int64, r claimRecord) bool {
	if off <= c.Seen {
		return false
	}
	c.Seen = off
	if r.Pause != nil || r.Resume {
		return true
	}
	c.Latest = max(c.Latest, r.TS)
	g := slotGrant{By: r.By, Seq: r.Seq, TS: r.TS, Urgent: r.Urgent, Fixed: r.Took}
	switch {
	case r.Took:
		g.At = r.TS
		i := sort.Search(len(c.Grants), func(i int) bool { return c.Grants[i].At > r.TS })
		c.insert(i, g)
	case r.Urgent:
		i := len(c.Grants)
		for j, x := range c.Grants {
			if !x.Urgent && !x.Fixed && x.At >= r.TS+c.horizon {
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

func encodeClaim(r claimRecord) []byte {
	r.V = claimsVersion
	b, err := json.Marshal(r)
	if err != nil {
		panic(err) // plain values only
	}
	return b
}

// decodeClaim reads a claims-log record, refusing one out of bounds.
func decodeClaim(b []byte) (claimRecord, error) {
	var r claimRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("claims log record: %w", err)
	}
	if err := r.check(time.Now()); err != nil {
		return claimRecord{}, fmt.Errorf("claims log record by %q ignored: %w", cutOutside(r.By, 64), err)
	}
	if r.Pause != nil {
		r.Pause.Info = cutOutside(r.Pause.Info, 512)
	}
	return r, nil
}

// The claims log is written by our members, and by anything else with
// write access to it: a record is obeyed only within bounds no member of
// ours leaves, so a record stamped a century ahead cannot hold every call
// of the group, nor a snapshot of a million grants fill a member's memory.
const (
	// claimSkewMax bounds how far from this member's clock a record's
	// times may be: clocks of members differ by milliseconds; only a
	// record out of bounds is judged differently by two members.
	claimSkewMax = time.Hour
	// claimMaxGrants bounds a snapshot: a few dozen at 50 calls/s.
	claimMaxGrants = 10000
	// claimMaxID bounds a member id (Kafka's member ids are ~60 bytes).
	claimMaxID = 512
)

// check reports why r is out of bounds, if it is.
func (r claimRecord) check(now time.Time) error {
	hi := now.Add(claimSkewMax).UnixNano()
	switch {
	case len(r.By) > claimMaxID:
		return fmt.Errorf("a member id of %d bytes", len(r.By))
	case r.TS > hi:
		return fmt.Errorf("timestamp %s, more than %v after this member's clock", time.Unix(0, r.TS).UTC().Format(time.RFC3339), claimSkewMax)
	case r.Pause != nil && (r.Pause.Next > hi || r.Pause.Next < 0):
		return fmt.Errorf("a pause until %s, more than %v from now", time.Unix(0, r.Pause.Next).UTC().Format(time.RFC3339), claimSkewMax)
	case len(r.State.Grants) > claimMaxGrants:
		return fmt.Errorf("a snapshot of %d grants (at most %d)", len(r.State.Grants), claimMaxGrants)
	case r.State.Latest > hi:
		return fmt.Errorf("a snapshot whose latest claim is more than %v ahead", claimSkewMax)
	}
	for _, g := range r.State.Grants {
		if g.At > hi || g.TS > hi || len(g.By) > claimMaxID {
			return fmt.Errorf("a snapshot grant at %s, more than %v from now", time.Unix(0, g.At).UTC().Format(time.RFC3339), claimSkewMax)
		}
	}
	return nil
}

// cutOutside bounds text from outside for logs and /readyz: at most n
// bytes, what a terminal would act on escaped.
func cutOutside(s string, n int) string { return wire.Cut(wire.Printable(s), n) }
