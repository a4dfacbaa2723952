package schedule

import (
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
		if _, err := decodeClaim(encodeClaim(r)); err == nil || len(err.Error()) > 300 {
			t.Errorf("%s: decoded (%v), want a short refusal", name, err)
		}
	}
	ok := claimRecord{By: "m1", TS: now.UnixNano(), Pause: &pauseRecord{Code: 10007, Info: "off\x1b[2J" + strings.Repeat("i", 4000), Next: now.Add(time.Second).UnixNano()}}
	got, err := decodeClaim(encodeClaim(ok))
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
