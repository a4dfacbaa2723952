// Package sleep waits a while unless a context ends first: the backoffs
// and waits of the worker, its offsets and its call schedule.
package sleep

import (
	"context"
	"time"
)

// For waits d, or until ctx ends (then its error).
func For(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err() // no timer for a time already past
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
