package schedule

import (
	"context"
	"time"
)

// sleepCtx waits d or until ctx ends (the claims log's retry backoff:
// real time, whatever the slots' clock).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
