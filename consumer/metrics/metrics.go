// Package metrics holds the worker's Prometheus metrics: what every
// part of it counts, with a bounded set of label values (per app: the
// apps file's names). A nil *Metrics records nothing.
package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/timbroadcast/timbroadcast/consumer/schedule"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

// Metrics are the worker's Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	consumed        *prometheus.CounterVec
	outcomes        *prometheus.CounterVec
	requests        *prometheus.CounterVec
	retries         prometheus.Counter
	deadLettered    *prometheus.CounterVec
	paused          prometheus.Gauge
	held            *prometheus.GaugeVec
	pacingWait      prometheus.Histogram
	apiLatency      prometheus.Histogram
	commitTime      prometheus.Histogram
	lag             *prometheus.GaugeVec
	lastSuccess     prometheus.Gauge
	assigned        prometheus.Gauge
	share           prometheus.Gauge
	rate            prometheus.Gauge
	skipped         *prometheus.CounterVec
	watermarkResets *prometheus.CounterVec
	truncated       prometheus.Counter
	receipts        *prometheus.CounterVec
	receiptFailures prometheus.Counter
	receiptWrite    prometheus.Histogram
	fetchErrors     *prometheus.CounterVec
	commitErrors    *prometheus.CounterVec
	grants          *prometheus.CounterVec

	stuckFn atomic.Pointer[func() (int, time.Duration)]

	// Per app (several apps: the apps file's names, so bounded), few
	// series each: events by outcome, paused, the last call's time.
	appEvents   *prometheus.CounterVec
	appPaused   *prometheus.GaugeVec
	appLastCall *prometheus.GaugeVec
	appOldest   *prometheus.GaugeVec
	appsFile    prometheus.Gauge

	laneEvents  *prometheus.CounterVec
	laneWaiting *prometheus.GaugeVec
	urgentDelay prometheus.Histogram
	urgentTopic atomic.Pointer[string]
	lagMu       sync.Mutex
	lagByTP     map[string]map[int]int64 // topic -> partition -> lag
}

// New creates the worker's metrics and registers them with reg.
func New(reg prometheus.Registerer) *Metrics {
	latency := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &Metrics{
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "timbroadcast_records_consumed_total", Help: "Records fetched from the source topics.",
		}, []string{"topic", "partition"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "timbroadcast_events_total", Help: "Events by final outcome: delivered, dead_lettered.",
		}, []string{"outcome"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "timbroadcast_api_requests_total", Help: "send_broadcast_msg HTTP attempts by result (ok, error, network) and API error code.",
		}, []string{"result", "code"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "timbroadcast_api_retries_total", Help: "send_broadcast_msg attempts that were retries of an earlier one.",
		}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "timbroadcast_dead_lettered_total", Help: "Records written to the dead-letter topic, by reason.",
		}, []string{"reason"}),
		paused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "timbroadcast_paused", Help: "1 while sending is paused on an error every event would hit.",
		}),
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "timbroadcast_operator_paused",
			Help: "1 while an operator holds the app's calls (timbroadcast pause), labelled with who, why and until when " +
				"(RFC 3339, or \"resumed\": until timbroadcast resume). No series when not paused.",
		}, []string{"by", "reason", "until"}),
		pacingWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "timbroadcast_pacing_wait_seconds", Help: "Time each attempt waited for its pacing slot.", Buckets: latency,
		}),
		apiLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "timbroadcast_api_request_duration_seconds", Help: "send_broadcast_msg HTTP request latency.", Buckets: latency,
		}),
		commitTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "timbroadcast_commit_duration_seconds", Help: "Offset commit latency.", Buckets: latency,
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "timbroadcast_consumer_lag_records", Help: "Records behind the partition's high watermark, per owned partition.",
		}, []string{"topic", "partition"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "timbroadcast_last_success_timestamp_seconds", Help: "Unix time of the last successful send.",
		}),
		assigned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "timbroadcast_assigned_partitions", Help: "Partitions this worker owns in the current generation.",
		}),
		share: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "timbroadcast_rate_share_ratio", Help: "This member's share of the app's recent calls (the claims log's recent grants); 1 when it owns every partition.",
		}),
		rate: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "timbroadcast_effective_rate_calls_per_second", Help: "The pacing rate in force: the share of TIM_RATE, lowered after 10023 answers.",
		}),
	}
	m.grants = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "timbroadcast_slot_grants_total",
		Help: "This member's grants from the claims log, by use: used (a call left), unused (its caller had gone), skipped (left unused after a 10023), forfeited (read back more than half a period late).",
	}, []string{"use"})
	m.skipped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "timbroadcast_records_skipped_total",
		Help: "Offsets passed over without delivery, by reason: retention (deleted before delivery), log_truncated (committed offset beyond the log end), aborted_transaction, transaction_marker, filtered (the mapping output nothing), already_delivered (below what the delivered log says was delivered: committed, not sent).",
	}, []string{"reason"})
	m.fetchErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "timbroadcast_fetch_errors_total", Help: "Fetch requests that failed, by error.",
	}, []string{"error"})
	m.truncated = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "timbroadcast_dead_letters_truncated_total", Help: "Dead-letter records written as a truncated copy because the full one was too large.",
	})
	m.commitErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "timbroadcast_commit_failures_total", Help: "Offset commits the broker refused, by error (each retried while the partition holds; a lost generation is not counted).",
	}, []string{"error"})
	m.watermarkResets = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "timbroadcast_delivered_log_resets_total",
		Help: "Delivered-log entries that did not apply at a session start, by reason: topic_recreated (the source topic's id changed) or log_truncated (the log ended below the entry: lowered to the log end).",
	}, []string{"reason"})
	reg.MustRegister(m.skipped, m.fetchErrors, m.truncated, m.commitErrors, m.watermarkResets)
	m.receipts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "timbroadcast_receipts_total", Help: "Receipts written to the receipt topic, by outcome (delivered, dead_lettered).",
	}, []string{"outcome"})
	m.receiptFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "timbroadcast_receipt_write_failures_total", Help: "Receipt writes the receipt topic refused (each retried; the offset waits).",
	})
	m.receiptWrite = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "timbroadcast_receipt_write_seconds", Help: "Time to write a call's receipts, acknowledged by all in-sync replicas, retries included.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	reg.MustRegister(m.receipts, m.receiptFailures, m.receiptWrite)
	m.laneEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "timbroadcast_lane_events_total", Help: "Events by lane (urgent, bulk) and final outcome (delivered, dead_lettered, already_delivered).",
	}, []string{"lane", "outcome"})
	m.laneWaiting = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "timbroadcast_lane_waiting_records", Help: "Records waiting in this member's partitions, by lane.",
	}, []string{"lane"})
	m.urgentDelay = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "timbroadcast_urgent_delay_seconds", Help: "Time from producing an urgent event to the API call that delivered it.",
		Buckets: []float64{.05, .1, .25, .5, .75, 1, 1.5, 2, 3, 5, 10, 30},
	})
	m.lagByTP = map[string]map[int]int64{}
	reg.MustRegister(m.laneEvents, m.laneWaiting, m.urgentDelay)
	stuckCount := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "timbroadcast_stuck_partitions", Help: "Partitions failing on one record (send retried, dead-letter, receipt or commit refused) for longer than TIM_STUCK_AFTER.",
	}, func() float64 { n, _ := m.stuck(); return float64(n) })
	longest := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "timbroadcast_longest_failing_seconds", Help: "How long the partition failing the longest on one record has been failing; 0 when none is.",
	}, func() float64 { _, d := m.stuck(); return d.Seconds() })
	reg.MustRegister(stuckCount, longest)
	m.appEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "timbroadcast_app_events_total",
		Help: "Events by app (TIM_APPS_FILE) and final outcome: delivered, dead_lettered, filtered, already_delivered.",
	}, []string{"app", "outcome"})
	m.appPaused = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "timbroadcast_app_paused", Help: "1 while an app's sending is paused by an error every event would meet (TIM_APPS_FILE).",
	}, []string{"app"})
	m.appLastCall = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "timbroadcast_app_last_call_timestamp_seconds", Help: "When an app's last call answered OK (Unix seconds; TIM_APPS_FILE).",
	}, []string{"app"})
	m.appOldest = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "timbroadcast_app_oldest_waiting_timestamp_seconds",
		Help: "The record timestamp (Unix seconds) of an app's oldest record this worker has read and not yet settled; no series while none waits (TIM_APPS_FILE). time() minus it is how far the app is behind.",
	}, []string{"app"})
	m.appsFile = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "timbroadcast_apps_file_valid",
		Help: "0 while the apps file (TIM_APPS_FILE) cannot be read again (the apps as read before are served), 1 otherwise.",
	})
	m.appsFile.Set(1)
	reg.MustRegister(m.appEvents, m.appPaused, m.appLastCall, m.appOldest, m.appsFile)
	reg.MustRegister(m.consumed, m.outcomes, m.requests, m.retries, m.deadLettered, m.paused, m.held,
		m.pacingWait, m.apiLatency, m.commitTime, m.lag, m.lastSuccess, m.assigned, m.share, m.rate, m.grants)
	// The label values known in advance start at 0, so dashboards and
	// alerts see a series (0) before the first event, not an absent one.
	for _, o := range []string{"delivered", "dead_lettered"} {
		m.outcomes.WithLabelValues(o)
		m.laneEvents.WithLabelValues("bulk", o)
	}
	for _, o := range []string{"delivered", "dead_lettered", "filtered"} {
		m.receipts.WithLabelValues(o)
	}
	for _, r := range []string{"retention", "log_truncated", "aborted_transaction", "transaction_marker", "filtered"} {
		m.skipped.WithLabelValues(r)
	}
	m.laneWaiting.WithLabelValues("bulk")
	return m
}

// ObserveAttempt records one API attempt; pass it as sender.Config.Observe.
func (m *Metrics) ObserveAttempt(a sender.Attempt) {
	if m == nil {
		return
	}
	switch {
	case a.Err != nil || a.Code < 0 && a.HTTPStatus == 0:
		m.requests.WithLabelValues("network", "").Inc()
	case a.HTTPStatus != 200:
		m.requests.WithLabelValues("http_"+strconv.Itoa(a.HTTPStatus), "").Inc()
	case a.Code == 0:
		m.requests.WithLabelValues("ok", "0").Inc()
	default:
		m.requests.WithLabelValues("error", strconv.Itoa(a.Code)).Inc()
	}
	m.pacingWait.Observe(a.PacingWait.Seconds())
	if a.Rate > 0 {
		m.rate.Set(a.Rate)
	}
	if a.Latency > 0 {
		m.apiLatency.Observe(a.Latency.Seconds())
	}
}

// RecordConsumed counts a record fetched at offset and shows its
// partition's lag below highWater.
func (m *Metrics) RecordConsumed(topic string, partition int, offset, highWater int64) {
	if m == nil {
		return
	}
	p := strconv.Itoa(partition)
	m.consumed.WithLabelValues(topic, p).Inc()
	if highWater > 0 {
		lag := max(highWater-offset-1, 0)
		m.lag.WithLabelValues(topic, p).Set(float64(lag))
		m.setLag(topic, partition, lag)
	}
}

// setLag records a partition's lag and updates its lane's total (lag < 0
// forgets the partition).
func (m *Metrics) setLag(topic string, partition int, lag int64) {
	m.lagMu.Lock()
	defer m.lagMu.Unlock()
	if m.lagByTP[topic] == nil {
		m.lagByTP[topic] = map[int]int64{}
	}
	if lag < 0 {
		delete(m.lagByTP[topic], partition)
	} else {
		m.lagByTP[topic][partition] = lag
	}
	total := int64(0)
	for _, l := range m.lagByTP[topic] {
		total += l
	}
	m.laneWaiting.WithLabelValues(m.lane(topic)).Set(float64(total))
}

// BindUrgentTopic names the urgent lane's topic.
func (m *Metrics) BindUrgentTopic(topic string) {
	if m != nil {
		m.urgentTopic.Store(&topic)
	}
}

func (m *Metrics) lane(topic string) string {
	if u := m.urgentTopic.Load(); u != nil && *u != "" && *u == topic {
		return "urgent"
	}
	return "bulk"
}

// RecordLane counts a final outcome in its lane.
func (m *Metrics) RecordLane(topic, outcome string) {
	if m != nil {
		m.laneEvents.WithLabelValues(m.lane(topic), outcome).Inc()
	}
}

// ObserveUrgentDelay records the produce-to-call delay of an urgent event.
func (m *Metrics) ObserveUrgentDelay(d time.Duration) {
	if m != nil {
		m.urgentDelay.Observe(d.Seconds())
	}
}

// RecordDelivered counts events delivered and marks the last success.
func (m *Metrics) RecordDelivered(events int) {
	if m == nil {
		return
	}
	m.outcomes.WithLabelValues("delivered").Add(float64(events))
	m.lastSuccess.Set(float64(time.Now().UnixNano()) / 1e9)
}

// RecordRetries counts the attempts of one call beyond the first.
func (m *Metrics) RecordRetries(attempts int) {
	if m == nil || attempts <= 1 {
		return
	}
	m.retries.Add(float64(attempts - 1))
}

// RecordDeadLettered counts an event dead-lettered for reason.
func (m *Metrics) RecordDeadLettered(reason string) {
	if m == nil {
		return
	}
	m.outcomes.WithLabelValues("dead_lettered").Inc()
	m.deadLettered.WithLabelValues(reason).Inc()
}

// SetHeld shows an operator's hold: one series while held, none after.
func (m *Metrics) SetHeld(held bool, h schedule.Hold) {
	if m == nil {
		return
	}
	m.held.Reset()
	if !held {
		return
	}
	until := "resumed"
	if !h.Until.IsZero() {
		until = h.Until.UTC().Format(time.RFC3339)
	}
	m.held.WithLabelValues(wire.Cut(h.By, 128), wire.Cut(h.Reason, 128), until).Set(1)
}

// SetAppPaused shows whether app's sending is paused.
func (m *Metrics) SetAppPaused(app string, p bool) {
	if m == nil {
		return
	}
	v := 0.0
	if p {
		v = 1
	}
	m.appPaused.WithLabelValues(app).Set(v)
}

// RecordAppEvents counts n events of app with outcome; "" app (one app
// without an apps file) is not counted per app.
func (m *Metrics) RecordAppEvents(app, outcome string, n int) {
	if m == nil || app == "" || n == 0 {
		return
	}
	m.appEvents.WithLabelValues(app, outcome).Add(float64(n))
}

// SetAppLastCall records when app's last call answered OK.
func (m *Metrics) SetAppLastCall(app string, t time.Time) {
	if m == nil || app == "" {
		return
	}
	m.appLastCall.WithLabelValues(app).Set(float64(t.UnixNano()) / 1e9)
}

// SetAppsFileValid shows whether the apps file was read again.
func (m *Metrics) SetAppsFileValid(ok bool) {
	if m == nil {
		return
	}
	v := 0.0
	if ok {
		v = 1
	}
	m.appsFile.Set(v)
}

// SetAppOldestWaiting shows the timestamp of app's oldest record without
// an outcome; zero removes the series (nothing waits).
func (m *Metrics) SetAppOldestWaiting(app string, t time.Time) {
	if m == nil || app == "" {
		return
	}
	if t.IsZero() {
		m.appOldest.DeleteLabelValues(app)
		return
	}
	m.appOldest.WithLabelValues(app).Set(float64(t.UnixNano()) / 1e9)
}

// SetPaused shows whether the one app's sending is paused.
func (m *Metrics) SetPaused(p bool) {
	if m == nil {
		return
	}
	if p {
		m.paused.Set(1)
	} else {
		m.paused.Set(0)
	}
}

// ObserveCommit records how long an offset commit took.
func (m *Metrics) ObserveCommit(d time.Duration) {
	if m == nil {
		return
	}
	m.commitTime.Observe(d.Seconds())
}

// RecordCommitFailure counts an offset commit refused, by what refused it.
func (m *Metrics) RecordCommitFailure(what string) {
	if m != nil {
		m.commitErrors.WithLabelValues(what).Inc()
	}
}

// SetAssigned shows the partitions owned now (n) and forgets the lag of
// those released.
func (m *Metrics) SetAssigned(n int, released []Partition) {
	if m == nil {
		return
	}
	m.assigned.Set(float64(n))
	for _, tp := range released {
		m.lag.DeleteLabelValues(tp.Topic, strconv.Itoa(tp.Partition))
		m.setLag(tp.Topic, tp.Partition, -1)
	}
}

// Partition names a partition whose series are forgotten (SetAssigned).
type Partition struct {
	Topic     string
	Partition int
}

// RecordSlot counts a call schedule grant by its use.
func (m *Metrics) RecordSlot(use string) {
	if m != nil {
		m.grants.WithLabelValues(use).Inc()
	}
}

// SetShare shows this member's share of the app's rate.
func (m *Metrics) SetShare(s float64) {
	if m != nil {
		m.share.Set(s)
	}
}

// SetRate shows the rate this member paces its calls to.
func (m *Metrics) SetRate(r float64) {
	if m != nil {
		m.rate.Set(r)
	}
}

// Schedule shows what an app's call schedule does (schedule.Observer).
type Schedule struct {
	M   *Metrics
	App string // "" without an apps file
}

// Paused shows whether the app's sending is paused.
func (o Schedule) Paused(p bool) {
	if o.App != "" {
		o.M.SetAppPaused(o.App, p)
		return
	}
	o.M.SetPaused(p)
}

// Held shows an operator's hold.
func (o Schedule) Held(held bool, h schedule.Hold) {
	o.M.SetHeld(held, h)
}

// Slot counts a grant by its use.
func (o Schedule) Slot(use string) { o.M.RecordSlot(use) }

// Share shows the member's share and rate.
func (o Schedule) Share(share, rate float64) {
	o.M.SetShare(share)
	o.M.SetRate(rate)
}

// BindStuck sets where the stuck gauges read from.
func (m *Metrics) BindStuck(f func() (int, time.Duration)) {
	if m != nil {
		m.stuckFn.Store(&f)
	}
}

func (m *Metrics) stuck() (int, time.Duration) {
	if f := m.stuckFn.Load(); f != nil {
		return (*f)()
	}
	return 0, 0
}

// RecordSkipped counts n offsets skipped for reason.
func (m *Metrics) RecordSkipped(reason string, n int64) {
	if m != nil && n > 0 {
		m.skipped.WithLabelValues(reason).Add(float64(n))
	}
}

// RecordWatermarkReset counts a delivered-log entry that did not apply
// (topic_recreated) or was lowered (log_truncated).
func (m *Metrics) RecordWatermarkReset(reason string) {
	if m != nil {
		m.watermarkResets.WithLabelValues(reason).Inc()
	}
}

// RecordFetchError counts a failed fetch by what failed.
func (m *Metrics) RecordFetchError(what string) {
	if m != nil {
		m.fetchErrors.WithLabelValues(what).Inc()
	}
}

// RecordDeadLetterTruncated counts a dead letter written with its
// value cut to fit.
func (m *Metrics) RecordDeadLetterTruncated() {
	if m != nil {
		m.truncated.Inc()
	}
}

// RecordReceipt counts a receipt written, by its outcome.
func (m *Metrics) RecordReceipt(outcome string) {
	if m != nil {
		m.receipts.WithLabelValues(outcome).Inc()
	}
}

// RecordReceiptFailure counts a receipt write that failed.
func (m *Metrics) RecordReceiptFailure() {
	if m != nil {
		m.receiptFailures.Inc()
	}
}

// ObserveReceiptWrite records how long a receipt write took.
func (m *Metrics) ObserveReceiptWrite(d time.Duration) {
	if m != nil {
		m.receiptWrite.Observe(d.Seconds())
	}
}
