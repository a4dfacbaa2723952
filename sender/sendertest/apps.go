package sendertest

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/timbroadcast/timbroadcast/sender"
)

// Apps emulates the endpoint of a region hosting several apps: one URL,
// and behind it each app (by the request's sdkappid) with its own
// credentials, rate limit, dedupe, faults and deliveries, as the service
// keeps them per app. A request for an app it does not host is answered
// 70020 (no such app), over HTTP 200 as the service answers.
type Apps struct {
	// URL is the base URL, e.g. http://127.0.0.1:41234.
	URL string

	hs   *httptest.Server
	apps map[int]*Server
	// conns counts the connections accepted.
	conns atomic.Int64
}

// NewApps starts an emulator of the apps (each Options names its AppID)
// on a loopback port. Close it when done. It panics on options that do
// not Validate, or two of one AppID.
func NewApps(apps ...Options) *Apps {
	a := &Apps{apps: map[int]*Server{}}
	for _, o := range apps {
		if _, dup := a.apps[o.AppID]; dup {
			panic(fmt.Sprintf("sendertest: app %d twice", o.AppID))
		}
		a.apps[o.AppID] = NewHandler(o)
	}
	a.hs = httptest.NewUnstartedServer(a)
	a.hs.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			a.conns.Add(1)
		}
	}
	a.hs.Start()
	a.URL = a.hs.URL
	return a
}

// Conns is how many connections the emulator has accepted: the apps of
// one region share a caller's connections to it.
func (a *Apps) Conns() int64 { return a.conns.Load() }

// App is the emulator of one hosted app (its Stats, Delivered, SetFaults,
// ...); nil when it hosts none of that id.
func (a *Apps) App(id int) *Server { return a.apps[id] }

// IDs are the hosted apps' ids, in order.
func (a *Apps) IDs() []int {
	ids := make([]int, 0, len(a.apps))
	for id := range a.apps {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids
}

// Close stops the server.
func (a *Apps) Close() { a.hs.Close() }

// ServeHTTP routes the API path by the query's sdkappid, and the control
// API under /emulator/<sdkappid>/ (delivered, stats, faults,
// expire-signatures) to that app's.
func (a *Apps) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/"+sender.BroadcastPath {
		id, err := strconv.Atoi(r.URL.Query().Get("sdkappid"))
		s := a.apps[id]
		if err != nil || s == nil {
			writeJSON(w, answer(70020, "SDKAppID not found"))
			return
		}
		s.ServeHTTP(w, r)
		return
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, "/emulator/"); ok {
		idText, tail, _ := strings.Cut(rest, "/")
		id, err := strconv.Atoi(idText)
		if s := a.apps[id]; err == nil && s != nil {
			r2 := r.Clone(r.Context())
			r2.URL.Path = "/emulator/" + tail
			s.ServeHTTP(w, r2)
			return
		}
	}
	http.NotFound(w, r)
}
