package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/schedule"
)

// The apps file changed live: the worker reads it again every
// Config.AppsReload (and before dead-lettering a record naming an app it
// lacks) and serves what it names (UpdateApps).

// liveApps is what the worker needs to serve an app added while it runs:
// where its schedule runs, and the partitions its schedule sees.
type liveApps struct {
	mu sync.Mutex
	// start runs an app's schedule with the others' (nil outside Run).
	start func(*app)
	// The call schedule's view of the partitions (the last generation's).
	viewSet           bool
	all, urgent, mine []schedule.Partition
	// problem is why the apps file could not be read again ("" when it
	// was), shown on /readyz while it lasts.
	problem string
	// last and lastDefault are the apps the file last gave (reloadApps):
	// a read that gives them again changes nothing.
	last        []App
	lastDefault string
}

// unchanged reports whether apps and def are what the file last gave.
func (l *liveApps) unchanged(apps []App, def string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil || def != l.lastDefault || len(apps) != len(l.last) {
		return false
	}
	for i, a := range apps {
		b := l.last[i]
		if a.Name != b.Name || a.SDKAppID != b.SDKAppID || a.Sender != b.Sender || a.Rate != b.Rate || !slices.Equal(a.Topics, b.Topics) {
			return false
		}
	}
	return true
}

// applied records the apps the file gave, once served.
func (l *liveApps) applied(apps []App, def string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last, l.lastDefault = apps, def
}

// setView records the partitions every schedule sees (a generation),
// for apps added later.
func (l *liveApps) setView(all, urgent, mine []schedule.Partition, allKnown bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if allKnown {
		l.all, l.urgent, l.viewSet = all, urgent, true
	}
	l.mine = mine
}

// UpdateApps makes the worker serve apps from now on (the apps file read
// again), with defaultApp ("" for none) as the default app:
//   - an app it lacks is served at once, its calls paced with the other
//     replicas' through the claims log;
//   - an app whose Sender or Rate changed uses them from its next call;
//   - an app no longer named is routed no record more: its records are
//     dead-lettered unknown_app, those it holds too unless their call has
//     started; named again later, it is served again.
//
// An app's Topics are the group's topics, fixed while it runs: a change
// takes effect at the next start (it is logged). Only with Config.Apps.
func (w *Worker) UpdateApps(apps []App, defaultApp string) error {
	if w.apps.single != nil {
		return errors.New("consumer: UpdateApps needs several apps (Config.Apps)")
	}
	names, ids := map[string]bool{}, map[uint64]bool{}
	for _, a := range apps {
		if a.Sender == nil {
			return fmt.Errorf("consumer: app %s needs a Sender", a.Name)
		}
		if names[a.Name] || ids[a.SDKAppID] {
			return fmt.Errorf("consumer: app %s (%d) named twice", a.Name, a.SDKAppID)
		}
		names[a.Name], ids[a.SDKAppID] = true, true
	}
	if defaultApp != "" && !slices.ContainsFunc(apps, func(a App) bool { return a.Name == defaultApp || fmt.Sprint(a.SDKAppID) == defaultApp }) {
		return &FieldError{Field: "DefaultApp", Msg: fmt.Sprintf("%q is not one of the apps", defaultApp)}
	}
	var started []*app
	s := w.apps
	s.mu.Lock()
	before := s.byID
	for _, a := range s.list {
		if !ids[a.SDKAppID] {
			w.log.Warn("app removed from the apps file: its records are dead-lettered unknown_app from now on",
				zap.String("app", a.Name), zap.Uint64("sdkappid", a.SDKAppID))
			a.remove()
			s.gone[a.SDKAppID] = a
		}
	}
	s.list, s.byName, s.byID, s.byTopic = nil, map[string]*app{}, map[uint64]*app{}, map[string]*app{}
	for _, spec := range apps {
		a := before[spec.SDKAppID]
		if g := s.gone[spec.SDKAppID]; g != nil {
			delete(s.gone, spec.SDKAppID)
			g.serve()
			a = g
			w.log.Info("app named again in the apps file: served again", zap.String("app", spec.Name), zap.Uint64("sdkappid", spec.SDKAppID))
		}
		if a == nil {
			na, err := w.newApp(spec)
			if err != nil {
				w.log.Error("an app added to the apps file cannot be served", zap.String("app", spec.Name), zap.Error(err))
				continue
			}
			a = na
			started = append(started, a)
			w.log.Info("serving an app added to the apps file", zap.String("app", spec.Name), zap.Uint64("sdkappid", spec.SDKAppID),
				zap.Float64("rate", spec.Rate))
		} else {
			w.changeApp(a, spec)
		}
		s.addLocked(a)
		if spec.Name != a.Name {
			s.byName[spec.Name] = a // renamed: both names route to it
		}
	}
	s.def = nil
	if defaultApp != "" {
		s.def = s.lookupLocked(defaultApp)
	}
	s.mu.Unlock()
	w.live.mu.Lock()
	defer w.live.mu.Unlock()
	for _, a := range started {
		if w.live.viewSet && a.sched.Paced() {
			a.sched.SetView(w.live.all, w.live.urgent)
		}
		a.sched.SetMine(w.live.mine)
		if w.live.start != nil {
			w.live.start(a)
		}
	}
	return nil
}

// changeApp applies what the apps file changed of a served app (apps.mu
// held): its Sender and rate from its next call. Its topics and name
// stay as first served until a restart (the new name routes to it too).
func (w *Worker) changeApp(a *app, spec App) {
	log := w.log.With(zap.String("app", spec.Name), zap.Uint64("sdkappid", spec.SDKAppID))
	if spec.Sender != a.sender() {
		sd := spec.Sender
		a.current.Store(&sd)
		log.Info("the app's settings changed in the apps file (key file, admin, region or endpoint): its next call uses them")
	}
	switch {
	case spec.Rate == a.rate:
	case a.sched.Paced() && spec.paced():
		a.sched.SetRate(spec.Rate)
		log.Info("the app's rate changed in the apps file: its next call follows it", zap.Float64("rate", spec.Rate),
			zap.Float64("was", a.rate))
		a.rate = spec.Rate
	default:
		log.Warn("the app's rate changed between none and some in the apps file: takes effect at the next start",
			zap.Float64("rate", spec.Rate), zap.Float64("was", a.rate))
	}
	if !slices.Equal(spec.Topics, a.Topics) {
		log.Warn("the app's topics changed in the apps file: the group's topics are fixed while it runs; the change takes "+
			"effect at the next start", zap.Strings("topics", spec.Topics), zap.Strings("was", a.Topics))
	}
	if spec.Name != a.Name {
		log.Info("the app was renamed in the apps file: served under both names, and named as before in metrics and logs, "+
			"until a restart", zap.String("was", a.Name))
	}
}

// reloadApps reads the apps file again (Config.ReloadApps) and serves
// what it names. A file that no longer reads (or checks) keeps the apps
// as they were: the error is logged, shown on /readyz and by
// timbroadcast_apps_file_valid until a read succeeds.
func (w *Worker) reloadApps() error {
	apps, def, err := w.cfg.ReloadApps()
	if err == nil && !w.live.unchanged(apps, def) {
		if err = w.UpdateApps(apps, def); err == nil {
			w.live.applied(apps, def)
		}
	}
	if err == nil {
		w.live.mu.Lock()
		w.live.problem = ""
		w.live.mu.Unlock()
		w.metrics.SetAppsFileValid(true)
	}
	if err != nil {
		w.live.mu.Lock()
		first := w.live.problem == ""
		w.live.problem = err.Error()
		w.live.mu.Unlock()
		w.metrics.SetAppsFileValid(false)
		if first {
			w.log.Error("the apps file (TIM_APPS_FILE) cannot be read again: the apps as read before are served until it can",
				zap.Error(err))
		}
	}
	return err
}

// watchApps reads the apps file again every Config.AppsReload until ctx
// ends.
func (w *Worker) watchApps(ctx context.Context) {
	t := time.NewTicker(w.cfg.AppsReload)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.apps.reloadMu.Lock()
			_ = w.reloadApps()
			w.apps.reloaded = time.Now()
			w.apps.reloadMu.Unlock()
		}
	}
}

// served is an app's time in the apps file: ctx ends when the file stops
// naming it.
type served struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// serve starts (or starts again) the app's time in the apps file.
func (a *app) serve() {
	ctx, cancel := context.WithCancel(context.Background())
	a.served.Store(&served{ctx: ctx, cancel: cancel})
}

// remove ends the app's time in the apps file.
func (a *app) remove() {
	if st := a.served.Load(); st != nil {
		st.cancel()
	}
}

// removed reports whether the apps file no longer names a.
func (a *app) removed() bool {
	if a == nil {
		return false
	}
	st := a.served.Load()
	return st != nil && st.ctx.Err() != nil
}

// whileServed returns ctx, ended also when the apps file stops naming a
// (see UpdateApps).
func (a *app) whileServed(ctx context.Context) (context.Context, context.CancelFunc) {
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
