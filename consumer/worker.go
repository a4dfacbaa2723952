package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/propagation"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/apps"
	"github.com/timbroadcast/timbroadcast/consumer/call"
	"github.com/timbroadcast/timbroadcast/consumer/delivered"
	"github.com/timbroadcast/timbroadcast/consumer/group"
	"github.com/timbroadcast/timbroadcast/consumer/health"
	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
	"github.com/timbroadcast/timbroadcast/consumer/metrics"
	"github.com/timbroadcast/timbroadcast/consumer/offsets"
	"github.com/timbroadcast/timbroadcast/consumer/schedule"
	"github.com/timbroadcast/timbroadcast/consumer/sleep"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// Worker consumes the source topic in a consumer group and delivers each
// record through a Sender.
type Worker struct {
	cfg     Config
	apps    *apps.Set
	log     *zap.Logger
	metrics *metrics.Metrics
	conn    *kafkaconn.Conn
	client  offsets.Client
	member  *group.Member
	decoder RecordDecoder
	dlq     *kafka.Writer
	// receipts writes receipts; nil without a receipt topic.
	receipts *kafka.Writer
	// delivered is the delivered log; nil when off (DeliveredOff).
	delivered *delivered.Log
	tr        *call.Tracing
	// prop reads records' trace context (Config.Propagator); its headers,
	// traceHeaders, are copied to receipts.
	prop         propagation.TextMapPropagator
	traceHeaders []string
	holds        *health.Holds[topicPartition]
	// claims is the claims log every app's call schedule shares with the
	// group (each app its chain); nil when no app has a rate.
	claims  *schedule.Log
	fetcher *kafkaconn.Mux
	notes   health.Notes
	reads   *health.ReadFailures[topicPartition] // partitions whose reading fails, at their read offset
	// kafkaErr is the last group error (a failed join, say).
	kafkaErr atomic.Value

	joined atomic.Bool // a generation is active
	// released are the partitions of the last generation (Run's alone).
	released []topicPartition
	// live serves apps added to the apps file while running.
	live liveApps
}

// New returns a worker. It does not connect until Run.
func New(cfg Config, s Sender) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if s == nil && len(cfg.Apps) == 0 {
		return nil, errors.New("consumer: a Sender is required")
	}
	for _, a := range cfg.Apps {
		if a.Sender == nil {
			return nil, fmt.Errorf("consumer: app %s needs a Sender", a.Name)
		}
		if _, ok := a.Sender.(SlotSender); cfg.Merge && !ok {
			return nil, errors.New("consumer: merge mode needs a Sender that can reserve pacing slots (*sender.Client)")
		}
	}
	if _, ok := s.(SlotSender); s != nil && cfg.Merge && !ok {
		return nil, errors.New("consumer: merge mode needs a Sender that can reserve pacing slots (*sender.Client)")
	}
	cfg.setDefaults()
	conn := kafkaconn.New(cfg.Brokers, cfg.Dialer)
	conn.Balancer = cfg.Balancer
	conn.Limits = kafkaconn.Limits{MaxRecordBytes: cfg.MaxRecordBytes, MaxBatchBytes: cfg.MaxBatchBytes}
	dlq := conn.Writer(cfg.DLQTopic)
	dlq.BatchSize = 1 // each write is awaited before its commit: flush at once
	dlq.MaxAttempts = 10
	w := &Worker{
		cfg:     cfg,
		log:     cfg.Logger,
		metrics: cfg.Metrics,
		conn:    conn,
		dlq:     dlq,
		holds:   health.NewHolds(comparePartitions),
		reads:   health.NewReadFailures(comparePartitions),
		prop:    cfg.Propagator,
	}
	if w.prop == nil {
		w.prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	w.fetcher = conn.Mux(cfg.MaxWait, kafkaconn.NewBudget(cfg.BufferBytes))
	w.member = group.New(conn, group.Config{Group: cfg.GroupID, InstanceID: cfg.GroupInstanceID, Topics: w.topics(),
		SessionTimeout: cfg.SessionTimeout, RebalanceTimeout: cfg.RebalanceTimeout, HeartbeatInterval: cfg.HeartbeatInterval,
		Logger: cfg.Logger.Named("group")})
	w.decoder = RecordDecoder{Map: cfg.Map, Schemas: cfg.Schemas, OnPanic: func(v any, stack []byte) {
		w.log.Error("decoding a record panicked: the record is dead-lettered as decode_failed",
			zap.Any("panic", v), zap.ByteString("stack", stack))
	}}
	w.client = offsets.GroupClient{Client: conn.Client(), Member: w.member}
	w.traceHeaders = append([]string{}, w.prop.Fields()...) // OTEL_PROPAGATORS=none: copy none
	w.tr = call.NewTracing(cfg.TracerProvider, w.prop, cfg.GroupID, cfg.TraceLinkRecord)
	if cfg.ReceiptTopic != "" {
		// A call's receipts go out together, after at most a millisecond
		// of lingering (kafka-go flushes a batch when full or after
		// BatchTimeout; it allocates BatchSize messages per batch).
		w.receipts = conn.Writer(cfg.ReceiptTopic)
		w.receipts.BatchSize = 100
		w.receipts.BatchTimeout = time.Millisecond
		w.receipts.MaxAttempts = 10
	}
	if cfg.DeliveredTopic != DeliveredOff {
		w.delivered = delivered.New(conn, cfg.DeliveredTopic, cfg.GroupID, cfg.DedupeWindow, cfg.Logger.Named("delivered"))
	}
	specs := cfg.Apps
	w.apps = apps.NewSet()
	var defaultApp uint64
	if len(specs) == 0 {
		id, _ := strconv.ParseUint(cfg.App, 10, 64) // "default" (no SDKAppID): 0, records naming no app
		specs, defaultApp = []App{{SDKAppID: id, Sender: s, Rate: cfg.AppRate}}, id
	}
	for _, a := range specs {
		if a.Paced() {
			w.claims = schedule.NewLog(schedule.LogConfig{Store: schedule.NewKafkaLog(conn, cfg.SlotTopic), DefaultApp: defaultApp,
				Clock: cfg.ScheduleClock, Logger: cfg.Logger.Named("schedule")})
			break
		}
	}
	for _, spec := range specs {
		a, err := w.newApp(spec)
		if err != nil {
			return nil, err
		}
		w.apps.Add(a)
	}
	if len(cfg.Apps) == 0 {
		w.apps.Single = w.apps.All()[0]
		w.apps.Single.Key = cfg.App
	} else if cfg.DefaultApp != "" {
		if !w.apps.SetDefault(cfg.DefaultApp) {
			return nil, &FieldError{Field: "DefaultApp", Msg: fmt.Sprintf("%q is not one of the apps", cfg.DefaultApp)}
		}
	}
	if cfg.ReloadApps != nil && len(cfg.Apps) > 0 {
		w.apps.Reload = w.reloadApps
		w.live.last, w.live.lastDefault = cfg.Apps, cfg.DefaultApp
	}
	cfg.Metrics.BindUrgentTopic(cfg.UrgentTopic)
	cfg.Metrics.BindStuck(func() (int, time.Duration) {
		lines, longest := w.holds.Stuck(w.cfg.Now(), w.cfg.StuckAfter)
		return len(lines), longest
	})
	return w, nil
}

// newApp builds an app's call schedule (its pause gate and, with a rate,
// its chain in the claims log).
func (w *Worker) newApp(spec App) (*apps.App, error) {
	a := apps.New(spec, strconv.FormatUint(spec.SDKAppID, 10))
	obs := metrics.Schedule{M: w.metrics}
	if len(w.cfg.Apps) > 0 {
		obs.App = a.Label
	}
	sc := schedule.Config{App: spec.SDKAppID, Rate: spec.Rate, Refresh: w.cfg.ScheduleRefresh, PauseInitial: w.cfg.PauseInitial,
		PauseMax: w.cfg.PauseMax, Logger: w.cfg.Logger.Named("schedule"), Observer: obs}
	if a.Paced() {
		sc.Log = w.claims
	}
	if ss, ok := spec.Sender.(SlotSender); ok {
		sc.Pace = ss.Reserve // no rate: the Sender's own pacing
	}
	sched, err := schedule.New(sc)
	if err != nil {
		return nil, fmt.Errorf("consumer: app %s: %w", a.Label, err)
	}
	a.Sched = sched
	if len(w.cfg.Apps) > 0 {
		a.Serve()
	}
	return a, nil
}

// Ready reports whether the worker is in a consumer-group generation, not
// paused and not stuck, with the reasons when it is not.
func (w *Worker) Ready() (bool, string) {
	if !w.joined.Load() {
		why := "not in a consumer-group generation"
		if e, ok := w.kafkaErr.Load().(string); ok && e != "" {
			why += " (last Kafka error: " + e + ")"
		}
		return false, readyText([]string{why})
	}
	var why, held []string
	why = append(why, w.reads.Lines(w.cfg.Now(), w.cfg.StuckAfter)...)
	if w.claims != nil {
		if err := w.claims.Err(); err != nil {
			why = append(why, fmt.Sprintf("the claims log (KAFKA_SLOT_TOPIC %s) is unusable, so no call can be granted: %v", w.cfg.SlotTopic, err))
		}
	}
	all := w.apps.All()
	var paused []string
	for _, a := range all {
		name := ""
		if w.apps.Single == nil {
			name = "app " + a.Label + ": "
		}
		if p, since, cause := a.Sched.Paused(); p {
			paused = append(paused, fmt.Sprintf("%spaused since %s: %v", name, since.UTC().Format(time.RFC3339), cause))
		}
		if h, ok := a.Sched.Held(); ok {
			// On purpose: the worker is healthy, so still ready.
			held = append(held, "note: "+name+holdLine(h))
		}
	}
	if len(paused) == len(all) {
		why = append(why, paused...) // nothing can be sent
	} else {
		// Another app delivers: the worker is working.
		for _, p := range paused {
			held = append(held, "note: "+p)
		}
	}
	if s := w.stuckSummary(); s != "" {
		why = append(why, s)
	}
	notes := w.notes.All()
	for i, n := range notes {
		notes[i] = "note: " + n
	}
	w.live.mu.Lock()
	if p := w.live.problem; p != "" {
		notes = append(notes, "note: the apps file cannot be read again; serving the apps as read before: "+p)
	}
	w.live.mu.Unlock()
	if len(why) > 0 {
		return false, readyText(append(append(why, held...), notes...))
	}
	return true, readyText(append(append([]string{"ok"}, held...), notes...))
}

// readyText joins /readyz lines, each bounded and its control characters
// escaped (they carry outside text: registry answers, the claims log's
// pause records, Kafka errors), at most readyMaxLines of them.
func readyText(lines []string) string {
	const readyMaxLines, readyMaxLine = 50, 1024
	if n := len(lines); n > readyMaxLines {
		lines = append(lines[:readyMaxLines-1:readyMaxLines-1], fmt.Sprintf("... and %d more", n-readyMaxLines+1))
	}
	for i, l := range lines {
		lines[i] = wire.Cut(wire.Printable(l), readyMaxLine)
	}
	return strings.Join(lines, "\n")
}

// holdLine describes an operator's hold for people.
func holdLine(h schedule.Hold) string {
	until := "until resumed (timbroadcast resume)"
	if !h.Until.IsZero() {
		until = "until " + h.Until.UTC().Format(time.RFC3339)
	}
	line := fmt.Sprintf("paused by an operator (%s) since %s, %s", h.By, h.Since.UTC().Format(time.RFC3339), until)
	if h.Reason != "" {
		line += ": " + h.Reason
	}
	return line
}

// Held returns the operator's hold in force of the first app (the one
// app without an apps file), if any (timbroadcast pause).
func (w *Worker) Held() (schedule.Hold, bool) { return w.apps.All()[0].Sched.Held() }

// Paused reports whether sending is paused for every app.
func (w *Worker) Paused() bool {
	for _, a := range w.apps.All() {
		if p, _, _ := a.Sched.Paused(); !p {
			return false
		}
	}
	return true
}

// watchPartitions returns true when a source topic's partition count
// changes (the leader then rejoins, so the group rebalances and assigns
// them); otherwise it runs until the generation ends and returns false.
func (w *Worker) watchPartitions(genCtx context.Context) bool {
	counts := func() (map[string]int, error) {
		byTopic, err := w.member.Partitions(genCtx, w.topics())
		if err != nil {
			return nil, err
		}
		out := map[string]int{}
		for t, ids := range byTopic {
			out[t] = len(ids)
		}
		return out, nil
	}
	var base map[string]int
	t := time.NewTicker(w.cfg.PartitionWatchInterval)
	defer t.Stop()
	for {
		if now, err := counts(); err == nil {
			if base == nil {
				base = now
			}
			for topic, n := range now {
				if n != base[topic] {
					w.log.Info("partitions changed: rebalancing the group", zap.String("topic", topic),
						zap.Int("from", base[topic]), zap.Int("to", n))
					return true
				}
			}
		}
		select {
		case <-genCtx.Done():
			return false
		case <-t.C:
		}
	}
}

// partitions reads the partitions of the source topics (bulk, urgent),
// as the cluster has them now.
func (w *Worker) partitions(ctx context.Context) (all, urgent []schedule.Partition, err error) {
	byTopic, err := w.member.Partitions(ctx, w.topics())
	if err != nil {
		return nil, nil, err
	}
	for _, t := range w.topics() {
		for _, id := range byTopic[t] {
			if t != w.cfg.UrgentTopic {
				all = append(all, schedule.Partition{Topic: t, Partition: id})
			} else {
				urgent = append(urgent, schedule.Partition{Topic: t, Partition: id})
			}
		}
	}
	return all, urgent, nil
}

// topics returns the source topics: the bulk topics, then the urgent one.
func (w *Worker) topics() []string {
	out := []string{w.cfg.Topic}
	for _, t := range w.cfg.Topics {
		if !slices.Contains(out, t) && t != w.cfg.UrgentTopic {
			out = append(out, t)
		}
	}
	if w.cfg.UrgentTopic != "" {
		out = append(out, w.cfg.UrgentTopic)
	}
	return out
}

// checkTopics verifies that the source and dead-letter topics exist, naming
// the missing one.
func (w *Worker) checkTopics(ctx context.Context) error {
	topics := append(w.topics(), w.cfg.DLQTopic)
	if w.cfg.ReceiptTopic != "" {
		topics = append(topics, w.cfg.ReceiptTopic)
	}
	if w.claims != nil {
		if err := schedule.EnsureLog(ctx, w.conn, w.cfg.SlotTopic, w.log); err != nil {
			return fmt.Errorf("consumer: %w", err)
		}
	}
	if w.delivered != nil {
		if err := w.delivered.Check(ctx); err != nil {
			return err
		}
	} else {
		w.log.Warn("the delivered log is off (KAFKA_DELIVERED_TOPIC=off): a new group id, offsets reset or expired, or a second " +
			"deployment on this topic shows again every event delivered more than five minutes before")
	}
	md, err := w.client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return fmt.Errorf("consumer: read metadata from %v: %w", w.cfg.Brokers, err)
	}
	for _, t := range md.Topics {
		if t.Error != nil || len(t.Partitions) == 0 {
			what := "source topic (KAFKA_TOPIC)"
			switch t.Name {
			case w.cfg.DLQTopic:
				what = "dead-letter topic (KAFKA_DLQ_TOPIC)"
			case w.cfg.UrgentTopic:
				what = "urgent topic (KAFKA_URGENT_TOPIC)"
			case w.cfg.ReceiptTopic:
				what = "receipt topic (KAFKA_RECEIPT_TOPIC)"
			}
			return fmt.Errorf("consumer: %s %q is not usable on %v: %v", what, t.Name, w.cfg.Brokers, t.Error)
		}
	}
	return nil
}

// Run consumes until ctx ends, then drains: the in-flight send of each
// partition finishes (bounded by DrainTimeout), final outcomes are
// committed, and the group is left (a static member keeps its place). It
// returns nil after a clean drain, and an error wrapping ErrFenced when
// another process joined with this member's GroupInstanceID.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.checkTopics(ctx); err != nil {
		if ctx.Err() != nil {
			// Stopped while checking (SIGTERM at start): nothing began,
			// nothing to drain; the check did not fail.
			w.log.Info("consumer stopped before it started", zap.NamedError("check", err))
			return nil
		}
		return err
	}
	var scheduleAndFetch sync.WaitGroup // the call schedule and the fetch mux, stopped after the drain
	schedCtx, stopSchedule := context.WithCancel(context.Background())
	defer stopSchedule()
	if w.claims != nil {
		scheduleAndFetch.Go(func() { w.claims.Run(schedCtx) })
	}
	w.live.mu.Lock()
	for _, a := range w.apps.All() {
		scheduleAndFetch.Go(func() { a.Sched.Run(schedCtx) })
	}
	w.live.start = func(a *apps.App) { scheduleAndFetch.Go(func() { a.Sched.Run(schedCtx) }) }
	w.live.mu.Unlock()
	if w.apps.Reload != nil && w.cfg.AppsReload > 0 {
		scheduleAndFetch.Go(func() { w.watchApps(schedCtx) })
	}
	scheduleAndFetch.Go(func() { w.fetcher.Run(schedCtx) })
	var fatal error
	for ctx.Err() == nil {
		gen, err := w.member.Join(ctx)
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, ErrFenced):
			fatal = err
		case err != nil:
			w.joined.Store(false)
			w.kafkaErr.Store(err.Error())
			w.log.Warn("joining the consumer group failed; retrying", zap.Error(err), zap.Duration("in", w.cfg.JoinGroupBackoff))
			_ = sleep.For(ctx, w.cfg.JoinGroupBackoff)
			continue
		default:
			fatal = w.runGeneration(ctx, gen)
		}
		if fatal != nil {
			break
		}
	}
	w.live.mu.Lock()
	w.live.start = nil // no schedule starts once they are awaited
	w.live.mu.Unlock()
	stopSchedule()
	scheduleAndFetch.Wait()
	w.joined.Store(false)
	w.metrics.SetAssigned(0, metricsPartitions(w.released))
	if fatal == nil {
		w.member.Leave(context.Background())
	}
	w.member.Close()
	var err error
	if cerr := w.dlq.Close(); cerr != nil {
		err = fmt.Errorf("consumer: close dead-letter writer: %w", cerr)
	}
	if w.receipts != nil {
		if cerr := w.receipts.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("consumer: close receipt writer: %w", cerr)
		}
	}
	if w.delivered != nil {
		if cerr := w.delivered.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("consumer: close delivered log writer: %w", cerr)
		}
	}
	if fatal != nil {
		w.log.Error("stopped: another process joined the group with this member's group instance id", zap.Error(fatal),
			zap.String("group_instance_id", w.cfg.GroupInstanceID))
		return fmt.Errorf("consumer: group instance id %q: %w", w.cfg.GroupInstanceID, fatal)
	}
	if w.cfg.GroupInstanceID != "" {
		w.log.Info("consumer stopped; static member: its partitions wait for it until the session timeout")
	} else {
		w.log.Info("consumer stopped; group left")
	}
	return err
}

// runGeneration consumes the partitions gen assigned until the generation
// ends (a rebalance, a lost generation, the leader seeing new partitions)
// or ctx ends; then every partition has drained and returned. It returns
// ErrFenced when that ended the generation.
func (w *Worker) runGeneration(ctx context.Context, gen *group.Generation) error {
	var parts []topicPartition
	for _, topic := range w.topics() {
		for _, p := range gen.Assigned[topic] {
			parts = append(parts, topicPartition{topic: topic, partition: p})
		}
	}
	w.metrics.SetAssigned(len(parts), metricsPartitions(w.released))
	w.released = parts
	if w.claims != nil {
		all, urgent, err := w.partitions(ctx)
		if err != nil {
			w.log.Warn("cannot read the source topics' partitions; the call schedule keeps the last ones", zap.Error(err))
		}
		mine := make([]schedule.Partition, len(parts))
		for i, tp := range parts {
			mine[i] = tp.sched()
		}
		w.live.setView(all, urgent, mine, err == nil)
		for _, a := range w.apps.All() {
			if !a.Sched.Paced() {
				continue
			}
			if err == nil {
				a.Sched.SetView(all, urgent)
			}
			a.Sched.SetMine(mine)
		}
	}
	w.joined.Store(true)
	w.kafkaErr.Store("")
	w.log.Info("joined consumer group generation", zap.Int32("generation", gen.ID), zap.String("member", gen.MemberID),
		zap.Bool("leader", gen.Leader), zap.Stringers("partitions", parts))

	// The generation's context outlives ctx: at shutdown the partitions
	// drain and commit while heartbeats go on.
	genCtx, end := context.WithCancelCause(context.Background())
	defer end(nil)
	var heartbeatAndWatch sync.WaitGroup // heartbeats and the partition watch
	heartbeatAndWatch.Go(func() {
		if err := w.member.Heartbeats(genCtx, gen); err != nil {
			end(err)
		}
	})
	if gen.Leader {
		heartbeatAndWatch.Go(func() {
			if w.watchPartitions(genCtx) {
				end(errPartitionsChanged)
			}
		})
	}
	var partitions sync.WaitGroup
	for _, tp := range parts {
		partitions.Go(func() {
			if err := w.newPartition(ctx, genCtx, gen, tp).run(); err != nil {
				end(err)
			}
		})
	}
	partitions.Wait()
	if w.claims != nil {
		// The calls made alone are in the claims log before the member
		// rejoins, so the members that take its partitions over place
		// their first calls after them.
		fctx, cancel := context.WithTimeout(context.Background(), claimsFlushTimeout)
		w.claims.Flush(fctx)
		cancel()
	}
	cause := context.Cause(genCtx)
	end(nil)
	heartbeatAndWatch.Wait()
	w.joined.Store(false)
	if cause != nil && !errors.Is(cause, context.Canceled) {
		w.log.Info("the generation ended; rejoining", zap.Int32("generation", gen.ID), zap.NamedError("cause", cause))
	}
	if errors.Is(cause, ErrFenced) {
		return ErrFenced
	}
	return nil
}

// claimsFlushTimeout bounds how long a member whose generation ended waits
// for its claims log records to be appended before it rejoins.
const claimsFlushTimeout = 2 * time.Second

// ErrFenced says another process joined the group with this member's
// group instance id: two replicas share the id. The worker stops; it never
// rejoins in a loop against the other.
var ErrFenced = group.ErrFenced

// errPartitionsChanged ends the leader's generation when a topic's
// partition count changed, so the group rebalances and assigns them.
var errPartitionsChanged = errors.New("a source topic's partition count changed")

// stuckSummary is the readiness text for stuck partitions, or "".
func (w *Worker) stuckSummary() string {
	lines, _ := w.holds.Stuck(w.cfg.Now(), w.cfg.StuckAfter)
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "; ") + fmt.Sprintf(" (longer than TIM_STUCK_AFTER=%s)", w.cfg.StuckAfter)
}
