// Package consumer owns Kafka for timbroadcast: consumer-group membership,
// per-partition order, offset commits, the dead-letter producer, rebalances
// and shutdown. It turns each record into an event, hands it to a Sender,
// and commits the record's offset only once its outcome is final: the API
// answered OK, or the dead-letter write was acknowledged by all in-sync
// replicas.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/sender"
)

// Sender sends one encoded message body, retrying as it sees fit; a failure
// is a *sender.Error. *sender.Client implements it.
type Sender interface {
	SendBody(ctx context.Context, body []byte) (*sender.Response, error)
}

// SlotSender is a Sender that can take a pacing slot first and decide what
// to send once it has it (merge mode). *sender.Client implements it.
type SlotSender interface {
	Sender
	Reserve(ctx context.Context) error
	SendBodyReserved(ctx context.Context, body []byte) (*sender.Response, error)
}

// RateSetter is a Sender whose pacing rate can change. *sender.Client
// implements it.
type RateSetter interface {
	SetRate(callsPerSecond float64)
	Rate() float64
}

// Config configures a Worker.
type Config struct {
	// Brokers are the bootstrap brokers (host:port). Required.
	Brokers []string
	// Topic is the source topic. Required.
	Topic string
	// GroupID is the consumer group. Required.
	GroupID string
	// DLQTopic is the dead-letter topic. Required; must differ from Topic.
	DLQTopic string
	// Dialer dials the brokers (TLS, SASL); default kafka.DefaultDialer.
	Dialer *kafka.Dialer

	// MaxWait is how long a fetch waits at the broker for new records; it
	// bounds nothing on the delivery path (a fetch answers as soon as a
	// record arrives). Default 500ms.
	MaxWait time.Duration
	// SessionTimeout, HeartbeatInterval and RebalanceTimeout are the group
	// protocol's; defaults 10s, 1s, 15s.
	SessionTimeout, HeartbeatInterval, RebalanceTimeout time.Duration
	// JoinGroupBackoff is the wait after a failed join; default 1s.
	JoinGroupBackoff time.Duration
	// RevokeGrace is how long an in-flight send may go on after its
	// partition was revoked; default 3s. An abandoned send is not
	// committed; the next owner resends it with the same Random.
	RevokeGrace time.Duration
	// DrainTimeout bounds the in-flight send at shutdown; default 10s.
	DrainTimeout time.Duration
	// PauseInitial and PauseMax bound the backoff between probes while
	// paused; defaults 5s and 5m.
	PauseInitial, PauseMax time.Duration
	// StartOffset is where a partition without a committed offset starts:
	// kafka.FirstOffset (default) or kafka.LastOffset.
	StartOffset int64

	// Logger is the worker's logger; default none.
	Logger *zap.Logger
	// Metrics records the worker's metrics; nil records none.
	Metrics *Metrics
	// Now is the clock (for expiry); default time.Now.
	Now func() time.Time
	// OnOutcome, if set, is called with every record's final outcome,
	// before its offset is committed.
	OnOutcome func(Outcome)

	// AppRate is the app's call rate for all replicas together (TIM_RATE).
	// When set and the Sender is a RateSetter, this member paces at
	// AppRate × its share of the topic's partitions, recomputed on every
	// rebalance, so replicas in one group together stay within AppRate.
	AppRate float64

	// Merge packs the events waiting at the head of a partition into one
	// call when a pacing slot opens (see README "Merge mode"). The Sender
	// must then also be a SlotSender.
	Merge bool
	// MergeMaxBytes caps a merged request body; default and maximum
	// sender.MaxBodyBytes.
	MergeMaxBytes int
}

// Outcome is the final outcome of one record.
type Outcome struct {
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	// Produced is the record's timestamp.
	Produced time.Time
	// Random is the message identity sent (0 if the record never decoded).
	Random uint32
	// Message is the decoded message; nil if the record never decoded.
	Message *sender.Message
	// Delivered is true when the API answered OK.
	Delivered bool
	// MsgSeq is the API's MsgSeq for a delivered message.
	MsgSeq uint64
	// Attempts is the number of API requests made.
	Attempts int
	// DeadLetter is the failure for a dead-lettered record.
	DeadLetter *Failure
}

// Validate checks the configuration and names the offending setting.
func (c *Config) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("consumer: Brokers is required")
	case c.Topic == "":
		return errors.New("consumer: Topic is required")
	case c.GroupID == "":
		return errors.New("consumer: GroupID is required")
	case c.DLQTopic == "":
		return errors.New("consumer: DLQTopic is required")
	case c.DLQTopic == c.Topic:
		return errors.New("consumer: DLQTopic must differ from Topic")
	case c.MergeMaxBytes < 0 || c.MergeMaxBytes > sender.MaxBodyBytes:
		return fmt.Errorf("consumer: MergeMaxBytes must be between 1 and %d", sender.MaxBodyBytes)
	case c.StartOffset != 0 && c.StartOffset != kafka.FirstOffset && c.StartOffset != kafka.LastOffset:
		return errors.New("consumer: StartOffset must be kafka.FirstOffset or kafka.LastOffset")
	}
	for _, d := range []time.Duration{c.MaxWait, c.SessionTimeout, c.HeartbeatInterval, c.RebalanceTimeout,
		c.JoinGroupBackoff, c.RevokeGrace, c.DrainTimeout, c.PauseInitial, c.PauseMax} {
		if d < 0 {
			return errors.New("consumer: durations must not be negative")
		}
	}
	return nil
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.MaxWait, 500*time.Millisecond)
	def(&c.SessionTimeout, 10*time.Second)
	def(&c.HeartbeatInterval, time.Second)
	def(&c.RebalanceTimeout, 15*time.Second)
	def(&c.JoinGroupBackoff, time.Second)
	def(&c.RevokeGrace, 3*time.Second)
	def(&c.DrainTimeout, 10*time.Second)
	def(&c.PauseInitial, 5*time.Second)
	def(&c.PauseMax, 5*time.Minute)
	if c.StartOffset == 0 {
		c.StartOffset = kafka.FirstOffset
	}
	if c.MergeMaxBytes == 0 {
		c.MergeMaxBytes = sender.MaxBodyBytes
	}
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

// Worker consumes the source topic in a consumer group and delivers each
// record through a Sender.
type Worker struct {
	cfg     Config
	send    Sender
	log     *zap.Logger
	metrics *Metrics
	gate    *gate
	dlq     *kafka.Writer
	client  *kafka.Client

	joined atomic.Bool // a generation is active
}

// New returns a worker. It does not connect until Run.
func New(cfg Config, s Sender) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if s == nil {
		return nil, errors.New("consumer: a Sender is required")
	}
	if _, ok := s.(SlotSender); cfg.Merge && !ok {
		return nil, errors.New("consumer: merge mode needs a Sender that can reserve pacing slots (*sender.Client)")
	}
	cfg.setDefaults()
	transport := &kafka.Transport{
		Dial:     cfg.Dialer.DialFunc,
		SASL:     cfg.Dialer.SASLMechanism,
		TLS:      cfg.Dialer.TLS,
		ClientID: "timbroadcast",
	}
	w := &Worker{
		cfg:     cfg,
		send:    s,
		log:     cfg.Logger,
		metrics: cfg.Metrics,
		client:  &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: transport, Timeout: 10 * time.Second},
		dlq: &kafka.Writer{
			Addr:         kafka.TCP(cfg.Brokers...),
			Topic:        cfg.DLQTopic,
			Balancer:     &kafka.Hash{},
			RequiredAcks: kafka.RequireAll,
			BatchSize:    1, // each write is awaited before its commit: flush at once
			MaxAttempts:  10,
			Transport:    transport,
		},
	}
	w.gate = newGate(cfg.PauseInitial, cfg.PauseMax, cfg.Metrics.setPaused)
	return w, nil
}

// Ready reports whether the worker is in a consumer-group generation and
// not paused, with a reason when it is not.
func (w *Worker) Ready() (bool, string) {
	if !w.joined.Load() {
		return false, "not in a consumer-group generation"
	}
	if paused, since, cause := w.gate.state(); paused {
		return false, fmt.Sprintf("paused since %s: %v", since.UTC().Format(time.RFC3339), cause)
	}
	return true, "ok"
}

// Paused reports whether sending is paused.
func (w *Worker) Paused() bool {
	p, _, _ := w.gate.state()
	return p
}

// CheckTopics verifies that the source and dead-letter topics exist, naming
// the missing one.
func (w *Worker) CheckTopics(ctx context.Context) error {
	md, err := w.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{w.cfg.Topic, w.cfg.DLQTopic}})
	if err != nil {
		return fmt.Errorf("consumer: read metadata from %v: %w", w.cfg.Brokers, err)
	}
	for _, t := range md.Topics {
		if t.Error != nil || len(t.Partitions) == 0 {
			what := "source topic (KAFKA_TOPIC)"
			if t.Name == w.cfg.DLQTopic {
				what = "dead-letter topic (KAFKA_DLQ_TOPIC)"
			}
			return fmt.Errorf("consumer: %s %q is not usable on %v: %v", what, t.Name, w.cfg.Brokers, t.Error)
		}
	}
	return nil
}

// Run consumes until ctx ends, then drains: the in-flight send of each
// partition finishes (bounded by DrainTimeout), final outcomes are
// committed, and the group is left. It returns nil after a clean drain.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.CheckTopics(ctx); err != nil {
		return err
	}
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                w.cfg.GroupID,
		Brokers:           w.cfg.Brokers,
		Dialer:            w.cfg.Dialer,
		Topics:            []string{w.cfg.Topic},
		HeartbeatInterval: w.cfg.HeartbeatInterval,
		SessionTimeout:    w.cfg.SessionTimeout,
		RebalanceTimeout:  w.cfg.RebalanceTimeout,
		JoinGroupBackoff:  w.cfg.JoinGroupBackoff,
		StartOffset:       w.cfg.StartOffset,
		Timeout:           10 * time.Second,
		ErrorLogger:       kafka.LoggerFunc(w.log.Sugar().Named("kafka").Debugf),
	})
	if err != nil {
		return fmt.Errorf("consumer: create consumer group: %w", err)
	}

	var wg sync.WaitGroup // every partition goroutine of every generation
	var released []int
	for {
		gen, err := cg.Next(ctx)
		if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
			break
		}
		if err != nil {
			w.joined.Store(false)
			w.log.Warn("consumer group generation failed; rejoining", zap.Error(err))
			continue
		}
		// The previous generation has ended: all its partition goroutines
		// returned before kafka-go let the next one begin.
		assigned := gen.Assignments[w.cfg.Topic]
		parts := make([]int, 0, len(assigned))
		for _, a := range assigned {
			parts = append(parts, a.ID)
		}
		w.metrics.setAssigned(len(assigned), released)
		released = parts
		w.applyShare(ctx, len(assigned))
		w.joined.Store(true)
		w.log.Info("joined consumer group generation",
			zap.Int32("generation", gen.ID), zap.String("member", gen.MemberID), zap.Ints("partitions", parts))
		for _, a := range assigned {
			wg.Add(1)
			gen.Start(func(genCtx context.Context) {
				defer wg.Done()
				w.consumePartition(ctx, genCtx, gen, a)
			})
		}
	}
	// Drain: partitions see ctx end, finish their in-flight send and
	// commit while the generation (and its heartbeats) still stand.
	wg.Wait()
	w.joined.Store(false)
	err = cg.Close() // ends the generation and leaves the group
	w.metrics.setAssigned(0, released)
	if cerr := w.dlq.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("consumer: close dead-letter writer: %w", cerr)
	}
	w.log.Info("consumer stopped; group left")
	return err
}

// applyShare paces this member at AppRate × owned / total partitions.
func (w *Worker) applyShare(ctx context.Context, owned int) {
	rs, ok := w.send.(RateSetter)
	if !ok || w.cfg.AppRate <= 0 {
		return
	}
	mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	md, err := w.client.Metadata(mctx, &kafka.MetadataRequest{Topics: []string{w.cfg.Topic}})
	if err != nil || len(md.Topics) != 1 || len(md.Topics[0].Partitions) == 0 {
		w.log.Warn("cannot read the topic's partition count; keeping the current rate", zap.Error(err))
		return
	}
	total := len(md.Topics[0].Partitions)
	share := float64(owned) / float64(total)
	w.metrics.setShare(share)
	if owned == 0 {
		w.log.Info("standby: no partitions in this generation")
		return
	}
	rs.SetRate(w.cfg.AppRate * share)
	w.metrics.setRate(rs.Rate())
	w.log.Info("pacing at this member's share of the app's rate",
		zap.Int("partitions", owned), zap.Int("of", total), zap.Float64("rate", rs.Rate()), zap.Float64("app_rate", w.cfg.AppRate))
}

// consumePartition delivers one partition's records in offset order for
// the life of a generation, or until stop ends.
func (w *Worker) consumePartition(stop, genCtx context.Context, gen *kafka.Generation, a kafka.PartitionAssignment) {
	log := w.log.With(zap.String("topic", w.cfg.Topic), zap.Int("partition", a.ID), zap.Int32("generation", gen.ID))

	// fetchCtx ends when the partition is revoked or the worker stops: no
	// record is taken after that. sendCtx outlives it by RevokeGrace or
	// DrainTimeout, so the in-flight send can finish and be committed.
	fetchCtx, cancelFetch := context.WithCancel(genCtx)
	defer cancelFetch()
	stopWatch := context.AfterFunc(stop, cancelFetch)
	defer stopWatch()
	sendCtx, cancelSend := context.WithCancel(context.Background())
	defer cancelSend()
	var watcher sync.WaitGroup
	watcher.Go(func() {
		select {
		case <-sendCtx.Done():
			return
		case <-fetchCtx.Done():
		}
		grace := w.cfg.RevokeGrace
		if stop.Err() != nil {
			grace = w.cfg.DrainTimeout
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-sendCtx.Done():
		case <-t.C:
			cancelSend()
		}
	})
	defer watcher.Wait()
	defer cancelSend()

	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:          w.cfg.Brokers,
		Topic:            w.cfg.Topic,
		Partition:        a.ID,
		Dialer:           w.cfg.Dialer,
		MinBytes:         1,
		MaxBytes:         10 << 20,
		MaxWait:          w.cfg.MaxWait,
		ReadBatchTimeout: w.cfg.MaxWait + 5*time.Second,
		ErrorLogger:      kafka.LoggerFunc(w.log.Sugar().Named("kafka").Debugf),
	})
	defer r.Close()
	if err := r.SetOffset(a.Offset); err != nil {
		log.Error("cannot set the start offset", zap.Int64("offset", a.Offset), zap.Error(err))
		return
	}
	log.Debug("partition assigned", zap.Int64("offset", a.Offset))

	// The pump hands fetched records over a channel, so merge mode can see
	// what is waiting without blocking. It stops with fetchCtx.
	records := make(chan kafka.Message, 64)
	var pump sync.WaitGroup
	pump.Go(func() {
		defer close(records)
		for {
			m, err := r.FetchMessage(fetchCtx)
			if fetchCtx.Err() != nil {
				return
			}
			if err != nil {
				log.Warn("fetch failed", zap.Error(err))
				continue
			}
			select {
			case records <- m:
			case <-fetchCtx.Done():
				return
			}
		}
	})
	defer pump.Wait()
	defer cancelFetch()

	p := &partition{w: w, gen: gen, id: a.ID, log: log, records: records, fetchCtx: fetchCtx, sendCtx: sendCtx}
	if err := p.resume(a.Offset); err != nil {
		log.Info("stopping the partition", zap.Error(err))
		return
	}
	for {
		var err error
		if w.cfg.Merge {
			err = p.mergeNext()
		} else {
			err = p.plainNext()
		}
		if err != nil {
			// Revoked, stopping, or the commit was refused: whatever is
			// not committed stays for the next owner, who resends it with
			// the same Random and bytes.
			log.Info("stopping the partition", zap.Error(err))
			return
		}
	}
}

// commit stores the next offset to read for a partition, in the given
// generation: the broker refuses it if the partition has moved on.
func (w *Worker) commit(gen *kafka.Generation, partition int, next int64, metadata string) error {
	start := time.Now()
	var err error
	for attempt := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var resp *kafka.OffsetCommitResponse
		resp, err = w.client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
			GroupID:      gen.GroupID,
			GenerationID: int(gen.ID),
			MemberID:     gen.MemberID,
			Topics:       map[string][]kafka.OffsetCommit{w.cfg.Topic: {{Partition: partition, Offset: next, Metadata: metadata}}},
		})
		cancel()
		if err == nil {
			for _, p := range resp.Topics[w.cfg.Topic] {
				if p.Error != nil {
					err = p.Error
				}
			}
		}
		if err == nil {
			w.metrics.observeCommit(time.Since(start))
			return nil
		}
		var kerr kafka.Error
		if errors.As(err, &kerr) && !kerr.Temporary() {
			return err // the generation is gone: IllegalGeneration, UnknownMemberId, ...
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
	return err
}

// member is one record of a call: the record and its decoded event.
type member struct {
	msg kafka.Message
	ev  *Event
}

// result is how a call for one or more members ended.
type result int

const (
	resultDelivered result = iota + 1
	resultRejected         // the API rejected the call: *sender.Error in hand
	resultExpired          // a lone, never-sent event expired before its turn
	resultAbandoned        // ctx ended first; nothing committed
)

// deliver sends body (the call for members) until the API answers OK or
// rejects it, holding through retries and pauses, and reports delivered
// members. reserved says the first attempt already holds a pacing slot.
func (w *Worker) deliver(ctx context.Context, log *zap.Logger, members []member, body []byte, reserved bool) (result, *sender.Error, int) {
	attempts := 0
	mayBeDelivered := false // a failed attempt may still have reached the server
	lone := members[0].ev
	for {
		if len(members) == 1 && !lone.ExpiresAt.IsZero() && !w.cfg.Now().Before(lone.ExpiresAt) && !mayBeDelivered {
			return resultExpired, nil, attempts
		}
		probe, err := w.gate.acquire(ctx)
		if err != nil {
			return resultAbandoned, nil, attempts
		}
		var resp *sender.Response
		if ss, ok := w.send.(SlotSender); ok && reserved {
			reserved = false
			resp, err = ss.SendBodyReserved(ctx, body)
		} else {
			resp, err = w.send.SendBody(ctx, body)
		}
		var se *sender.Error
		switch {
		case err == nil:
			attempts += resp.Attempts
			if probe {
				if d := w.gate.probeDone(true); d > 0 {
					log.Info("sending resumed", zap.Duration("paused_for", d))
				}
			}
			for _, m := range members {
				w.metrics.recordDelivered(1)
				w.report(m.msg, m.ev, Outcome{Delivered: true, MsgSeq: resp.MsgSeq, Attempts: attempts})
			}
			w.metrics.recordRetries(attempts)
			log.Debug("delivered", zap.Uint64("msg_seq", resp.MsgSeq), zap.Int("attempts", attempts), zap.Int("events", len(members)))
			return resultDelivered, nil, attempts
		case !errors.As(err, &se):
			// Not the sender's error type: treat as transient.
			if probe {
				w.gate.probeDone(false)
			}
			log.Warn("send failed", zap.Error(err))
			if ctx.Err() != nil {
				return resultAbandoned, nil, attempts
			}
			continue
		}
		attempts += se.Attempts
		switch se.Class {
		case sender.ClassReject:
			if probe {
				w.gate.probeDone(true)
			}
			return resultRejected, se, attempts
		case sender.ClassPause:
			wait, started := w.gate.pause(se)
			fields := []zap.Field{zap.Int("code", se.Code), zap.String("info", se.Info), zap.Duration("next_probe_in", wait)}
			if started {
				log.Error("sending paused: the API refuses every event this way; nothing is dead-lettered", fields...)
			} else if probe {
				log.Warn("still paused", fields...)
			}
		default: // ClassRetry: the retry budget or ctx ran out; hold the record.
			mayBeDelivered = true
			if probe {
				w.gate.probeDone(true)
			}
			if ctx.Err() != nil {
				return resultAbandoned, nil, attempts
			}
			log.Warn("send still failing; holding the partition", zap.Error(se))
		}
	}
}

// handle takes one record alone to its final outcome. It returns false
// when ctx ended first (the record stays uncommitted).
func (w *Worker) handle(ctx context.Context, log *zap.Logger, m kafka.Message) bool {
	log = log.With(zap.Int64("offset", m.Offset))
	ev, err := decodeMessage(m)
	if err != nil {
		var ie *InvalidEventError
		errors.As(err, &ie)
		return w.deadLetter(ctx, log, m, nil, Failure{Reason: ie.Reason, Code: ie.Code, Info: ie.Msg, Field: ie.Field})
	}
	log = log.With(zap.Uint32("random", ev.Message.Random))
	res, se, attempts := w.deliver(ctx, log, []member{{m, ev}}, ev.Body, false)
	switch res {
	case resultDelivered:
		return true
	case resultExpired, resultRejected:
		return w.deadLetter(ctx, log, m, ev, loneFailure(res, se, attempts, ev))
	}
	return false
}

// loneFailure is the dead-letter failure of a lone event that expired
// before its turn or that the API rejected.
func loneFailure(res result, se *sender.Error, attempts int, ev *Event) Failure {
	if res == resultExpired {
		return Failure{Reason: ReasonExpired, Random: ev.Message.Random,
			Info: "event expired at " + ev.ExpiresAt.UTC().Format(time.RFC3339) + " before its turn came"}
	}
	return Failure{Reason: se.Reason(), Code: se.Code, Info: se.Info, Field: se.Field, Attempts: attempts, Random: ev.Message.Random}
}

// decodeMessage decodes a Kafka record into an event.
func decodeMessage(m kafka.Message) (*Event, error) {
	return DecodeEvent(Record{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value, Headers: headerMap(m.Headers)})
}

// deadLetter writes m to the dead-letter topic and waits for the
// acknowledgement of all in-sync replicas. It returns false if ctx ended
// first.
func (w *Worker) deadLetter(ctx context.Context, log *zap.Logger, m kafka.Message, ev *Event, f Failure) bool {
	f.FailedAt = w.cfg.Now()
	msg := deadLetterMessage(m, f)
	for attempt := 1; ; attempt++ {
		err := w.dlq.WriteMessages(ctx, msg)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		log.Error("dead-letter write failed; retrying", zap.Int("attempt", attempt), zap.Error(err))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(min(time.Duration(attempt)*200*time.Millisecond, 5*time.Second)):
		}
	}
	w.metrics.recordDeadLettered(f.Reason)
	log.Warn("record dead-lettered", zap.String("reason", f.Reason), zap.Int("code", f.Code),
		zap.String("info", f.Info), zap.String("dlq_topic", w.cfg.DLQTopic))
	w.report(m, ev, Outcome{DeadLetter: &f, Attempts: f.Attempts})
	return true
}

// report passes a final outcome to Config.OnOutcome.
func (w *Worker) report(m kafka.Message, ev *Event, o Outcome) {
	if w.cfg.OnOutcome == nil {
		return
	}
	o.Topic, o.Partition, o.Offset, o.Key, o.Produced = m.Topic, m.Partition, m.Offset, m.Key, m.Time
	if ev != nil {
		o.Random = ev.Message.Random
		o.Message = &ev.Message
	}
	w.cfg.OnOutcome(o)
}
