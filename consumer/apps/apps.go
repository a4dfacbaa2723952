// Package apps holds the apps a worker serves (several with an apps file,
// TIM_APPS_FILE; else the one app of the single-app variables), each as it
// runs (App: its Sender, call schedule, time in the apps file), and how a
// record finds its own (Set.Route).
package apps

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/call"
	"github.com/timbroadcast/timbroadcast/consumer/metrics"
	"github.com/timbroadcast/timbroadcast/consumer/schedule"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

// Sender sends one encoded message body, retrying as it sees fit; a
// failure is a *sender.Error. *sender.Client implements it.
type Sender interface {
	SendBody(ctx context.Context, body []byte) (*sender.Response, error)
}

// SlotSender is a Sender that can take a pacing slot first and decide what
// to send once it has it (merge mode). *sender.Client implements it.
type SlotSender interface {
	Sender
	Reserve(ctx context.Context) error
	SendBodyReserved(ctx context.Context, body []byte) (*sender.Response, error)
}

// Spec is one app (SDKAppID) as configured: several apps in one
// deployment (TIM_APPS_FILE), each its own Sender (key, region, standby),
// rate, call schedule and pause.
type Spec struct {
	// Name is the app's name in the apps file ([a-z0-9-], at most 32): the
	// metrics' app label, the logs' and receipts' and dead letters' app.
	Name string
	// SDKAppID is the app's id.
	SDKAppID uint64
	// Sender calls the app's API (*sender.Client).
	Sender Sender
	// Rate is the app's calls a second for all replicas together (as
	// the worker's AppRate for one app).
	Rate float64
	// Topics are the source topics whose records belong to this app alone.
	Topics []string
}

// Paced reports whether the app's calls follow a rate of the schedule.
func (s Spec) Paced() bool { return s.Rate > 0 && !math.IsInf(s.Rate, 1) }

// App is an app as the worker runs it. Spec stays as the app was first
// served (its Name labels metrics and logs, streams read it unlocked);
// what the apps file changes later is current: the Sender its calls use
// (Current), and RateNow.
type App struct {
	Spec
	// Key is the app in the delivered log's keys (its SDKAppID; the
	// worker's App for the one app without an apps file).
	Key string
	// Label is the metrics' app label (Name, or "default").
	Label string
	// Sched is the app's call schedule: its pause gate and slots.
	Sched *schedule.Schedule
	// RateNow is the rate in force (under the Set's lock: Set.Update).
	RateNow float64

	current atomic.Pointer[Sender]
	// served is the app's time in the apps file (nil without one).
	served atomic.Pointer[served]

	// waiting is, per stream of the app, the timestamp of the oldest
	// record it holds without a final outcome: their minimum is the app's
	// timbroadcast_app_oldest_waiting_timestamp_seconds.
	waitMu  sync.Mutex
	waiting map[any]time.Time
}

// New returns the app of spec, its delivered-log key key; its Sched is
// set by the caller.
func New(spec Spec, key string) *App {
	a := &App{Spec: spec, Key: key, Label: spec.Name, RateNow: spec.Rate}
	if a.Label == "" {
		a.Label = "default"
	}
	return a
}

// DeliveredKey is the app's key in the delivered log ("" for nil: the
// records of no app, which it never holds).
func (a *App) DeliveredKey() string {
	if a == nil {
		return ""
	}
	return a.Key
}

// Current is the Sender the app's next call uses.
func (a *App) Current() Sender {
	if s := a.current.Load(); s != nil {
		return *s
	}
	return a.Sender
}

// SetSender makes s the Sender of the app's next calls.
func (a *App) SetSender(s Sender) { a.current.Store(&s) }

// SetWaiting records the timestamp of stream's oldest record without an
// outcome (zero: none) and shows the app's oldest in m (with an apps
// file; label is then the app's name, "" without).
func (a *App) SetWaiting(m *metrics.Metrics, label string, stream any, at time.Time) {
	if a == nil || label == "" {
		return
	}
	a.waitMu.Lock()
	defer a.waitMu.Unlock()
	if at.IsZero() {
		delete(a.waiting, stream)
	} else {
		if a.waiting == nil {
			a.waiting = map[any]time.Time{}
		}
		a.waiting[stream] = at
	}
	var oldest time.Time
	for _, t := range a.waiting {
		if oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	m.SetAppOldestWaiting(label, oldest)
}

// served is an app's time in the apps file: ctx ends when the file stops
// naming it.
type served struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// Serve starts (or starts again) the app's time in the apps file.
func (a *App) Serve() {
	ctx, cancel := context.WithCancel(context.Background())
	a.served.Store(&served{ctx: ctx, cancel: cancel})
}

// Remove ends the app's time in the apps file.
func (a *App) Remove() {
	if st := a.served.Load(); st != nil {
		st.cancel()
	}
}

// Removed reports whether the apps file no longer names a (nil: never).
func (a *App) Removed() bool {
	if a == nil {
		return false
	}
	st := a.served.Load()
	return st != nil && st.ctx.Err() != nil
}

// WhileServed returns ctx, ended also when the apps file stops naming a
// (Set.Update).
func (a *App) WhileServed(ctx context.Context) (context.Context, context.CancelFunc) {
	if a == nil {
		return ctx, func() {}
	}
	st := a.served.Load()
	if st == nil {
		return ctx, func() {}
	}
	c, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(st.ctx, cancel)
	return c, func() {
		stop()
		cancel()
	}
}

// Set is the apps a worker serves and how a record finds its own
// (Route). Without an apps file it holds one app (Single), which every
// record is for.
type Set struct {
	// Single is the one app without an apps file; nil with one. It is set
	// before the worker runs.
	Single *App
	// Reload, if set (before the worker runs), reads the apps file again
	// and makes the worker serve what it names.
	Reload func() error

	mu      sync.RWMutex
	list    []*App
	byName  map[string]*App
	byID    map[uint64]*App
	byTopic map[string]*App
	def     *App
	// gone are the apps the apps file no longer names, by SDKAppID: one
	// named again is the same app (its chain in the claims log).
	gone map[uint64]*App
	// reloadMu makes one reload at a time, reloaded is when the last one
	// ended.
	reloadMu sync.Mutex
	reloaded time.Time
}

// NewSet returns an empty set.
func NewSet() *Set {
	return &Set{byName: map[string]*App{}, byID: map[uint64]*App{}, byTopic: map[string]*App{}, gone: map[uint64]*App{}}
}

// Add adds a to the set.
func (s *Set) Add(a *App) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addLocked(a)
}

func (s *Set) addLocked(a *App) {
	s.list = append(s.list, a)
	if a.Name != "" {
		s.byName[a.Name] = a
	}
	s.byID[a.SDKAppID] = a
	for _, t := range a.Topics {
		s.byTopic[t] = a
	}
}

// SetDefault makes the app v names (a name or an SDKAppID) the default
// app; false when the set lacks it.
func (s *Set) SetDefault(v string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.def = s.lookupLocked(v)
	return s.def != nil
}

// All returns the apps.
func (s *Set) All() []*App {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.list)
}

// lookupLocked finds the app a record names: by name, or by SDKAppID.
func (s *Set) lookupLocked(v string) *App {
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
func (s *Set) lookup(v string) *App {
	s.mu.RLock()
	a := s.lookupLocked(v)
	s.mu.RUnlock()
	if a != nil || s.Reload == nil {
		return a
	}
	s.reloadMu.Lock()
	if time.Since(s.reloaded) >= reloadEvery {
		_ = s.Reload() // a file that does not read keeps the apps as they are (and says so)
		s.reloaded = time.Now()
	}
	s.reloadMu.Unlock()
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lookupLocked(v)
}

// ReloadNow reads the apps file again (Reload), one reload at a time.
func (s *Set) ReloadNow() {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	_ = s.Reload()
	s.reloaded = time.Now()
}

// Route returns the app of rec, in order: the app whose topics hold the
// record's topic (then a record naming another app is wrong_app); the app
// the mapping's output names (its field app); the app the header
// timbroadcast-app names; the default app. None of them: unknown_app.
// Names and SDKAppIDs both name an app.
func (s *Set) Route(rec *call.Record) (*App, *wire.InvalidEventError) {
	if s.Single != nil {
		return s.Single, nil
	}
	named, how := "", ""
	if rec.Ev != nil && rec.Ev.App != "" {
		named, how = rec.Ev.App, "the mapping's field app"
	} else {
		for _, h := range rec.Msg.Headers {
			if h.Key == wire.HeaderApp {
				named, how = wire.Cut(string(h.Value), wire.MaxAppValue), "the header "+wire.HeaderApp
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

// Update makes the set hold the apps of specs from now on, with def (""
// for none; it must name one of them) as the default app:
//   - an app it lacks is made by add (nil and an error: not served, the
//     error logged) and returned, to be started;
//   - an app it holds is passed to change with its new spec (the set's
//     lock held);
//   - an app no longer named is removed (Remove): routed no record more;
//     named again later, it is the same app, served again.
func (s *Set) Update(specs []Spec, def string, add func(Spec) (*App, error), change func(*App, Spec), log *zap.Logger) []*App {
	ids := map[uint64]bool{}
	for _, spec := range specs {
		ids[spec.SDKAppID] = true
	}
	var started []*App
	s.mu.Lock()
	defer s.mu.Unlock()
	before := s.byID
	for _, a := range s.list {
		if !ids[a.SDKAppID] {
			log.Warn("app removed from the apps file: its records are dead-lettered unknown_app from now on",
				zap.String("app", a.Name), zap.Uint64("sdkappid", a.SDKAppID))
			a.Remove()
			s.gone[a.SDKAppID] = a
		}
	}
	s.list, s.byName, s.byID, s.byTopic = nil, map[string]*App{}, map[uint64]*App{}, map[string]*App{}
	for _, spec := range specs {
		a := before[spec.SDKAppID]
		if g := s.gone[spec.SDKAppID]; g != nil {
			delete(s.gone, spec.SDKAppID)
			g.Serve()
			a = g
			log.Info("app named again in the apps file: served again", zap.String("app", spec.Name), zap.Uint64("sdkappid", spec.SDKAppID))
		}
		if a == nil {
			na, err := add(spec)
			if err != nil {
				log.Error("an app added to the apps file cannot be served", zap.String("app", spec.Name), zap.Error(err))
				continue
			}
			a = na
			started = append(started, a)
			log.Info("serving an app added to the apps file", zap.String("app", spec.Name), zap.Uint64("sdkappid", spec.SDKAppID),
				zap.Float64("rate", spec.Rate))
		} else {
			change(a, spec)
		}
		s.addLocked(a)
		if spec.Name != a.Name {
			s.byName[spec.Name] = a // renamed: both names route to it
		}
	}
	s.def = nil
	if def != "" {
		s.def = s.lookupLocked(def)
	}
	return started
}
