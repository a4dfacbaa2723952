package schedule

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Pause writes an operator's hold of app to the claims log (timbroadcast
// pause): every member of the group stops calling for the app once it
// reads it, a member that starts later finds it, and it lasts until Resume
// or for d (0: until Resume). by and reason say who and why (status,
// /readyz, metrics and the members' logs show them). now is the writer's
// clock; the hold's times are the broker's.
func Pause(ctx context.Context, store ClaimsLog, app uint64, by, reason string, d time.Duration, now time.Time) error {
	if d < 0 {
		return fmt.Errorf("pause: a negative duration %v", d)
	}
	r := claimRecord{App: app, By: "pause:" + by, TS: now.UnixNano(),
		Hold: &holdRecord{By: by, Reason: reason, ForMs: d.Milliseconds()},
		// For a 0.10.0 member: a pause of the group whose prober is this
		// writer, which that release obeys up to its PAUSE_MAX.
		Pause: &pauseRecord{Info: "paused by an operator: " + reason, Next: now.Add(max(d, time.Hour)).UnixNano()},
		State: chainState{Seen: -1}}
	if d > 0 {
		r.Pause.Next = now.Add(d).UnixNano()
	}
	if _, _, err := store.append(ctx, [][]byte{encodeClaim(r)}, now); err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	return nil
}

// Resume ends an operator's hold of app (timbroadcast resume): every
// member calls for it again once it reads the record.
func Resume(ctx context.Context, store ClaimsLog, app uint64, by string, now time.Time) error {
	r := claimRecord{App: app, By: "resume:" + by, TS: now.UnixNano(), Release: true, Resume: true, State: chainState{Seen: -1}}
	if _, _, err := store.append(ctx, [][]byte{encodeClaim(r)}, now); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	return nil
}

// Current reads app's hold as the claims log has it now (a hold whose
// time is up is returned too: compare Until with the time). defaultApp is
// the app of records that name none.
func Current(ctx context.Context, store ClaimsLog, app, defaultApp uint64) (Hold, bool, error) {
	l := NewLog(LogConfig{Store: store, DefaultApp: defaultApp})
	p := newPacer(app, 1, time.Second, l, zap.NewNop(), nil)
	chains, from, end, err := l.bootstrap(ctx, map[uint64]*pacer{app: p})
	if err != nil {
		return Hold{}, false, err
	}
	c := chains[app]
	if from < end {
		recs, err := store.scan(ctx, from, end)
		if err != nil {
			return Hold{}, false, err
		}
		for _, m := range recs {
			r, err := l.decode(m)
			if err != nil || l.appOf(r) != app {
				continue
			}
			c.apply(m.offset, r, stampNanos(m.stamp))
		}
	}
	if c.Hold == nil {
		return Hold{}, false, nil
	}
	return c.Hold.public(), true, nil
}
