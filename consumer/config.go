package consumer

import (
	"fmt"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/apps"
	"github.com/timbroadcast/timbroadcast/consumer/call"
	"github.com/timbroadcast/timbroadcast/consumer/decode"
	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
	"github.com/timbroadcast/timbroadcast/consumer/mapping"
	"github.com/timbroadcast/timbroadcast/consumer/metrics"
	"github.com/timbroadcast/timbroadcast/sender"
)

// Config configures a Worker. A zero duration, StartOffset or
// MergeMaxBytes takes its default from DefaultConfig, the one place
// defaults are written.
type Config struct {
	// Brokers are the bootstrap brokers (host:port). Required.
	Brokers []string
	// Topic is the source topic. Required.
	Topic string
	// Topics are more source topics (KAFKA_TOPIC listing several, the
	// apps' own topics), consumed in the same group like Topic.
	Topics []string
	// GroupID is the consumer group. Required.
	GroupID string
	// GroupInstanceID, if set, makes the worker a static member of the
	// group (KIP-345): restarted with the same id within the session
	// timeout, it takes its partitions back without a rebalance, and it
	// never sends LeaveGroup. Each replica needs its own id; a second
	// process joining with it fences the first (Run returns ErrFenced).
	GroupInstanceID string
	// DLQTopic is the dead-letter topic. Required; must differ from Topic.
	DLQTopic string
	// UrgentTopic, if set, is a second source topic of the same format
	// whose events take the next call slot of the app before any event of
	// Topic, across all replicas (the urgent lane). Its dead letters go to
	// DLQTopic too, with the source topic in their headers.
	UrgentTopic string
	// ReceiptTopic, if set, receives one receipt per final outcome of
	// every event (wire.Receipt), written with acks=all before the event's
	// offset is committed. Must differ from the source and dead-letter
	// topics.
	ReceiptTopic string
	// SlotTopic is the claims log: one partition, shared by the members
	// of the group to space their calls (package schedule). Default
	// Topic+".slots"; created at start when missing. Used with AppRate.
	SlotTopic string
	// Dialer dials the brokers (TLS, SASL); default kafka.DefaultDialer.
	Dialer *kafka.Dialer
	// Balancer places dead letters and receipts by key (KAFKA_PARTITIONER);
	// nil is FNV-1a (kafkaconn.Balancer).
	Balancer kafka.Balancer

	// MaxWait is how long a fetch waits at the broker for new records; it
	// bounds nothing on the delivery path (a fetch answers as soon as a
	// record arrives).
	MaxWait time.Duration
	// SessionTimeout, HeartbeatInterval and RebalanceTimeout are the group
	// protocol's.
	SessionTimeout, HeartbeatInterval, RebalanceTimeout time.Duration
	// JoinGroupBackoff is the wait after a failed join.
	JoinGroupBackoff time.Duration
	// RevokeGrace is how long an in-flight send may go on after its
	// partition was revoked. An abandoned send is not
	// committed; the next owner resends it with the same Random.
	RevokeGrace time.Duration
	// DrainTimeout bounds the in-flight send at shutdown.
	DrainTimeout time.Duration
	// PauseInitial and PauseMax bound the backoff between probes while
	// paused.
	PauseInitial, PauseMax time.Duration
	// StuckAfter is how long a partition may keep failing on one record
	// (a send retried, a dead-letter write refused) before Ready reports
	// it and the stuck metric counts it.
	StuckAfter time.Duration
	// RetryMaxElapsed, if set, dead-letters an event whose call has been
	// retried this long with reason "retry_exhausted". The Sender must
	// return within it (sender.Config.MaxElapsed). Default 0: retry until
	// it succeeds. See README "Giving up" for what it costs.
	RetryMaxElapsed time.Duration
	// StartOffset is where a partition without a committed offset starts:
	// kafka.FirstOffset (default) or kafka.LastOffset. With LastOffset the
	// resolved offset is committed as soon as the partition is assigned,
	// so records produced afterwards are never skipped by a later owner.
	StartOffset int64
	// PartitionWatchInterval is how often the topic's partition count is
	// checked: added partitions are assigned (and the rate share follows)
	// within about this time.
	PartitionWatchInterval time.Duration

	// Logger is the worker's logger; default none.
	Logger *zap.Logger
	// Metrics records the worker's metrics; nil records none.
	Metrics *metrics.Metrics
	// Now is the clock (for expiry); default time.Now.
	Now func() time.Time
	// ScheduleClock is the call schedule's clock: this member's, which
	// the schedule corrects by the broker's (package schedule); nil is the
	// real clock. Tests give a replica a clock that is off.
	ScheduleClock clockwork.Clock
	// OnOutcome, if set, is called with every record's final outcome,
	// before its offset is committed.
	OnOutcome func(Outcome)
	// TracerProvider, if set, traces every event: a span from fetch to
	// commit whose parent is the W3C trace context of the record's
	// headers, with a child span per API attempt, dead-letter write and
	// receipt write; a merged call's span links its members. Nil traces
	// nothing and costs nothing.
	TracerProvider trace.TracerProvider
	// TraceLinkRecord makes a record's trace context a link of the event's
	// span instead of its parent, so the worker's sampler alone decides
	// (TIM_TRACE_RECORD_CONTEXT=link). By default it is the parent, and a
	// parent-based sampler (the default, parentbased_always_on) follows
	// the producer's sampling decision.
	TraceLinkRecord bool
	// Propagator reads the trace context from record headers; default
	// W3C trace context and baggage. Traced or not, its headers (Fields)
	// are the ones receipts copy from their events, and the trace id it
	// reads is in the event's log lines.
	Propagator propagation.TextMapPropagator

	// AppRate is the app's call rate for all replicas together (TIM_RATE).
	// When set (and finite), calls follow the call schedule that every
	// member of the group computes alike (package schedule): calls at least
	// 1/AppRate apart, granted through the claims log (SlotTopic) when
	// several members share the app. The Sender must honour sender.WithPacing (*sender.Client
	// does). Zero leaves pacing to the Sender.
	AppRate float64
	// CommitInterval is how often a partition commits at most. Zero (the
	// default): each outcome is committed at once, and what settles while
	// a commit is on its way goes into the next one. Longer: what settles
	// within the interval is written to the delivered log in one request
	// and committed in one (the first outcome after a quiet spell at
	// once); a crash then resends what settled in the last interval,
	// within the server's dedupe window.
	CommitInterval time.Duration
	// ScheduleRefresh is the longest the call schedule sleeps when
	// nothing wakes it (a new waiter, a record of the claims log): a
	// backstop.
	ScheduleRefresh time.Duration

	// Merge packs the events waiting at the head of a partition into one
	// call when a pacing slot opens (see README "Merge mode"). The Sender
	// must then also be a SlotSender.
	Merge bool
	// MergeEnvelope packs any sequence of events into one envelope element
	// (wire.MergeEnvelope) instead of native merging (wire.MergeNative).
	MergeEnvelope bool
	// Map, if set, maps and filters every record of both source topics
	// with a jq program (TIM_MAP): see RecordDecoder.
	Map *mapping.Program
	// Schemas, if set, decodes values in the Confluent Schema Registry
	// wire format before the mapping (KAFKA_SCHEMA_REGISTRY_URL).
	Schemas SchemaDecoder

	// MergeMaxBytes caps a merged request body; default and maximum
	// sender.MaxBodyBytes.
	MergeMaxBytes int

	// MaxRecordBytes caps one fetched record (key, value, headers): a
	// larger one is dead-lettered too_large, as a copy naming its topic,
	// partition and offset. MaxBatchBytes caps one record batch as sent
	// (compressed) and, 16 times over, what it may expand to
	// (kafkaconn.Limits).
	MaxRecordBytes, MaxBatchBytes int
	// MaxAge, if set, dead-letters as expired an event older than this by
	// its record timestamp when its turn comes (TIM_MAX_AGE), like one
	// past its own expiry header: offsets reset or a new group starting at
	// the earliest offset never broadcast old announcements. Such events
	// are recorded in flight before their first attempt (one more offset
	// commit per call), so one that may have reached the server is resent
	// after a crash, never dead-lettered.
	MaxAge time.Duration
	// BufferBytes bounds the bytes of records the worker holds between
	// their fetch and their commit, all partitions together
	// (kafkaconn.RecordBytes each): the fetches wait for room.
	BufferBytes int64

	// DeliveredTopic is the delivered log (KAFKA_DELIVERED_TOPIC): a
	// compacted topic of one partition where every delivery is recorded
	// before its commit, outside the consumer group, so a record read
	// again by a new group, after offsets were reset or expired, or by a
	// second deployment is not sent again (delivered.go). Default: the
	// source topic's name plus ".delivered"; DeliveredOff turns it off.
	DeliveredTopic string
	// Apps are the apps the worker serves (several apps in one
	// deployment, TIM_APPS_FILE), each with its own Sender and rate: a
	// record goes to the app its topic, the mapping's field app, the
	// header timbroadcast-app or DefaultApp names (unknown_app
	// otherwise). Empty: one app, the Sender given to New, at AppRate.
	Apps []App
	// DefaultApp names the app of records that name none (a name of Apps).
	DefaultApp string
	// StreamMaxRecords and StreamMaxBytes bound what one app's stream of a
	// partition keeps while several apps share it (an app paused under a
	// backlog of the others'): past them it keeps no more and reads its
	// records again from the partition once it moves. Defaults 4096
	// records, 4 MiB.
	StreamMaxRecords int
	StreamMaxBytes   int64
	// ReloadApps, if set, reads the apps again (the apps file): every app
	// it names, with their Senders (the same Sender for an app whose
	// settings did not change), and the default app. The worker serves
	// what it returns (UpdateApps) every AppsReload, and before
	// dead-lettering a record naming an app it lacks (at most once a
	// second); an error keeps the apps as they are.
	ReloadApps func() ([]App, string, error)
	// AppsReload is how often ReloadApps is called (TIM_APPS_RELOAD,
	// default 2s; negative: only for a record naming an unknown app).
	AppsReload time.Duration
	// App names the destination app in the delivered log's keys (the
	// SDKAppID), so two apps reading one topic never share an entry;
	// default "default".
	App string
	// DedupeWindow is how long the server discards a resend
	// (TIM_DEDUPE_WINDOW, default 5m). The delivered log is read again
	// before sending a record older than half of it when the last read is
	// older than a quarter of it.
	DedupeWindow time.Duration
}

// DeliveredOff as Config.DeliveredTopic turns the delivered log off: only
// the group's committed offsets and the server's five-minute dedupe keep
// an event from being shown twice.
const DeliveredOff = "off"

// Defaults of StreamMaxRecords and StreamMaxBytes.
const (
	DefaultStreamMaxRecords = 4096
	DefaultStreamMaxBytes   = 4 << 20
)

// DefaultBufferBytes is BufferBytes's default: thousands of ordinary
// events, and eight records of the largest size.
const DefaultBufferBytes = 32 << 20

// MinMergeMaxBytes is the smallest MergeMaxBytes: a call must hold at
// least one ordinary event.
const MinMergeMaxBytes = 200

// DefaultConfig returns the defaults of every optional setting: a zero
// field of a Config takes its value here. The command's settings and the
// README's configuration table show these values.
func DefaultConfig() Config {
	return Config{
		MaxWait:                5 * time.Second,
		SessionTimeout:         10 * time.Second,
		HeartbeatInterval:      3 * time.Second,
		RebalanceTimeout:       15 * time.Second,
		JoinGroupBackoff:       time.Second,
		RevokeGrace:            3 * time.Second,
		DrainTimeout:           10 * time.Second,
		PauseInitial:           5 * time.Second,
		PauseMax:               5 * time.Minute,
		StuckAfter:             2 * time.Minute,
		PartitionWatchInterval: 5 * time.Second,
		ScheduleRefresh:        200 * time.Millisecond,
		StartOffset:            kafka.FirstOffset,
		MergeMaxBytes:          sender.MaxBodyBytes,
		MaxRecordBytes:         kafkaconn.DefaultMaxRecordBytes,
		MaxBatchBytes:          kafkaconn.DefaultMaxBatchBytes,
		BufferBytes:            DefaultBufferBytes,
		DedupeWindow:           5 * time.Minute,
		App:                    "default",
	}
}

// FieldError is a configuration error: Field is at fault, Msg says why,
// naming the Related fields, if any, at its end ("must differ from" Topic
// and DLQTopic). Callers that read configuration from elsewhere (flags,
// the environment) render it with their own names for the fields.
type FieldError struct {
	Field   string
	Msg     string
	Related []string
}

func (e *FieldError) Error() string {
	return "consumer: " + e.Field + " " + e.Msg + JoinAnd(e.Related)
}

// JoinAnd joins names as "a", "a and b" or "a, b and c", after a space.
func JoinAnd(names []string) string {
	switch len(names) {
	case 0:
		return ""
	case 1:
		return " " + names[0]
	}
	return " " + strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// ValidateTopics checks the topic rules alone: each topic set differs
// from the others.
func (c *Config) ValidateTopics() error {
	slot := c.SlotTopicOrDefault()
	switch {
	case c.Topic == "":
		return &FieldError{Field: "Topic", Msg: "is required"}
	case c.DLQTopic == c.Topic:
		return &FieldError{Field: "DLQTopic", Msg: "must differ from", Related: []string{"Topic"}}
	case c.UrgentTopic != "" && (c.UrgentTopic == c.Topic || c.UrgentTopic == c.DLQTopic):
		return &FieldError{Field: "UrgentTopic", Msg: "must differ from", Related: []string{"Topic", "DLQTopic"}}
	case c.ReceiptTopic != "" && (c.ReceiptTopic == c.Topic || c.ReceiptTopic == c.DLQTopic || c.ReceiptTopic == c.UrgentTopic):
		return &FieldError{Field: "ReceiptTopic", Msg: "must differ from", Related: []string{"Topic", "DLQTopic", "UrgentTopic"}}
	case slot == c.Topic || slot == c.DLQTopic || slot == c.UrgentTopic || slot == c.ReceiptTopic:
		return &FieldError{Field: "SlotTopic", Msg: "must differ from", Related: []string{"Topic", "DLQTopic", "UrgentTopic", "ReceiptTopic"}}
	}
	if d := c.DeliveredTopicOrDefault(); d != DeliveredOff &&
		(d == c.Topic || d == c.DLQTopic || d == c.UrgentTopic || d == c.ReceiptTopic || d == slot) {
		return &FieldError{Field: "DeliveredTopic", Msg: "must differ from",
			Related: []string{"Topic", "DLQTopic", "UrgentTopic", "ReceiptTopic", "SlotTopic"}}
	}
	return nil
}

// DeliveredTopicOrDefault is DeliveredTopic, or its default: the source
// topic's name plus ".delivered".
func (c *Config) DeliveredTopicOrDefault() string {
	if c.DeliveredTopic == "" {
		return c.Topic + ".delivered"
	}
	return c.DeliveredTopic
}

// SlotTopicOrDefault is SlotTopic, or its default: the source topic's
// name plus ".slots".
func (c *Config) SlotTopicOrDefault() string {
	if c.SlotTopic == "" {
		return c.Topic + ".slots"
	}
	return c.SlotTopic
}

// limits are MaxRecordBytes, MaxBatchBytes and BufferBytes, each zero
// one at its default (a batch at least a record, a buffer at least two).
func (c *Config) limits() (record, batch int, buffer int64) {
	d := DefaultConfig()
	record, batch, buffer = c.MaxRecordBytes, c.MaxBatchBytes, c.BufferBytes
	if record == 0 {
		record = d.MaxRecordBytes
	}
	if batch == 0 {
		batch = max(d.MaxBatchBytes, record)
	}
	if buffer == 0 {
		buffer = max(d.BufferBytes, 2*int64(record))
	}
	return record, batch, buffer
}

// ValidateLimits checks MaxRecordBytes, MaxBatchBytes and BufferBytes
// against each other, their defaults filled in.
func (c *Config) ValidateLimits() error {
	record, batch, buffer := c.limits()
	switch {
	case record < 1<<10:
		return &FieldError{Field: "MaxRecordBytes", Msg: "must be at least 1024 bytes"}
	case batch < record:
		return &FieldError{Field: "MaxBatchBytes", Msg: "must be at least", Related: []string{"MaxRecordBytes"}}
	case buffer < 2*int64(record):
		return &FieldError{Field: "BufferBytes", Msg: "must be at least twice", Related: []string{"MaxRecordBytes"}}
	}
	return nil
}

// ValidateGroupInstanceID checks a GroupInstanceID: empty, or Kafka's rule
// for names (at most 249 of a-z, A-Z, 0-9, '.', '_', '-').
func ValidateGroupInstanceID(id string) error {
	bad := len(id) > 249
	for _, r := range id {
		bad = bad || !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	}
	if bad {
		return &FieldError{Field: "GroupInstanceID", Msg: "must be at most 249 characters of a-z, A-Z, 0-9, '.', '_' and '-'"}
	}
	return nil
}

// ValidateMergeMaxBytes checks a MergeMaxBytes.
func ValidateMergeMaxBytes(n int) error {
	if n < MinMergeMaxBytes || n > sender.MaxBodyBytes {
		return &FieldError{Field: "MergeMaxBytes", Msg: fmt.Sprintf("must be a number of bytes between %d and %d", MinMergeMaxBytes, sender.MaxBodyBytes)}
	}
	return nil
}

// Validate checks the configuration; an error is a *FieldError naming the
// offending field.
func (c *Config) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return &FieldError{Field: "Brokers", Msg: "is required"}
	case c.GroupID == "":
		return &FieldError{Field: "GroupID", Msg: "is required"}
	case c.DLQTopic == "":
		return &FieldError{Field: "DLQTopic", Msg: "is required"}
	case c.StartOffset != 0 && c.StartOffset != kafka.FirstOffset && c.StartOffset != kafka.LastOffset:
		return &FieldError{Field: "StartOffset", Msg: "must be kafka.FirstOffset or kafka.LastOffset"}
	case c.DedupeWindow < 0:
		return &FieldError{Field: "DedupeWindow", Msg: "must not be negative"}
	case len(c.App) > 64 || strings.ContainsAny(c.App, "/ \t\n"):
		return &FieldError{Field: "App", Msg: "must be at most 64 bytes without '/' or spaces"}
	}
	if err := c.ValidateTopics(); err != nil {
		return err
	}
	if err := ValidateGroupInstanceID(c.GroupInstanceID); err != nil {
		return err
	}
	if c.MergeMaxBytes != 0 {
		if err := ValidateMergeMaxBytes(c.MergeMaxBytes); err != nil {
			return err
		}
	}
	if err := c.ValidateLimits(); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"MaxWait", c.MaxWait}, {"SessionTimeout", c.SessionTimeout}, {"HeartbeatInterval", c.HeartbeatInterval},
		{"RebalanceTimeout", c.RebalanceTimeout}, {"JoinGroupBackoff", c.JoinGroupBackoff}, {"RevokeGrace", c.RevokeGrace},
		{"DrainTimeout", c.DrainTimeout}, {"PauseInitial", c.PauseInitial}, {"PauseMax", c.PauseMax}, {"StuckAfter", c.StuckAfter},
		{"RetryMaxElapsed", c.RetryMaxElapsed}, {"PartitionWatchInterval", c.PartitionWatchInterval},
		{"ScheduleRefresh", c.ScheduleRefresh}, {"CommitInterval", c.CommitInterval}} {
		if d.d < 0 {
			return &FieldError{Field: d.name, Msg: "must not be negative"}
		}
	}
	return c.ValidateTimeouts()
}

// ValidateTimeouts checks how the group's timeouts relate: heartbeats
// come more often than the session times out, and a member gives up a
// moved partition (RevokeGrace, then its commit and its rejoin) within the
// rebalance timeout; a member slower than that misses the rebalance, is
// dropped from the group and joins again, over and over. A zero
// HeartbeatInterval or RevokeGrace takes a default that fits the others
// (GroupTimeouts), so only values set on both sides can conflict.
func (c *Config) ValidateTimeouts() error {
	session, heartbeat, rebalance, grace := c.GroupTimeouts()
	if heartbeat >= session {
		return &FieldError{Field: "HeartbeatInterval", Msg: fmt.Sprintf("(%s) must be shorter than the session timeout (%s), a third of it is usual: lower it or raise", heartbeat, session),
			Related: []string{"SessionTimeout"}}
	}
	if grace*3 > rebalance*2 {
		return &FieldError{Field: "RevokeGrace", Msg: fmt.Sprintf("(%s) must be at most two thirds of the rebalance timeout (%s), "+
			"or a member still finishing a moved partition's call misses the rebalance and is dropped from the group: lower it or raise", grace, rebalance),
			Related: []string{"RebalanceTimeout"}}
	}
	return nil
}

// GroupTimeouts are the session timeout, heartbeat interval, rebalance
// timeout and revoke grace in effect: a zero takes its default, and the
// defaults of the heartbeat and the grace shrink to a third of the
// session and rebalance timeouts when those are set shorter.
func (c *Config) GroupTimeouts() (session, heartbeat, rebalance, grace time.Duration) {
	d := DefaultConfig()
	or := func(v, dv time.Duration) time.Duration {
		if v == 0 {
			return dv
		}
		return v
	}
	session, rebalance = or(c.SessionTimeout, d.SessionTimeout), or(c.RebalanceTimeout, d.RebalanceTimeout)
	heartbeat = or(c.HeartbeatInterval, min(d.HeartbeatInterval, session/3))
	grace = or(c.RevokeGrace, min(d.RevokeGrace, rebalance/3))
	return session, heartbeat, rebalance, grace
}

// DefaultAppsReload is how often the apps file is read again.
const DefaultAppsReload = 2 * time.Second

// setDefaults fills every zero field that has a default (DefaultConfig).
func (c *Config) setDefaults() {
	d := DefaultConfig()
	def := func(v *time.Duration, dv time.Duration) {
		if *v == 0 {
			*v = dv
		}
	}
	def(&c.MaxWait, d.MaxWait)
	def(&c.AppsReload, DefaultAppsReload)
	if c.StreamMaxRecords <= 0 {
		c.StreamMaxRecords = DefaultStreamMaxRecords
	}
	if c.StreamMaxBytes <= 0 {
		c.StreamMaxBytes = DefaultStreamMaxBytes
	}
	c.SessionTimeout, c.HeartbeatInterval, c.RebalanceTimeout, c.RevokeGrace = c.GroupTimeouts()
	def(&c.JoinGroupBackoff, d.JoinGroupBackoff)
	def(&c.DrainTimeout, d.DrainTimeout)
	def(&c.PauseInitial, d.PauseInitial)
	def(&c.PauseMax, d.PauseMax)
	def(&c.StuckAfter, d.StuckAfter)
	def(&c.PartitionWatchInterval, d.PartitionWatchInterval)
	def(&c.ScheduleRefresh, d.ScheduleRefresh)
	c.SlotTopic = c.SlotTopicOrDefault()
	c.DeliveredTopic = c.DeliveredTopicOrDefault()
	def(&c.DedupeWindow, d.DedupeWindow)
	if c.App == "" {
		c.App = d.App
	}
	if c.StartOffset == 0 {
		c.StartOffset = d.StartOffset
	}
	if c.MergeMaxBytes == 0 {
		c.MergeMaxBytes = d.MergeMaxBytes
	}
	c.MaxRecordBytes, c.MaxBatchBytes, c.BufferBytes = c.limits()
	if c.Dialer == nil {
		c.Dialer = kafka.DefaultDialer
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Outcome is the final outcome of one record (Config.OnOutcome).
type Outcome = call.Outcome

// App is one app (SDKAppID) the worker delivers to: several apps in one
// deployment (TIM_APPS_FILE), each its own Sender (key, region, standby),
// rate, call schedule and pause.
type App = apps.Spec

// RecordDecoder turns a record into an event (package decode): the
// worker's, and timbroadcast map's.
type RecordDecoder = decode.Decoder

// SchemaDecoder decodes record values in the Confluent Schema Registry
// wire format into JSON values (*schema.Decoder implements it).
type SchemaDecoder = decode.SchemaDecoder

// Sender sends one encoded message body, retrying as it sees fit; a failure
// is a *sender.Error. *sender.Client implements it.
type Sender = apps.Sender

// SlotSender is a Sender that can take a pacing slot first and decide what
// to send once it has it (merge mode). *sender.Client implements it.
type SlotSender = apps.SlotSender
