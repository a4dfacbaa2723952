package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/schedule"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// statusCmd is `timbroadcast status`: the group at a glance, from Kafka
// alone: its members, every source partition's committed offset, end,
// lag, owner and what is in flight (decoded from the commit metadata), and
// the dead letters of the last hour by reason.
type statusCmd struct {
	kafkaAccess
	group              string
	topic, urgent, dlq string
	// delivered is the delivered log ("" when off), app the SDKAppID whose
	// entries to show ("": the only app in the log, if one).
	delivered, app string
	// slots is the claims log, where an operator's pause is.
	slots string
	// apps is the apps file (TIM_APPS_FILE): a line per app; only names
	// the one app to show (--app).
	apps   *appsFile
	only   string
	json   bool
	watch  time.Duration
	stdout io.Writer
	now    func() time.Time
}

func parseStatus(p process, args []string) (*statusCmd, error) {
	s := p.settings("status")
	k := addKafkaSettings(s, "")
	t := addTopicSettings(s, "topic of broadcast events", "dead-letter topic")
	group := s.add("group", "KAFKA_GROUP_ID", "timbroadcast", "the workers' consumer group")
	asJSON := s.boolFlag("json", "print one JSON document (members, partitions, dead letters) instead of tables")
	watch := s.add("watch", "", "", "redraw every this long (e.g. 2s) until interrupted")
	delivered := s.add("delivered-topic", "KAFKA_DELIVERED_TOPIC", "<topic>.delivered", "the workers' delivered log: what each partition delivered up to; off hides it")
	app := s.add("sdkappid", "TIM_SDKAPPID", "", "the app whose deliveries and pause to show [default: the only one in the delivered log]")
	slots := s.add("slot-topic", "KAFKA_SLOT_TOPIC", "<topic>.slots", "the workers' claims log, where `timbroadcast pause` writes")
	appsPath := s.add("apps-file", "TIM_APPS_FILE", "", "the workers' apps file: a line per app (rate, paused or not and why, last delivery, delivered-log position)")
	only := s.add("app", "", "", "with an apps file: show this app alone (its name)")
	if err := s.parse(args); err != nil {
		return nil, err
	}
	var apps *appsFile
	if path := appsPath.String(); path != "" {
		// Status shows what it can of a file whose key files are not on
		// this machine: only a file that does not read is an error.
		f, err := loadAppsFile(path)
		if f == nil {
			return nil, appsPath.errorf("%v", err)
		}
		apps = f
		if len(f.Apps) > 0 && len(f.Apps[0].Topics) > 0 && t.topic.String() == "" {
			t.topic.val = f.Apps[0].Topics[0]
		}
	}
	if topics := t.topic.list(); len(topics) > 1 {
		t.topic.val = topics[0]
	}
	c := &statusCmd{json: *asJSON, stdout: p.stdout, now: time.Now, apps: apps, only: only.String()}
	if c.only != "" && (apps == nil || !slices.ContainsFunc(apps.Apps, func(a appSpec) bool { return a.Name == c.only })) {
		return nil, only.errorf("%q is not an app of the apps file (TIM_APPS_FILE)", c.only)
	}
	var err error
	if c.kafkaAccess, err = k.access(p.logger); err != nil {
		return nil, err
	}
	if c.conn == nil {
		return nil, k.brokers.errorf("is required (%s)", k.brokers.usage)
	}
	if c.group, err = group.required(); err != nil {
		return nil, err
	}
	if c.topic, c.dlq, err = t.resolve(); err != nil {
		return nil, err
	}
	if c.urgent, err = t.urgentTopic(c.topic, c.dlq); err != nil {
		return nil, err
	}
	if c.watch, err = watch.duration(); err != nil {
		return nil, err
	}
	switch c.delivered, c.app = delivered.String(), app.String(); c.delivered {
	case "<topic>.delivered", "":
		c.delivered = c.topic + ".delivered"
	case "off":
		c.delivered = ""
	}
	if c.slots = slots.String(); c.slots == "<topic>.slots" || c.slots == "" {
		c.slots = c.topic + ".slots"
	}
	return c, nil
}

// groupStatus is what status shows; its JSON is `status --json`.
type groupStatus struct {
	Group       string            `json:"group"`
	State       string            `json:"state"`
	At          time.Time         `json:"at"`
	Members     []memberStatus    `json:"members"`
	Partitions  []partitionStatus `json:"partitions"`
	DeadLetters deadLetterSummary `json:"dead_letters_last_hour"`
	// Paused is an operator's pause of the app (timbroadcast pause), in
	// force or ended; absent when there is none on record.
	Paused *pausedStatus `json:"paused,omitempty"`
	// Apps are the apps of the apps file (TIM_APPS_FILE), paused first.
	Apps []appStatus `json:"apps,omitempty"`
}

// appStatus is one app of the apps file as status shows it.
type appStatus struct {
	Name     string  `json:"name"`
	SDKAppID uint64  `json:"sdkappid"`
	Rate     float64 `json:"rate"`
	// State is paused (an operator's pause in force), delivering (a
	// delivery within the last minute) or idle.
	State  string        `json:"state"`
	Paused *pausedStatus `json:"paused,omitempty"`
	// LastDelivery is when the delivered log last recorded a delivery of
	// the app; Delivered its position per partition ("topic/partition":
	// every record of the app before it has its outcome).
	LastDelivery time.Time        `json:"last_delivery,omitzero"`
	Delivered    map[string]int64 `json:"delivered"`
}

// pausedStatus is an operator's pause as status shows it.
type pausedStatus struct {
	App    uint64    `json:"app"`
	By     string    `json:"by"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
	// Until is when it ends by itself (absent: at timbroadcast resume).
	Until time.Time `json:"until,omitzero"`
	// Active says it holds the app's calls now.
	Active bool `json:"active"`
}

type memberStatus struct {
	MemberID   string `json:"member_id"`
	InstanceID string `json:"instance_id,omitempty"`
	ClientID   string `json:"client_id"`
	ClientHost string `json:"client_host"`
	// Version is the member's release, read from its client id
	// ("timbroadcast-<version>"); "" for another client or a release
	// before 0.9.0.
	Version    string   `json:"version,omitempty"`
	Partitions []string `json:"partitions"`
}

type partitionStatus struct {
	Topic     string          `json:"topic"`
	Partition int             `json:"partition"`
	Committed int64           `json:"committed"` // -1: nothing committed yet
	End       int64           `json:"end"`
	Lag       int64           `json:"lag"`
	Owner     string          `json:"owner,omitempty"` // instance id, else member id
	InFlight  *inFlightStatus `json:"in_flight,omitempty"`
	// Delivered is the delivered log's record for the partition: every
	// record before it was delivered (a new group or a reset skips them);
	// -1 for none.
	Delivered int64 `json:"delivered"`
}

// inFlightStatus is a call recorded in the commit metadata.
type inFlightStatus struct {
	FirstOffset int64  `json:"first_offset"`
	LastOffset  int64  `json:"last_offset"`
	Records     int64  `json:"records"`
	Random      uint32 `json:"random"`
	// Delivered: the API answered OK; the receipts are being written.
	Delivered bool   `json:"delivered"`
	MsgSeq    uint64 `json:"msg_seq,omitempty"`
	// Since is when the delivered call was made; for a call not yet
	// delivered, the first record's timestamp (the metadata has no time).
	Since time.Time `json:"since,omitzero"`
}

type deadLetterSummary struct {
	Topic    string         `json:"topic"`
	Total    int            `json:"total"`
	ByReason map[string]int `json:"by_reason"`
}

// errNoMember: the group has no member (exit 1).
var errNoMember = errors.New("the group has no member: no worker is running")

// Run prints the status once, or every --watch until ctx ends.
func (c *statusCmd) Run(ctx context.Context) error {
	if c.watch <= 0 {
		st, err := c.collect(ctx)
		if err != nil {
			return err
		}
		c.print(st)
		if len(st.Members) == 0 {
			return errNoMember
		}
		return nil
	}
	for {
		st, err := c.collect(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fmt.Fprint(c.stdout, "\033[H\033[2J") // home, clear
		if err != nil {
			fmt.Fprintf(c.stdout, "%s: %v\n", c.now().Format(time.TimeOnly), err)
		} else {
			c.print(st)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.watch):
		}
	}
}

// collect reads the status from Kafka.
func (c *statusCmd) collect(ctx context.Context) (*groupStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	g, err := c.conn.DescribeGroup(ctx, c.group)
	if err != nil {
		return nil, err
	}
	st := &groupStatus{Group: c.group, State: g.State, At: c.now().UTC(), Members: []memberStatus{}, Partitions: []partitionStatus{}}
	owners := map[string]string{} // topic/partition -> owner
	for _, m := range g.Members {
		ms := memberStatus{MemberID: m.MemberID, InstanceID: m.InstanceID, ClientID: m.ClientID, ClientHost: m.ClientHost, Partitions: []string{}}
		if v, ok := strings.CutPrefix(m.ClientID, "timbroadcast-"); ok {
			ms.Version = wire.Cut(v, 64)
		}
		name := m.InstanceID
		if name == "" {
			name = m.MemberID
		}
		topics := make([]string, 0, len(m.Assigned))
		for t := range m.Assigned {
			topics = append(topics, t)
		}
		sort.Strings(topics)
		for _, t := range topics {
			for _, p := range m.Assigned[t] {
				tp := fmt.Sprintf("%s/%d", t, p)
				ms.Partitions = append(ms.Partitions, tp)
				owners[tp] = name
			}
		}
		st.Members = append(st.Members, ms)
	}
	topics := []string{c.topic}
	if c.apps != nil {
		for _, a := range c.apps.Apps {
			for _, t := range a.Topics {
				if !slices.Contains(topics, t) {
					topics = append(topics, t)
				}
			}
		}
	}
	if c.urgent != "" {
		topics = append(topics, c.urgent)
	}
	delivered := c.deliveredLog(ctx)
	for _, topic := range topics {
		committed, err := c.conn.CommittedWithMetadata(ctx, c.group, topic)
		if err != nil {
			return nil, err
		}
		ends, err := c.conn.Ends(ctx, topic)
		if err != nil {
			return nil, err
		}
		parts := make([]int, 0, len(ends))
		for p := range ends {
			parts = append(parts, p)
		}
		sort.Ints(parts)
		for _, p := range parts {
			co := committed[p]
			ps := partitionStatus{Topic: topic, Partition: p, Committed: co.Offset, End: ends[p], Owner: owners[fmt.Sprintf("%s/%d", topic, p)],
				Delivered: -1}
			if next, ok := delivered[fmt.Sprintf("%s/%d", topic, p)]; ok {
				ps.Delivered = next
			}
			from := max(co.Offset, 0)
			ps.Lag = max(ends[p]-from, 0)
			if f, ok := wire.ParseInFlight(co.Metadata); ok && co.Offset >= 0 && f.Last >= co.Offset {
				in := &inFlightStatus{FirstOffset: co.Offset, LastOffset: f.Last, Records: f.Last - co.Offset + 1, Random: f.Random}
				if d := f.Delivered; d != nil {
					in.Delivered, in.MsgSeq, in.Since = true, d.MsgSeq, d.Call.UTC()
				} else if m, err := c.firstRecord(ctx, topic, p, co.Offset); err == nil {
					in.Since = m.UTC()
				}
				ps.InFlight = in
			}
			st.Partitions = append(st.Partitions, ps)
		}
	}
	st.DeadLetters = deadLetterSummary{Topic: c.dlq, ByReason: map[string]int{}}
	from, err := c.conn.OffsetsAt(ctx, c.dlq, c.now().Add(-time.Hour))
	if err != nil {
		return nil, err
	}
	dls, err := c.conn.ReadFrom(ctx, c.dlq, from)
	if err != nil {
		return nil, err
	}
	for _, m := range dls {
		st.DeadLetters.Total++
		st.DeadLetters.ByReason[wire.Header(m, wire.HeaderDLQReason)]++
	}
	if app, err := strconv.ParseUint(c.app, 10, 64); err == nil && app > 0 && c.apps == nil {
		if st.Paused, err = c.paused(ctx, app); err != nil {
			return nil, err
		}
	}
	if c.apps != nil {
		if st.Apps, err = c.appsStatus(ctx); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// paused reads app's operator pause from the claims log (nil: none).
func (c *statusCmd) paused(ctx context.Context, app uint64) (*pausedStatus, error) {
	h, ok, err := schedule.Operator{Store: schedule.NewKafkaLog(c.conn, c.slots), App: app}.Current(ctx)
	switch {
	case err != nil && !errors.Is(err, kafka.UnknownTopicOrPartition):
		return nil, fmt.Errorf("read the claims log %s: %w", c.slots, err)
	case !ok:
		return nil, nil
	}
	return &pausedStatus{App: app, By: h.By, Reason: h.Reason, Since: h.Since.UTC(), Until: h.Until.UTC(),
		Active: h.Until.IsZero() || c.now().Before(h.Until)}, nil
}

// appsStatus is each app of the apps file (only --app's with it): its
// pause, last delivery and delivered-log positions; paused apps first.
func (c *statusCmd) appsStatus(ctx context.Context) ([]appStatus, error) {
	var entries map[string]wire.Watermark
	if c.delivered != "" {
		entries, _ = readDelivered(ctx, c.conn, c.delivered) // unreadable: shown without positions
	}
	var out []appStatus
	for _, a := range c.apps.Apps {
		if c.only != "" && a.Name != c.only {
			continue
		}
		id := uint64(a.SDKAppID)
		as := appStatus{Name: a.Name, SDKAppID: id, Rate: a.rate(), State: "idle", Delivered: map[string]int64{}}
		for _, e := range entries {
			if e.App != strconv.FormatUint(id, 10) {
				continue
			}
			as.Delivered[fmt.Sprintf("%s/%d", e.Topic, e.Partition)] = e.Next
			if at := time.UnixMilli(e.At).UTC(); at.After(as.LastDelivery) {
				as.LastDelivery = at
			}
		}
		if c.now().Sub(as.LastDelivery) < time.Minute {
			as.State = "delivering"
		}
		p, err := c.paused(ctx, id)
		if err != nil {
			return nil, err
		}
		if p != nil && p.Active {
			as.State, as.Paused = "paused", p
		}
		out = append(out, as)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].State == "paused" && out[j].State != "paused" })
	return out, nil
}

// firstRecord returns the timestamp of the record at offset.
func (c *statusCmd) firstRecord(ctx context.Context, topic string, partition int, offset int64) (time.Time, error) {
	res, err := c.conn.Fetcher(topic, partition, offset, 100*time.Millisecond).Fetch(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if len(res.Records) == 0 {
		return time.Time{}, errors.New("no record")
	}
	return res.Records[0].Time, nil
}

// print writes st as tables, or as JSON with --json.
func (c *statusCmd) print(st *groupStatus) {
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
		return
	}
	fmt.Fprintf(c.stdout, "group %s: %s, %d member(s)\n\n", st.Group, strings.ToLower(st.State), len(st.Members))
	if p := st.Paused; p != nil && p.Active {
		until := "until `timbroadcast resume`"
		if !p.Until.IsZero() {
			until = "until " + p.Until.Format(time.RFC3339)
		}
		reason := ""
		if p.Reason != "" {
			reason = ": " + wire.Printable(p.Reason)
		}
		fmt.Fprintf(c.stdout, "PAUSED: app %d paused by %s since %s, %s%s\n\n", p.App, wire.Printable(p.By), p.Since.Format(time.RFC3339), until, reason)
	}
	if len(st.Apps) > 0 {
		c.printApps(st)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tINSTANCE\tVERSION\tHOST\tPARTITIONS")
	for _, m := range st.Members {
		// Member and instance ids, client ids and hosts are chosen by any
		// client with the group's ACL: escaped, so none can act on the
		// terminal.
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", wire.Printable(m.MemberID), wire.Printable(dash(m.InstanceID)), wire.Printable(dash(m.Version)),
			wire.Printable(m.ClientHost), dash(strings.Join(m.Partitions, " ")))
	}
	_ = tw.Flush()
	fmt.Fprintln(c.stdout)
	tw = tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITION\tCOMMITTED\tEND\tLAG\tDELIVERED\tOWNER\tIN FLIGHT")
	var lag int64
	for _, p := range st.Partitions {
		lag += p.Lag
		committed := fmt.Sprint(p.Committed)
		if p.Committed < 0 {
			committed = "-"
		}
		delivered := "-"
		if p.Delivered >= 0 {
			delivered = fmt.Sprint(p.Delivered)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%s\t%s\t%s\n", p.Topic, p.Partition, committed, p.End, p.Lag, delivered,
			wire.Printable(dash(p.Owner)), inFlightText(p.InFlight, st.At))
	}
	_ = tw.Flush()
	fmt.Fprintf(c.stdout, "\nlag %d record(s) in all\n", lag)
	d := st.DeadLetters
	reasons := make([]string, 0, len(d.ByReason))
	for r, n := range d.ByReason {
		reasons = append(reasons, fmt.Sprintf("%s %d", wire.Printable(wire.Cut(r, 64)), n))
	}
	sort.Strings(reasons)
	if d.Total == 0 {
		fmt.Fprintf(c.stdout, "dead letters in the last hour (%s): none\n", d.Topic)
	} else {
		fmt.Fprintf(c.stdout, "dead letters in the last hour (%s): %d (%s)\n", d.Topic, d.Total, strings.Join(reasons, ", "))
	}
}

// printApps writes a line per app: paused (by whom, why, since when),
// delivering or idle; its rate, last delivery and delivered-log positions.
func (c *statusCmd) printApps(st *groupStatus) {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tSDKAPPID\tRATE\tSTATE\tLAST DELIVERY\tDELIVERED")
	for _, a := range st.Apps {
		state := a.State
		if p := a.Paused; p != nil {
			state = fmt.Sprintf("paused by %s since %s", wire.Printable(p.By), p.Since.Format(time.RFC3339))
			if p.Reason != "" {
				state += ": " + wire.Printable(wire.Cut(p.Reason, 64))
			}
		}
		last := "-"
		if !a.LastDelivery.IsZero() {
			last = st.At.Sub(a.LastDelivery).Round(time.Second).String() + " ago"
		}
		var pos []string
		for tp, next := range a.Delivered {
			pos = append(pos, fmt.Sprintf("%s:%d", tp, next))
		}
		sort.Strings(pos)
		fmt.Fprintf(tw, "%s\t%d\t%g/s\t%s\t%s\t%s\n", a.Name, a.SDKAppID, a.Rate, state, last, dash(strings.Join(pos, " ")))
	}
	_ = tw.Flush()
	fmt.Fprintln(c.stdout)
}

// deliveredLog reads the delivered log's entries of c.app (or of its
// only app) by "topic/partition"; none when it is off, missing or
// unreadable (status shows what it can).
func (c *statusCmd) deliveredLog(ctx context.Context) map[string]int64 {
	out := map[string]int64{}
	if c.delivered == "" {
		return out
	}
	entries, err := readDelivered(ctx, c.conn, c.delivered)
	if err != nil {
		return out
	}
	apps := map[string]bool{}
	for _, e := range entries {
		apps[e.App] = true
	}
	app := c.app
	if app == "" && len(apps) == 1 {
		for a := range apps {
			app = a
		}
	}
	for _, e := range entries {
		if e.App == app {
			out[fmt.Sprintf("%s/%d", e.Topic, e.Partition)] = e.Next
		}
	}
	return out
}

func inFlightText(in *inFlightStatus, now time.Time) string {
	if in == nil {
		return "-"
	}
	s := fmt.Sprintf("offsets %d..%d (%d record(s)), Random %d", in.FirstOffset, in.LastOffset, in.Records, in.Random)
	switch {
	case in.Delivered:
		s += fmt.Sprintf(", delivered (MsgSeq %d) %s ago, receipts pending", in.MsgSeq, now.Sub(in.Since).Round(time.Millisecond))
	case !in.Since.IsZero():
		s += fmt.Sprintf(", first record produced %s ago", now.Sub(in.Since).Round(time.Millisecond))
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
