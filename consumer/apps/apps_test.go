package apps

import (
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/call"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// record is a record of topic with the header timbroadcast-app (if
// header is set) and the mapping's field app (if mapped is set).
func record(topic, header, mapped string) *call.Record {
	r := &call.Record{Msg: kafka.Message{Topic: topic}, Ev: &wire.Event{App: mapped}}
	if header != "" {
		r.Msg.Headers = []kafka.Header{{Key: wire.HeaderApp, Value: []byte(header)}}
	}
	return r
}

// TestRoute: a record's app is its topic's owner, else the mapping's
// field app, else the header, else the default; names and SDKAppIDs both
// name an app; a topic's owner never lets a record name another
// (wrong_app); an app the set lacks is unknown_app after one reload.
func TestRoute(t *testing.T) {
	s := NewSet()
	alpha, beta := New(Spec{Name: "alpha", SDKAppID: 1400000001}, "1400000001"),
		New(Spec{Name: "beta", SDKAppID: 1400000002, Topics: []string{"beta-only"}}, "1400000002")
	for _, a := range []*App{alpha, beta} {
		a.Serve() // served from the apps file
		s.Add(a)
	}
	if !s.SetDefault("alpha") || s.SetDefault("gamma") {
		t.Fatal("SetDefault: alpha must be found, gamma not")
	}
	s.SetDefault("1400000001")
	cases := []struct {
		name            string
		rec             *call.Record
		want            *App
		reason, inField string
	}{
		{"default", record("shared", "", ""), alpha, "", ""},
		{"header name", record("shared", "beta", ""), beta, "", ""},
		{"header SDKAppID", record("shared", "1400000002", ""), beta, "", ""},
		{"mapping over header", record("shared", "alpha", "beta"), beta, "", ""},
		{"topic owner", record("beta-only", "", ""), beta, "", ""},
		{"topic owner named", record("beta-only", "beta", ""), beta, "", ""},
		{"wrong app", record("beta-only", "alpha", ""), beta, wire.ReasonWrongApp, wire.HeaderApp},
		{"unknown", record("shared", "gamma", ""), nil, wire.ReasonUnknownApp, wire.HeaderApp},
		{"unknown mapped", record("shared", "", "gamma"), nil, wire.ReasonUnknownApp, "app"},
	}
	for _, c := range cases {
		a, ie := s.Route(c.rec)
		if a != c.want {
			t.Errorf("%s: app %v, want %v", c.name, a, c.want)
		}
		switch {
		case c.reason == "" && ie != nil:
			t.Errorf("%s: %v, want no error", c.name, ie)
		case c.reason != "" && (ie == nil || ie.Reason != c.reason || ie.Field != c.inField):
			t.Errorf("%s: %+v, want reason %s field %s", c.name, ie, c.reason, c.inField)
		}
	}

	// An app added to the file is found by the reload a record naming it
	// makes; at most one reload a second.
	reloads := 0
	s.Reload = func() error {
		reloads++
		s.Update([]Spec{alpha.Spec, beta.Spec, {Name: "gamma", SDKAppID: 1400000003}}, "alpha",
			func(sp Spec) (*App, error) { return New(sp, "x"), nil }, func(*App, Spec) {}, zap.NewNop())
		return nil
	}
	if a, ie := s.Route(record("shared", "gamma", "")); ie != nil || a == nil || a.Name != "gamma" {
		t.Fatalf("after the reload: %v, %v; want gamma", a, ie)
	}
	if _, ie := s.Route(record("shared", "delta", "")); ie == nil || !strings.Contains(ie.Msg, `"delta"`) || reloads != 1 {
		t.Fatalf("delta: %v after %d reloads; want unknown_app naming it, no second reload within a second", ie, reloads)
	}

	// An app the file stops naming is removed (its calls end) and, named
	// again, is the same app served again.
	s.Update([]Spec{alpha.Spec}, "", nil, func(*App, Spec) {}, zap.NewNop())
	if !beta.Removed() {
		t.Fatal("beta is not removed")
	}
	s.Update([]Spec{alpha.Spec, beta.Spec}, "", nil, func(*App, Spec) {}, zap.NewNop())
	if beta.Removed() || s.lookupLocked("beta") != beta {
		t.Fatal("beta named again is not the same app, served")
	}
}
