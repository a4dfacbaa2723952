package consumertest

import (
	"maps"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Requests counts the requests an in-process broker handles, by kind
// (API key).
type Requests struct {
	mu sync.Mutex
	n  map[int16]int
}

// CountRequests observes every request c's in-process broker (Fake)
// handles, without changing its answers.
func CountRequests(c *Cluster) *Requests {
	r := &Requests{n: map[int16]int{}}
	c.Fake.ControlKey(-1, func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake.KeepControl()
		r.mu.Lock()
		r.n[req.Key()]++
		r.mu.Unlock()
		return nil, nil, false // observe only
	})
	return r
}

// Snapshot returns the counts so far.
func (r *Requests) Snapshot() map[int16]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.n)
}

// Since returns the counts of each kind (by name) from before to after,
// and their total.
func Since(before, after map[int16]int) (map[string]int, int) {
	out := map[string]int{}
	total := 0
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[kmsg.NameForKey(k)] = d
			total += d
		}
	}
	return out, total
}
