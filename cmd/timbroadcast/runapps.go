package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/sender"
)

// runApps is the apps file as `run` serves it, and the file to read
// again: an app's sender configuration is the shared TIM_* settings and
// the app's credentials, endpoint and rate (senderConfig).
type runApps struct {
	path string
	file *appsFile
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
		if _, err := ra.senderConfig(a); err != nil {
			return nil, err
		}
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
// close closes the clients (also those a reload makes).
type appClients struct {
	ra      *runApps
	log     *zap.Logger
	observe func(sender.Attempt)

	mu      sync.Mutex
	clients []*sender.Client
	// pool is the connection pool every app's client shares: the apps of
	// one host share its connections.
	pool *sender.Transport
	// byConfig is the client of each app's settings as last read, so that
	// an app whose settings did not change keeps its client.
	byConfig map[clientKey]*sender.Client
	// last is the apps as the file last read well (sum: its bytes'
	// SHA-256), returned again while the file does not change.
	sum         [sha256.Size]byte
	last        []consumer.App
	lastDefault string
}

// clientKey is what an app's client is made of in the apps file.
type clientKey struct {
	sdkappid              int
	admin, keyFile, rates string
	endpoints             string
}

// all returns the apps of the file (consumer.Config.Apps).
func (ac *appClients) all() ([]consumer.App, error) {
	apps, _, err := ac.reload()
	return apps, err
}

// reload reads the apps file again (consumer.Config.ReloadApps) and
// returns every app it names as the worker is to serve it: an app whose
// SDKAppID, admin, key file, region or endpoint and rate are as before
// keeps its client (its key file is read again whenever it changes, by
// the client); another gets a new one. A file whose bytes did not change
// is not read further. A file that does not read or check, or names a key
// file that cannot be read, returns the error (the file, the app, the
// line and the field): the worker keeps the apps as they are.
func (ac *appClients) reload() ([]consumer.App, string, error) {
	path := ac.ra.path
	b, err := readAppsFile(path)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(b)
	ac.mu.Lock()
	defer ac.mu.Unlock()
	if ac.last != nil && sum == ac.sum {
		return ac.last, ac.lastDefault, nil
	}
	f, err := parseAppsFile(path, b)
	if err != nil {
		return nil, "", err
	}
	if ac.byConfig == nil {
		ac.byConfig = map[clientKey]*sender.Client{}
	}
	out := make([]consumer.App, 0, len(f.Apps))
	for _, a := range f.Apps {
		k := clientKey{sdkappid: a.SDKAppID, admin: a.Admin, keyFile: a.SecretKeyFile, rates: fmt.Sprint(a.rate()),
			endpoints: strings.Join(a.endpoints(), ",")}
		client := ac.byConfig[k]
		if client == nil {
			cfg, err := ac.ra.senderConfig(a)
			if err != nil {
				return nil, "", err
			}
			cfg.Logger = ac.log.Named("sender").With(zap.String("app", a.Name), zap.Int("sdkappid", a.SDKAppID))
			cfg.Observe = ac.observe
			if ac.pool == nil {
				// The calls in flight at once to one host, of however many apps.
				ac.pool = &sender.Transport{MaxIdlePerHost: 256}
			}
			cfg.Transport = ac.pool
			if client, err = sender.New(cfg); err != nil {
				return nil, "", &appsFileError{Path: path, Problems: []appsProblem{{App: a.Name, Line: a.line, Msg: err.Error()}}}
			}
			ac.clients = append(ac.clients, client)
			ac.byConfig[k] = client
		}
		out = append(out, consumer.App{Name: a.Name, SDKAppID: uint64(a.SDKAppID), Sender: client, Rate: a.rate(), Topics: a.Topics})
	}
	ac.sum, ac.last, ac.lastDefault = sum, out, f.DefaultApp
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
