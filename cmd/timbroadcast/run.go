package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
	"github.com/timbroadcast/timbroadcast/consumer/metrics"
	"github.com/timbroadcast/timbroadcast/consumer/schema"
	"github.com/timbroadcast/timbroadcast/sender"
)

// runCmd is `timbroadcast run`: the worker.
type runCmd struct {
	consumer consumer.Config
	sender   sender.Config
	// httpAddr serves /metrics, /healthz and /readyz; empty disables it.
	httpAddr string
	// pprof also serves /debug/pprof/ there.
	pprof   bool
	logger  *zap.Logger
	tracing *tracingSettings
	mapping *mappingSettings
	// scrub knows the secrets, for what /readyz serves.
	scrub *scrubWriter
	// apps is the apps file (TIM_APPS_FILE); nil: one app.
	apps *runApps
	kafkaAccess
}

func (c *runCmd) secrets() []string {
	return append(append([]string{c.sender.SecretKey}, c.kafkaAccess.secrets()...), c.mapping.secrets()...)
}

// parseRun resolves the run command's settings.
func parseRun(p process, args []string) (*runCmd, error) {
	s := p.settings("run")
	tr := addTracingSettings(s, p)
	k := addKafkaSettings(s, "")
	t := addTopicSettings(s, "topic of broadcast events", "dead-letter topic")
	ws := addWorkerSettings(s)
	a := addAPISettings(s)
	ms := addMappingSettings(s)
	receipts := s.add("receipt-topic", "KAFKA_RECEIPT_TOPIC", "", "topic receiving a receipt per final outcome of every event (optional)")
	slots := s.add("slot-topic", "KAFKA_SLOT_TOPIC", "<topic>.slots", "claims log the replicas space their calls by (one partition; created when missing)")
	delivered := s.add("delivered-topic", "KAFKA_DELIVERED_TOPIC", "<topic>.delivered", "delivered log: what was delivered, kept outside the "+
		"consumer group, so a new group id or offsets reset or expired never show an event again (compacted, one partition; created "+
		"when missing); off turns it off (README \"Delivery guarantees\")")
	dedupeWindow := s.add("dedupe-window", "TIM_DEDUPE_WINDOW", durationDefault(sender.DefaultConfig().DedupeWindow),
		"how long the server discards a resend of an event (documented: five minutes); after an attempt whose answer never came, "+
			"retries are made only within it")
	unknownOutcome := s.add("unknown-outcome", "TIM_UNKNOWN_OUTCOME", "dead-letter", "what happens once TIM_DEDUPE_WINDOW has passed "+
		"since an attempt whose answer never came: dead-letter (reason outcome_unknown) or resend (it may be shown twice)")
	httpAddr := s.add("http-addr", "HTTP_ADDR", ":9090", "address serving /metrics, /healthz and /readyz; 'off' disables it")
	pprofOn := s.add("http-pprof", "HTTP_PPROF", "off", "on: also serve Go's profiles at /debug/pprof/ on HTTP_ADDR (heap, goroutines, CPU)")
	recordContext := s.add("trace-record-context", "TIM_TRACE_RECORD_CONTEXT", "parent", "parent: a record's trace context is its event span's "+
		"parent, and a parent-based sampler follows the producer's decision; link: it is a link, and the worker's sampler alone decides")
	appsFileSetting := s.add("apps-file", "TIM_APPS_FILE", "", "several apps in one deployment: the YAML apps file (README \"Several apps\"), "+
		"instead of TIM_SDKAPPID, TIM_ADMIN and the key")
	appsReload := s.add("apps-reload", "TIM_APPS_RELOAD", durationDefault(consumer.DefaultAppsReload),
		"how often the apps file (TIM_APPS_FILE) is read again: apps added, changed or removed are served accordingly; off: only when a record names an app the worker lacks")
	if err := s.parse(args); err != nil {
		return nil, err
	}
	c := &runCmd{logger: p.logger, mapping: ms}
	if appsReload.String() == "off" {
		c.consumer.AppsReload = -1
	} else if d, err := appsReload.duration(); err != nil || d < 10*time.Millisecond {
		return nil, appsReload.errorf("%q is not a duration of at least 10ms such as 2s, or off", appsReload.val)
	} else {
		c.consumer.AppsReload = d
	}
	appsPath := strings.TrimSpace(appsFileSetting.String())
	var appsFile *appsFile
	if appsPath != "" {
		if err := appsEnvConflict(p.getenv); err != nil {
			return nil, err
		}
		var err error
		if appsFile, err = loadAppsFile(appsPath); err != nil {
			return nil, err
		}
	}
	c.scrub, _ = p.stderr.(*scrubWriter)
	var err error
	if c.kafkaAccess, err = k.access(p.logger); err != nil {
		return nil, err
	}
	c.consumer.Brokers, c.consumer.Dialer, c.consumer.Balancer = c.conn.Brokers, c.conn.Dialer, c.conn.Balancer
	if appsFile != nil && t.topic.String() == "" && len(appsFile.Apps[0].Topics) > 0 {
		t.topic.val = appsFile.Apps[0].Topics[0] // the apps' own topics are the source topics
	}
	if topics := t.topic.list(); len(topics) > 1 {
		// KAFKA_TOPIC lists several: the first names the defaults.
		t.topic.val, c.consumer.Topics = topics[0], topics[1:]
	}
	if c.consumer.Topic, c.consumer.DLQTopic, err = t.resolve(); err != nil {
		return nil, err
	}
	if c.consumer.UrgentTopic, err = t.urgentTopic(c.consumer.Topic, c.consumer.DLQTopic); err != nil {
		return nil, err
	}
	if c.consumer.ReceiptTopic, err = receiptTopic(receipts, c.consumer); err != nil {
		return nil, err
	}
	if c.consumer.SlotTopic, err = slotTopic(slots, c.consumer); err != nil {
		return nil, err
	}
	if c.consumer.DeliveredTopic, err = deliveredTopic(delivered, c.consumer); err != nil {
		return nil, err
	}
	if err := ws.config(&c.consumer); err != nil {
		return nil, err
	}
	d, err := ms.resolve()
	if err != nil {
		return nil, err
	}
	c.consumer.Map, c.consumer.Schemas = d.Map, d.Schemas
	if c.tracing, err = tr.resolve(); err != nil {
		return nil, err
	}
	switch recordContext.String() {
	case "parent":
	case "link":
		c.consumer.TraceLinkRecord = true
	default:
		return nil, recordContext.errorf("%q must be parent or link", recordContext.val)
	}
	if appsPath != "" {
		if c.sender, err = a.shared(); err != nil {
			return nil, err
		}
	} else {
		if c.sender, err = a.config(); err != nil {
			return nil, err
		}
		if err := a.creds.watchKey(p, &c.sender); err != nil {
			return nil, err
		}
		c.consumer.App = strconv.Itoa(c.sender.AppID)
	}
	if c.sender.DedupeWindow, err = dedupeWindow.duration(); err != nil {
		return nil, err
	}
	c.consumer.DedupeWindow = c.sender.DedupeWindow
	if c.sender.UnknownOutcome, err = sender.ParseUnknownPolicy(unknownOutcome.String()); err != nil {
		return nil, unknownOutcome.errorf("%q must be dead-letter or resend", unknownOutcome.val)
	}
	if err := c.sender.Validate(); err != nil && appsPath == "" {
		return nil, dedupeWindow.errorf("%v (TIM_ATTEMPT_TIMEOUT is %s)", err, c.sender.AttemptTimeout)
	}
	// The client hands a send back once it has been retried this long, so
	// the worker can give it up.
	c.sender.MaxElapsed = c.consumer.RetryMaxElapsed
	if appsPath != "" {
		if c.apps, err = resolveApps(appsPath, appsFile, c.sender, p.learnSecret); err != nil {
			return nil, err
		}
		for _, topic := range c.apps.topics() {
			if topic != c.consumer.Topic && !slices.Contains(c.consumer.Topics, topic) {
				c.consumer.Topics = append(c.consumer.Topics, topic)
			}
		}
		c.consumer.DefaultApp = c.apps.file.DefaultApp
		if c.consumer.DeliveredTopic == consumer.DeliveredOff {
			return nil, delivered.errorf("off with TIM_APPS_FILE: with several apps, what one app delivered while another " +
				"was paused is known after a restart only through the delivered log; leave it on")
		}
	}
	if c.pprof, err = pprofOn.on(); err != nil {
		return nil, err
	}
	c.httpAddr = httpAddr.String()
	if c.httpAddr == "off" {
		c.httpAddr = ""
	}
	return c, nil
}

// Run runs the worker until ctx ends, then drains.
func (c *runCmd) Run(ctx context.Context) error {
	if err := c.check(ctx); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mx := metrics.New(reg)
	registerBuildInfo(reg)

	scfg := c.sender
	scfg.Logger = c.logger.Named("sender")
	scfg.Observe = mx.ObserveAttempt
	ccfg := c.consumer
	var client consumer.Sender
	var err error
	if c.apps != nil {
		ac := &appClients{ra: c.apps, log: c.logger, observe: mx.ObserveAttempt}
		defer ac.close()
		if ccfg.Apps, err = ac.all(); err != nil {
			return err
		}
		ccfg.ReloadApps = ac.reload
	} else {
		one, err := sender.New(scfg)
		if err != nil {
			return err
		}
		defer one.Close()
		client = one
		ccfg.AppRate = scfg.Rate // replicas split it by partition share
	}
	ccfg.Logger = c.logger.Named("consumer")
	ccfg.Metrics = mx
	tp, stopTracing, err := c.tracing.start(ctx, c.logger)
	if err != nil {
		return err
	}
	defer stopTracing()
	ccfg.TracerProvider, ccfg.Propagator = tp, c.tracing.propagator
	w, err := consumer.New(ccfg, client)
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	pctx, stopProcs := context.WithCancel(ctx)
	defer stopProcs()
	if p := newProcs(c.logger.Named("procs")); p != nil {
		wg.Go(func() { p.run(pctx) })
	}
	addr := ""
	if c.httpAddr != "" {
		srv, l, err := serveHTTP(c.httpAddr, c.pprof, reg, w, c.scrub.text, c.logger, &wg)
		if err != nil {
			return err
		}
		addr = l.String()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}
	c.logger.Info("timbroadcast worker starting", zap.String("version", version),
		zap.Strings("brokers", ccfg.Brokers), zap.String("topic", ccfg.Topic), zap.String("group", ccfg.GroupID),
		zap.String("dlq_topic", ccfg.DLQTopic), zap.String("urgent_topic", ccfg.UrgentTopic), zap.String("receipt_topic", ccfg.ReceiptTopic), zap.String("slot_topic", ccfg.SlotTopic), zap.Bool("tracing", tp != nil), zap.Strings("endpoints", scfg.Endpoints), zap.Float64("rate", scfg.Rate),
		zap.Int("sdkappid", scfg.AppID), zap.Int("apps", len(ccfg.Apps)), zap.Strings("topics", ccfg.Topics), zap.Bool("merge", ccfg.Merge), zap.String("group_instance_id", ccfg.GroupInstanceID),
		zap.Bool("mapping", ccfg.Map != nil), zap.Bool("schema_registry", ccfg.Schemas != nil),
		zap.String("http_addr", addr), zap.Strings("left_out_of_build", leftOut()))
	if err := w.Run(ctx); errors.Is(err, consumer.ErrFenced) {
		return configError{fmt.Errorf("KAFKA_GROUP_INSTANCE_ID (--group-instance-id): %q is in use by another process that joined "+
			"the group after this one: each replica needs its own id (%w)", ccfg.GroupInstanceID, err)}
	} else if err != nil {
		return err
	}
	return nil
}

// leftOut names the parts this build leaves out (the tags lean, nootlp,
// nomskiam, noprotobuf, noembedded).
func leftOut() []string {
	out := []string{}
	for _, p := range []struct {
		name  string
		built bool
	}{{"otlp", otlpBuilt}, {"aws_msk_iam", kafkaconn.MSKIAMBuilt}, {"protobuf_schemas", schema.ProtobufBuilt}, {"embedded_broker", embeddedBuilt}} {
		if !p.built {
			out = append(out, p.name)
		}
	}
	return out
}

// maxProfile is the longest CPU profile /debug/pprof/profile takes.
const maxProfile = 30 * time.Second

// serveProfile serves Go's profiles at /debug/pprof/NAME (heap, allocs,
// goroutine, block, mutex, threadcreate; ?debug=1 for text) and a CPU
// profile at /debug/pprof/profile?seconds=N, for go tool pprof. (Written
// on runtime/pprof alone: net/http/pprof costs the binary about 2 MB of
// resident pages, measured with BenchmarkPeakRSS.)
func serveProfile(rw http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/debug/pprof/")
	debug, _ := strconv.Atoi(r.URL.Query().Get("debug"))
	if name == "profile" {
		secs, err := strconv.Atoi(r.URL.Query().Get("seconds"))
		if err != nil || secs <= 0 {
			secs = 30
		}
		secs = min(secs, int(maxProfile/time.Second)) // a profile cannot hold the server for hours
		rw.Header().Set("Content-Type", "application/octet-stream")
		if err := pprof.StartCPUProfile(rw); err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		select {
		case <-time.After(time.Duration(secs) * time.Second):
		case <-r.Context().Done():
		}
		pprof.StopCPUProfile()
		return
	}
	p := pprof.Lookup(name)
	if p == nil {
		var names []string
		for _, p := range pprof.Profiles() {
			names = append(names, p.Name())
		}
		http.Error(rw, fmt.Sprintf("unknown profile %q; known: profile (CPU, ?seconds=N), %s", name, strings.Join(names, ", ")),
			http.StatusNotFound)
		return
	}
	if debug == 0 {
		rw.Header().Set("Content-Type", "application/octet-stream")
	}
	_ = p.WriteTo(rw, debug)
}

// serveHTTP serves /metrics, /healthz and /readyz (and with withPprof
// /debug/pprof/) on addr until the returned server is shut down; wg owns
// the serving goroutine.
//
// Its limits: a request's headers within 5 s, the whole request within
// 10 s, an answer within a minute (a CPU profile is at most maxProfile),
// idle connections closed after two minutes. /readyz serves the worker's
// reasons (each bounded, control characters escaped, by the consumer)
// with every secret scrubbed.
func serveHTTP(addr string, withPprof bool, reg *prometheus.Registry, w *consumer.Worker, scrub func(string) string,
	log *zap.Logger, wg *sync.WaitGroup) (*http.Server, net.Addr, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(rw, "ok")
	})
	mux.HandleFunc("/readyz", func(rw http.ResponseWriter, _ *http.Request) {
		ready, why := w.Ready()
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rw.Header().Set("X-Content-Type-Options", "nosniff")
		if !ready {
			rw.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = fmt.Fprintln(rw, scrub(why))
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", serveProfile)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, configError{fmt.Errorf("HTTP_ADDR (--http-addr): listen on %s: %w", addr, err)}
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: maxProfile + 30*time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	wg.Go(func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server failed", zap.Error(err))
		}
	})
	return srv, l.Addr(), nil
}
