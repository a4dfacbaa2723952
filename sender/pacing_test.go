package sender

import (
	"math"
	"testing"
)

func TestRateAdaptation(t *testing.T) {
	c, err := New(Config{AppID: 1, Admin: "a", SecretKey: "k", Endpoints: []string{"http://127.0.0.1:1"}, Rate: 10})
	if err != nil {
		t.Fatal(err)
	}
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-9 }
	steps := []struct {
		limited bool
		want    float64
	}{
		{true, 7},      // ×0.7
		{true, 4.9},    // ×0.7
		{false, 5.4},   // +5% of the ceiling
		{true, 3.78},   // ×0.7
		{true, 2.646},  // ...
		{true, 1.8522}, // ...
		{true, 1.29654},
		{true, 1}, // floor: 10% of the ceiling
		{true, 1},
	}
	for i, s := range steps {
		c.adapt(s.limited)
		if got := c.Rate(); !near(got, s.want) {
			t.Fatalf("step %d (limited %v): rate %v, want %v", i, s.limited, got, s.want)
		}
		if got := float64(c.limiter.Limit()); !near(got, s.want) {
			t.Fatalf("step %d: limiter paces at %v, rate says %v", i, got, s.want)
		}
	}
	for range 30 {
		c.adapt(false)
	}
	if got := c.Rate(); got != 10 {
		t.Errorf("after many successes: %v, want the ceiling 10", got)
	}
	c.SetRate(4)
	c.adapt(true)
	if got := c.Rate(); !near(got, 2.8) {
		t.Errorf("after SetRate(4) and a 10023: %v, want 2.8", got)
	}

	u, _ := New(Config{AppID: 1, Admin: "a", SecretKey: "k", Endpoints: []string{"http://127.0.0.1:1"}, Rate: Unlimited})
	u.adapt(true)
	if !math.IsInf(u.Rate(), 1) {
		t.Errorf("an unlimited client adapted to %v", u.Rate())
	}
}
