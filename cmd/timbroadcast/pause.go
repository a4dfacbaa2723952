package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/timbroadcast/timbroadcast/consumer/schedule"
)

// pauseCmd is `timbroadcast pause` and `timbroadcast resume`: the
// operators' stop button. It writes a hold (or its release) of the app to
// the claims log every worker of the group reads, so every replica stops
// (or starts) calling for the app at once, within one call period of the
// command's return; records wait, nothing is dead-lettered. A worker that
// starts while the app is paused finds the pause in the log.
type pauseCmd struct {
	kafkaAccess
	resume     bool
	slotTopic  string
	app        uint64
	defaultApp uint64 // TIM_SDKAPPID: the app of claims naming none
	by, reason string
	d          time.Duration
	stdout     io.Writer
	now        func() time.Time
}

func parsePause(p process, args []string) (*pauseCmd, error) { return parseHold(p, args, false) }

func parseResume(p process, args []string) (*pauseCmd, error) { return parseHold(p, args, true) }

func parseHold(p process, args []string, resume bool) (*pauseCmd, error) {
	name := "pause"
	if resume {
		name = "resume"
	}
	s := p.settings(name)
	k := addKafkaSettings(s, "")
	topic := s.add("topic", "KAFKA_TOPIC", "", "source topic of the workers (names the claims log's default, <topic>.slots)")
	slots := s.add("slot-topic", "KAFKA_SLOT_TOPIC", "<topic>.slots", "the workers' claims log")
	appID := s.add("sdkappid", "TIM_SDKAPPID", "", "the workers' SDKAppID")
	appsPath := s.add("apps-file", "TIM_APPS_FILE", "", "the workers' apps file: --app may name an app by its name there")
	app := s.add("app", "", "", "the app to "+name+" (its SDKAppID, or its name in TIM_APPS_FILE) [default: TIM_SDKAPPID]")
	by := s.add("by", "", defaultOperator(), "who "+name+"s it (shown by status, /readyz, metrics and the workers' logs)")
	var reason, dur *setting
	if !resume {
		reason = s.add("reason", "", "", "why (shown with the pause)")
		dur = s.add("for", "", "", "end the pause by itself after this long (e.g. 30m) [default: until timbroadcast resume]")
	}
	if err := s.parse(args); err != nil {
		return nil, err
	}
	c := &pauseCmd{resume: resume, stdout: p.stdout, now: time.Now, by: strings.TrimSpace(by.String())}
	var err error
	if c.kafkaAccess, err = k.access(p.logger); err != nil {
		return nil, err
	}
	if c.conn == nil {
		return nil, k.brokers.errorf("is required (%s)", k.brokers.usage)
	}
	var apps *appsFile
	if path := strings.TrimSpace(appsPath.String()); path != "" {
		if apps, err = loadAppsFile(path); apps == nil {
			return nil, err
		}
		if topic.String() == "" && len(apps.Apps) > 0 && len(apps.Apps[0].Topics) > 0 {
			topic.val = apps.Apps[0].Topics[0] // as run names the claims log
		}
	}
	switch c.slotTopic = slots.String(); c.slotTopic {
	case "<topic>.slots", "":
		if _, err := topic.required(); err != nil {
			return nil, err
		}
		c.slotTopic = topic.list()[0] + ".slots" // the first of several, as run
	}
	if apps != nil {
		// --app may name an app of the apps file.
		for _, a := range apps.Apps {
			if a.Name != "" && a.Name == app.String() {
				app.val = strconv.Itoa(a.SDKAppID)
			}
		}
	}
	which := app
	if app.String() == "" {
		which = appID
	}
	id, err := which.required()
	if err != nil {
		return nil, fmt.Errorf("%w: the app to %s", err, name)
	}
	if c.app, err = strconv.ParseUint(id, 10, 64); err != nil || c.app == 0 {
		return nil, which.errorf("%q is not an SDKAppID (a positive number)", id)
	}
	if v := appID.String(); v != "" {
		if c.defaultApp, err = strconv.ParseUint(v, 10, 64); err != nil || c.defaultApp == 0 {
			return nil, appID.errorf("%q is not an SDKAppID (a positive number)", v)
		}
	}
	if c.by == "" {
		return nil, by.errorf("is empty: say who %ss the app", name)
	}
	if len(c.by) > 128 {
		return nil, by.errorf("is %d bytes long; at most 128", len(c.by))
	}
	if !resume {
		c.reason = strings.TrimSpace(reason.String())
		if len(c.reason) > 512 {
			return nil, reason.errorf("is %d bytes long; at most 512", len(c.reason))
		}
		if c.d, err = dur.duration(); err != nil {
			return nil, err
		}
		if c.d < 0 || (dur.String() != "" && c.d == 0) {
			return nil, dur.errorf("%q must be a positive duration", dur.String())
		}
	}
	return c, nil
}

// defaultOperator is who runs the command: user@host.
func defaultOperator() string {
	name := "operator"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		name += "@" + h
	}
	return name
}

// Run writes the hold (or its release) and says what it did.
func (c *pauseCmd) Run(ctx context.Context) error {
	if err := schedule.EnsureLog(ctx, c.conn, c.slotTopic, c.log); err != nil {
		return err
	}
	op := schedule.Operator{Store: schedule.NewKafkaLog(c.conn, c.slotTopic), App: c.app, DefaultApp: c.defaultApp, By: c.by}
	if c.resume {
		if err := op.Resume(ctx, c.now()); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "app %d resumed by %s: every worker calls for it again\n", c.app, c.by)
		return nil
	}
	if err := op.Pause(ctx, c.reason, c.d, c.now()); err != nil {
		return err
	}
	until := "until `timbroadcast resume`"
	if c.d > 0 {
		until = fmt.Sprintf("for %v (until about %s), or until `timbroadcast resume`", c.d, c.now().Add(c.d).UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(c.stdout, "app %d paused by %s on every worker %s: no call leaves after the one in flight; records wait, nothing is dead-lettered\n",
		c.app, c.by, until)
	return nil
}
