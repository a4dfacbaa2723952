package main

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/sender"
)

// runApps is the apps file as `run` serves it: each app's sender
// configuration (the shared TIM_* settings, the app's credentials,
// endpoint and rate), and the file to read again.
type runApps struct {
	path string
	file *appsFile
	cfgs []sender.Config
	// base is the shared sender configuration; learn teaches a key read
	// to the output scrubbers.
	base  sender.Config
	learn func(string)
}

// resolveApps makes the apps file f (read from path) what run serves: a
// key file that cannot be read stops the start (exit 2) naming the file,
// the app, its line and the field.
func resolveApps(path string, f *appsFile, base sender.Config, learn func(string)) (*runApps, error) {
	ra := &runApps{path: path, file: f, base: base, learn: learn}
	for _, a := range f.Apps {
		cfg, err := ra.senderConfig(a)
		if err != nil {
			return nil, err
		}
		ra.cfgs = append(ra.cfgs, cfg)
	}
	return ra, nil
}

// senderConfig is app a's sender configuration: its key read from its
// file whenever the file changes (as TIM_SECRET_KEY_FILE is).
func (ra *runApps) senderConfig(a appSpec) (sender.Config, error) {
	cfg := ra.base
	cfg.AppID, cfg.Admin, cfg.Endpoints, cfg.Rate = a.SDKAppID, a.Admin, a.endpoints(), a.rate()
	f, err := newSecretFile(a.SecretKeyFile, ra.learn)
	if err != nil {
		return cfg, &appsFileError{Path: ra.path, Problems: []appsProblem{{App: a.Name, Line: a.line, Field: "secret_key_file", Msg: err.Error()}}}
	}
	if cfg.SecretKey, err = f.get(); err != nil {
		return cfg, &appsFileError{Path: ra.path, Problems: []appsProblem{{App: a.Name, Line: a.line, Field: "secret_key_file", Msg: err.Error()}}}
	}
	cfg.SecretKeyFunc = f.get
	if err := cfg.Validate(); err != nil {
		return cfg, &appsFileError{Path: ra.path, Problems: []appsProblem{{App: a.Name, Line: a.line, Msg: err.Error()}}}
	}
	return cfg, nil
}

// topics are the apps' own topics, in file order.
func (ra *runApps) topics() []string {
	var out []string
	for _, a := range ra.file.Apps {
		out = append(out, a.Topics...)
	}
	return out
}

// appClients makes each app's client and the worker's view of the apps;
// closers close the clients (also those a reload makes).
type appClients struct {
	ra      *runApps
	log     *zap.Logger
	observe func(sender.Attempt)

	mu      sync.Mutex
	clients []*sender.Client
	known   map[string]bool
}

func (ac *appClients) app(a appSpec, cfg sender.Config) (consumer.App, error) {
	cfg.Logger = ac.log.Named("sender").With(zap.String("app", a.Name), zap.Int("sdkappid", a.SDKAppID))
	cfg.Observe = ac.observe
	client, err := sender.New(cfg)
	if err != nil {
		return consumer.App{}, fmt.Errorf("app %s: %w", a.Name, err)
	}
	ac.mu.Lock()
	ac.clients = append(ac.clients, client)
	ac.known[a.Name] = true
	ac.mu.Unlock()
	return consumer.App{Name: a.Name, SDKAppID: uint64(a.SDKAppID), Sender: client, Rate: cfg.Rate, Topics: a.Topics}, nil
}

// all returns the apps of the file as read at start.
func (ac *appClients) all() ([]consumer.App, error) {
	out := make([]consumer.App, len(ac.ra.file.Apps))
	for i, a := range ac.ra.file.Apps {
		app, err := ac.app(a, ac.ra.cfgs[i])
		if err != nil {
			return nil, err
		}
		out[i] = app
	}
	return out, nil
}

// reload reads the apps file again (consumer.Config.ReloadApps): the
// apps it names that the worker lacks get their clients. A file that no
// longer reads keeps the apps as they are (the error says why).
func (ac *appClients) reload() ([]consumer.App, string, error) {
	f, err := loadAppsFile(ac.ra.path)
	if err != nil {
		ac.log.Error("the apps file (TIM_APPS_FILE) cannot be read again; the apps as read before are kept", zap.Error(err))
		return nil, "", err
	}
	var out []consumer.App
	for _, a := range f.Apps {
		ac.mu.Lock()
		known := ac.known[a.Name]
		ac.mu.Unlock()
		if known {
			continue
		}
		cfg, err := ac.ra.senderConfig(a)
		if err != nil {
			ac.log.Error("an app added to the apps file cannot be served", zap.String("app", a.Name), zap.Error(err))
			continue
		}
		app, err := ac.app(a, cfg)
		if err != nil {
			continue
		}
		out = append(out, app)
	}
	return out, f.DefaultApp, nil
}

// close closes every client made.
func (ac *appClients) close() {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	for _, c := range ac.clients {
		c.Close()
	}
}

// appsEnvConflict names the single-app settings set together with
// TIM_APPS_FILE: each app's credentials, region and rate are in the file.
func appsEnvConflict(getenv func(string) string) error {
	var set []string
	for _, name := range []string{"TIM_SDKAPPID", "TIM_ADMIN", "TIM_SECRET_KEY", "TIM_SECRET_KEY_FILE"} {
		if getenv(name) != "" {
			set = append(set, name)
		}
	}
	if len(set) == 0 {
		return nil
	}
	return errors.New("TIM_APPS_FILE and " + strings.Join(set, ", ") + " are both set: with an apps file each app's SDKAppID, admin " +
		"and key file are in the file; unset " + strings.Join(set, ", "))
}
