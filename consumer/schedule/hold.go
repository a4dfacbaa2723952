package schedule

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Operator writes and reads an app's hold in the claims log: the
// operators' stop button (timbroadcast pause, resume, status).
type Operator struct {
	// Store is the claims log (NewKafkaLog).
	Store ClaimsLog
	// App is the SDKAppID to pause or resume; DefaultApp the app of
	// records that name none (the workers' TIM_SDKAPPID; 0: App).
	App, DefaultApp uint64
	// By names who pauses or resumes it.
	By string
}

// Pause writes an operator's hold of the app to the claims log: every
// member of the group stops calling for the app once it reads it, a
// member that starts later finds it, and it lasts until Resume or for d
// (0: until Resume). By and reason say who and why (status, /readyz,
// metrics and the members' logs show them). now is the writer's clock; the
// hold's times are the broker's.
func (o Operator) Pause(ctx context.Context, reason string, d time.Duration, now time.Time) error {
	if d < 0 {
		return fmt.Errorf("pause: a negative duration %v", d)
	}
	var until int64
	if d > 0 {
		until = now.Add(d).UnixNano()
	}
	r := holdClaim("pause:"+o.By, holdRecord{By: o.By, Reason: reason, ForMs: d.Milliseconds()}, now.UnixNano(), until)
	r.App = o.App
	if err := o.write(ctx, r, now); err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	return nil
}

// Resume ends an operator's hold of the app: every member calls for it
// again once it reads the record.
func (o Operator) Resume(ctx context.Context, now time.Time) error {
	r := claimRecord{App: o.App, By: "resume:" + o.By, TS: now.UnixNano(), Release: true, Resume: true}
	if err := o.write(ctx, r, now); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	return nil
}

// write appends r with the app's chain as the log has it (the snapshot a
// member that starts next begins from, as every record carries).
func (o Operator) write(ctx context.Context, r claimRecord, now time.Time) error {
	c, err := o.chain(ctx)
	if err != nil {
		return err
	}
	r.State = c.state()
	_, _, err = o.Store.append(ctx, [][]byte{encodeClaim(r)}, now)
	return err
}

// chain is the app's chain as the claims log has it now.
func (o Operator) chain(ctx context.Context) (*chain, error) {
	def := o.DefaultApp
	if def == 0 {
		def = o.App
	}
	l := NewLog(LogConfig{Store: o.Store, DefaultApp: def})
	return l.current(ctx, o.App, newPacer(o.App, 1, time.Second, l, zap.NewNop(), nil))
}

// Current reads the app's hold as the claims log has it now (a hold whose
// time is up is returned too: compare Until with the time).
func (o Operator) Current(ctx context.Context) (Hold, bool, error) {
	c, err := o.chain(ctx)
	if err != nil {
		return Hold{}, false, err
	}
	if c.Hold == nil {
		return Hold{}, false, nil
	}
	return c.Hold.public(), true, nil
}
