package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/apps"
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
	start func(*apps.App)
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
func (l *liveApps) unchanged(specs []App, def string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil || def != l.lastDefault || len(specs) != len(l.last) {
		return false
	}
	for i, a := range specs {
		b := l.last[i]
		if a.Name != b.Name || a.SDKAppID != b.SDKAppID || a.Sender != b.Sender || a.Rate != b.Rate || !slices.Equal(a.Topics, b.Topics) {
			return false
		}
	}
	return true
}

// applied records the apps the file gave, once served.
func (l *liveApps) applied(specs []App, def string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last, l.lastDefault = specs, def
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
func (w *Worker) UpdateApps(specs []App, defaultApp string) error {
	if w.apps.Single != nil {
		return errors.New("consumer: UpdateApps needs several apps (Config.Apps)")
	}
	names, ids := map[string]bool{}, map[uint64]bool{}
	for _, a := range specs {
		if a.Sender == nil {
			return fmt.Errorf("consumer: app %s needs a Sender", a.Name)
		}
		if names[a.Name] || ids[a.SDKAppID] {
			return fmt.Errorf("consumer: app %s (%d) named twice", a.Name, a.SDKAppID)
		}
		names[a.Name], ids[a.SDKAppID] = true, true
	}
	if defaultApp != "" && !slices.ContainsFunc(specs, func(a App) bool { return a.Name == defaultApp || fmt.Sprint(a.SDKAppID) == defaultApp }) {
		return &FieldError{Field: "DefaultApp", Msg: fmt.Sprintf("%q is not one of the apps", defaultApp)}
	}
	started := w.apps.Update(specs, defaultApp, w.newApp, w.changeApp, w.log)
	w.live.mu.Lock()
	defer w.live.mu.Unlock()
	for _, a := range started {
		if w.live.viewSet && a.Sched.Paced() {
			a.Sched.SetView(w.live.all, w.live.urgent)
		}
		a.Sched.SetMine(w.live.mine)
		if w.live.start != nil {
			w.live.start(a)
		}
	}
	return nil
}

// changeApp applies what the apps file changed of a served app (apps.mu
// held, Set.Update): its Sender and rate from its next call. Its topics and name
// stay as first served until a restart (the new name routes to it too).
func (w *Worker) changeApp(a *apps.App, spec App) {
	log := w.log.With(zap.String("app", spec.Name), zap.Uint64("sdkappid", spec.SDKAppID))
	if spec.Sender != a.Current() {
		a.SetSender(spec.Sender)
		log.Info("the app's settings changed in the apps file (key file, admin, region or endpoint): its next call uses them")
	}
	switch {
	case spec.Rate == a.RateNow:
	case a.Sched.Paced() && spec.Paced():
		a.Sched.SetRate(spec.Rate)
		log.Info("the app's rate changed in the apps file: its next call follows it", zap.Float64("rate", spec.Rate),
			zap.Float64("was", a.RateNow))
		a.RateNow = spec.Rate
	default:
		log.Warn("the app's rate changed between none and some in the apps file: takes effect at the next start",
			zap.Float64("rate", spec.Rate), zap.Float64("was", a.RateNow))
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
	specs, def, err := w.cfg.ReloadApps()
	if err == nil && !w.live.unchanged(specs, def) {
		if err = w.UpdateApps(specs, def); err == nil {
			w.live.applied(specs, def)
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
			w.apps.ReloadNow()
		}
	}
}
