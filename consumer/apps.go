package consumer

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/timbroadcast/timbroadcast/consumer/call"
	"github.com/timbroadcast/timbroadcast/consumer/metrics"
	"github.com/timbroadcast/timbroadcast/consumer/schedule"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// App is one app (SDKAppID) the worker delivers to: several apps in one
// deployment (TIM_APPS_FILE), each its own Sender (key, region, standby),
// rate, call schedule and pause.
type App struct {
	// Name is the app's name in the apps file ([a-z0-9-], at most 32): the
	// metrics' app label, the logs' and receipts' and dead letters' app.
	Name string
	// SDKAppID is the app's id.
	SDKAppID uint64
	// Sender calls the app's API (*sender.Client).
	Sender Sender
	// Rate is the app's calls a second for all replicas together (as
	// Config.AppRate for one app).
	Rate float64
	// Topics are the source topics whose records belong to this app alone.
	Topics []string
}

// app is an App as the worker runs it.
type app struct {
	App
	// key is the app in the delivered log's keys (its SDKAppID; Config.App
	// for the one app without an apps file).
	key   string
	sched *schedule.Schedule
	// label is the metrics' app label (Name, or "default").
	label string
	// App stays as the app was first served (its Name labels metrics and
	// logs, streams read it unlocked); what the apps file changes later is
	// current, the Sender its calls use, and rate (under appSet.mu).
	// served is its time in the apps file (nil without one).
	current atomic.Pointer[Sender]
	rate    float64
	served  atomic.Pointer[served]

	// waiting is, per stream of the app, the timestamp of the oldest
	// record it holds without a final outcome: their minimum is the app's
	// timbroadcast_app_oldest_waiting_timestamp_seconds.
	waitMu  sync.Mutex
	waiting map[*stream]time.Time
}

// sender is the Sender the app's next call uses.
func (a *app) sender() Sender {
	if s := a.current.Load(); s != nil {
		return *s
	}
	return a.Sender
}

// setWaiting records the timestamp of s's oldest record without an
// outcome (zero: none) and shows the app's oldest in m (with an apps
// file; metricsLabel is then the app's name).
func (a *app) setWaiting(m *metrics.Metrics, metricsLabel string, s *stream, at time.Time) {
	if a == nil || metricsLabel == "" {
		return
	}
	a.waitMu.Lock()
	defer a.waitMu.Unlock()
	if at.IsZero() {
		delete(a.waiting, s)
	} else {
		if a.waiting == nil {
			a.waiting = map[*stream]time.Time{}
		}
		a.waiting[s] = at
	}
	var oldest time.Time
	for _, t := range a.waiting {
		if oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	m.SetAppOldestWaiting(metricsLabel, oldest)
}

// appSet is the apps a worker serves and how a record finds its own
// (route). Without an apps file it holds one app, which every record is
// for.
type appSet struct {
	single *app // the one app without an apps file; nil with one

	mu      sync.RWMutex
	list    []*app
	byName  map[string]*app
	byID    map[uint64]*app
	byTopic map[string]*app
	def     *app
	// gone are the apps the apps file no longer names, by SDKAppID: one
	// named again is the same app (its chain in the claims log).
	gone map[uint64]*app
	// reload reads the apps file again and makes the worker serve what it
	// names (Worker.reloadApps); reloadMu makes one reload at a time,
	// reloaded is when the last one ended.
	reload   func() error
	reloadMu sync.Mutex
	reloaded time.Time
}

func newAppSet() *appSet {
	return &appSet{byName: map[string]*app{}, byID: map[uint64]*app{}, byTopic: map[string]*app{}, gone: map[uint64]*app{}}
}

// addLocked adds a to the set.
func (s *appSet) addLocked(a *app) {
	s.list = append(s.list, a)
	if a.Name != "" {
		s.byName[a.Name] = a
	}
	s.byID[a.SDKAppID] = a
	for _, t := range a.Topics {
		s.byTopic[t] = a
	}
}

// all returns the apps.
func (s *appSet) all() []*app {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.list)
}

// lookupLocked finds the app a record names: by name, or by SDKAppID.
func (s *appSet) lookupLocked(v string) *app {
	if a := s.byName[v]; a != nil {
		return a
	}
	if id, err := strconv.ParseUint(v, 10, 64); err == nil {
		return s.byID[id]
	}
	return nil
}

// reloadEvery bounds how often a record naming an unknown app makes the
// worker read the apps file again.
const reloadEvery = time.Second

// lookup finds the app v names; when the set lacks it, it reads the apps
// file again first (at most once a reloadEvery): the app may have just
// been added.
func (s *appSet) lookup(v string) *app {
	s.mu.RLock()
	a := s.lookupLocked(v)
	s.mu.RUnlock()
	if a != nil || s.reload == nil {
		return a
	}
	s.reloadMu.Lock()
	if time.Since(s.reloaded) >= reloadEvery {
		_ = s.reload() // a file that does not read keeps the apps as they are (and says so)
		s.reloaded = time.Now()
	}
	s.reloadMu.Unlock()
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lookupLocked(v)
}

// route returns the app of rec, in order: the app whose topics hold the
// record's topic (then a record naming another app is wrong_app); the app
// the mapping's output names (its field app); the app the header
// timbroadcast-app names; default_app. None of them: unknown_app. Names
// and SDKAppIDs both name an app.
func (s *appSet) route(rec *call.Record) (*app, *wire.InvalidEventError) {
	if s.single != nil {
		return s.single, nil
	}
	named, how := "", ""
	if rec.Ev != nil && rec.Ev.App != "" {
		named, how = rec.Ev.App, "the mapping's field app"
	} else {
		for _, h := range rec.Msg.Headers {
			if h.Key == wire.HeaderApp {
				named, how = wire.Cut(string(h.Value), maxAppValue), "the header "+wire.HeaderApp
			}
		}
	}
	s.mu.RLock()
	owner, def := s.byTopic[rec.Msg.Topic], s.def
	s.mu.RUnlock()
	if owner != nil {
		if named != "" && s.lookup(named) != owner {
			return owner, &wire.InvalidEventError{Reason: wire.ReasonWrongApp, Field: fieldOf(how),
				Msg: fmt.Sprintf("the topic %s belongs to app %s, but the record names app %q (%s): a topic of one app cannot "+
					"broadcast to another", rec.Msg.Topic, owner.Name, wire.Printable(named), how)}
		}
		return owner, nil
	}
	if named != "" {
		if a := s.lookup(named); a != nil {
			return a, nil
		}
		return nil, &wire.InvalidEventError{Reason: wire.ReasonUnknownApp, Field: fieldOf(how),
			Msg: fmt.Sprintf("the record names app %q (%s), which the apps file (TIM_APPS_FILE) does not hold", wire.Printable(named), how)}
	}
	if def != nil {
		return def, nil
	}
	return nil, &wire.InvalidEventError{Reason: wire.ReasonUnknownApp,
		Msg: "the record names no app (its topic belongs to none, and it has no mapping field app, no header " + wire.HeaderApp +
			") and the apps file (TIM_APPS_FILE) has no default_app"}
}

// fieldOf is the dead letter's field for how a record named its app.
func fieldOf(how string) string {
	if how == "the mapping's field app" {
		return "app"
	}
	return wire.HeaderApp
}

// paced reports whether the app's calls follow a rate of the schedule.
func (a App) paced() bool { return a.Rate > 0 && !math.IsInf(a.Rate, 1) }
