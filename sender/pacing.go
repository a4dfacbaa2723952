package sender

import (
	"context"
	"fmt"
	"math"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

func limitFor(r float64) rate.Limit {
	if math.IsInf(r, 1) {
		return rate.Inf
	}
	return rate.Limit(r)
}

// SetRate changes the pacing rate (calls per second) for all later
// attempts. It is the ceiling: after 10023 answers the client paces lower
// and climbs back to it.
func (c *Client) SetRate(r float64) {
	c.rateMu.Lock()
	defer c.rateMu.Unlock()
	c.ceiling, c.current = r, r
	c.limiter.SetLimit(limitFor(r))
}

// Rate returns the effective pacing rate in calls per second.
func (c *Client) Rate() float64 {
	c.rateMu.Lock()
	defer c.rateMu.Unlock()
	return c.current
}

// adapt lowers the pacing rate after a 10023 answer (another sender on the
// app, or replicas out of step) and raises it back after successes:
// multiplicative decrease to 70%, floor 10% of the ceiling; additive
// increase of 5% of the ceiling per success.
func (c *Client) adapt(limited bool) {
	c.rateMu.Lock()
	defer c.rateMu.Unlock()
	if math.IsInf(c.ceiling, 1) {
		return
	}
	prev := c.current
	if limited {
		c.current = math.Max(c.ceiling*0.1, c.current*0.7)
	} else {
		c.current = math.Min(c.ceiling, c.current+c.ceiling*0.05)
	}
	if c.current != prev {
		c.limiter.SetLimit(limitFor(c.current))
		if limited {
			c.log.Warn("answered 10023: pacing lower", zap.Float64("rate", c.current), zap.Float64("ceiling", c.ceiling))
		}
	}
}

// Reserve waits for the next pacing slot and holds it for the caller's
// next SendBodyReserved: a caller can decide what to send once the slot has
// opened (merge mode packs whatever waited meanwhile).
//
// A context made by WithPacing paces with its own function instead of the
// client's limiter (a schedule shared by several processes).
func (c *Client) Reserve(ctx context.Context) error {
	if pace, ok := ctx.Value(pacingKey{}).(func(context.Context) error); ok {
		return pace(ctx)
	}
	if err := c.limiter.Wait(ctx); err != nil {
		if ctx.Err() == nil {
			return fmt.Errorf("%w: next pacing slot is past the deadline", context.DeadlineExceeded)
		}
		return err
	}
	return nil
}

func (c *Client) interval() time.Duration {
	l := c.limiter.Limit()
	if l == rate.Inf || l <= 0 {
		return 0
	}
	return time.Duration(float64(time.Second) / float64(l))
}

type pacingKey struct{}

// WithPacing returns a context whose sends wait for wait before every
// attempt instead of for the client's own rate limiter: the caller owns
// the pacing (the worker's call schedule, shared by all replicas). The
// client's retry backoff still applies on top.
func WithPacing(ctx context.Context, wait func(context.Context) error) context.Context {
	return context.WithValue(ctx, pacingKey{}, wait)
}
