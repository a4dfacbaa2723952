package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/sender"
)

// apiSettings are the TIM_* settings shared by the commands that call the
// API.
type apiSettings struct {
	appID, admin, key, keyFile, region, endpoint, rate  *setting
	attemptTimeout, retryInitial, retryMax, sigLifetime *setting
}

func addAPISettings(s *settings) *apiSettings {
	return &apiSettings{
		appID:          s.add("sdkappid", "TIM_SDKAPPID", "", "the app's SDKAppID"),
		admin:          s.add("admin", "TIM_ADMIN", "", "the app administrator's identifier"),
		key:            s.add("secret-key", "TIM_SECRET_KEY", "", "the app's secret key (prefer TIM_SECRET_KEY_FILE)"),
		keyFile:        s.add("secret-key-file", "TIM_SECRET_KEY_FILE", "", "file holding the app's secret key"),
		region:         s.add("region", "TIM_REGION", "", "API region: "+strings.Join(sender.RegionNames(), ", ")+" (standby domain used on failure)"),
		endpoint:       s.add("endpoint", "TIM_ENDPOINT", "", "explicit API base URL(s), comma-separated, primary first, e.g. http://127.0.0.1:8080 (instead of TIM_REGION)"),
		rate:           s.add("rate", "TIM_RATE", "1", "calls per second for the app, all replicas together (1 on Pro, 5 on Pro Plus and Enterprise)"),
		attemptTimeout: s.add("attempt-timeout", "TIM_ATTEMPT_TIMEOUT", "5s", "timeout of one HTTP request (the server's own is 3s)"),
		retryInitial:   s.add("retry-initial", "TIM_RETRY_INITIAL", "500ms", "first backoff between retries"),
		retryMax:       s.add("retry-max", "TIM_RETRY_MAX", "30s", "longest backoff between retries"),
		sigLifetime:    s.add("sig-lifetime", "TIM_SIG_LIFETIME", "24h", "lifetime of generated UserSigs (renewed at 80%)"),
	}
}

// config builds the sender configuration, naming the setting on error.
func (a *apiSettings) config() (sender.Config, error) {
	var cfg sender.Config
	appID, err := a.appID.required()
	if err != nil {
		return cfg, err
	}
	if _, err := fmt.Sscan(appID, &cfg.AppID); err != nil || cfg.AppID <= 0 {
		return cfg, a.appID.errorf("%q is not a positive number", appID)
	}
	if cfg.Admin, err = a.admin.required(); err != nil {
		return cfg, err
	}
	if cfg.SecretKey, err = secretKey(a.key, a.keyFile); err != nil {
		return cfg, err
	}
	switch {
	case a.region.String() != "" && a.endpoint.String() != "":
		return cfg, errors.New("TIM_REGION (--region) and TIM_ENDPOINT (--endpoint) are both set; set one")
	case a.region.String() != "":
		if cfg.Endpoints, err = sender.RegionEndpoints(a.region.String()); err != nil {
			return cfg, a.region.errorf("%v", err)
		}
	case a.endpoint.String() != "":
		cfg.Endpoints = a.endpoint.list()
	default:
		return cfg, errors.New("TIM_REGION (--region) or TIM_ENDPOINT (--endpoint) is required: the region of your app (" +
			strings.Join(sender.RegionNames(), ", ") + ") or a base URL")
	}
	if cfg.Rate, err = a.rate.positiveFloat(); err != nil {
		return cfg, err
	}
	if err := parseDurations(durationSetting{a.attemptTimeout, &cfg.AttemptTimeout}, durationSetting{a.retryInitial, &cfg.RetryInitial},
		durationSetting{a.retryMax, &cfg.RetryMax}, durationSetting{a.sigLifetime, &cfg.SigLifetime}); err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		if strings.Contains(err.Error(), "endpoint") {
			return cfg, a.endpoint.errorf("%v", err)
		}
		return cfg, err
	}
	return cfg, nil
}

// kafkaSettings are the KAFKA_* settings of the worker.
type kafkaSettings struct {
	brokers, topic, group, dlq, startOffset                         *setting
	maxWait, sessionTimeout, heartbeat, rebalanceTimeout, joinRetry *setting
	revokeGrace, drainTimeout, pauseInitial, pauseMax               *setting
	merge, mergeMaxBytes                                            *setting
}

func addKafkaSettings(s *settings, brokersDefault string) *kafkaSettings {
	return &kafkaSettings{
		brokers:          s.add("brokers", "KAFKA_BROKERS", brokersDefault, "Kafka bootstrap brokers, comma-separated host:port"),
		topic:            s.add("topic", "KAFKA_TOPIC", "", "topic of broadcast events"),
		group:            s.add("group", "KAFKA_GROUP_ID", "timbroadcast", "consumer group; replicas share it"),
		dlq:              s.add("dlq-topic", "KAFKA_DLQ_TOPIC", "", "dead-letter topic [default: <KAFKA_TOPIC>.dlq]"),
		startOffset:      s.add("start-offset", "KAFKA_START_OFFSET", "earliest", "where a partition without a committed offset starts: earliest or latest"),
		maxWait:          s.add("fetch-max-wait", "KAFKA_FETCH_MAX_WAIT", "500ms", "longest a fetch waits at the broker (records are handed over as they arrive)"),
		sessionTimeout:   s.add("session-timeout", "KAFKA_SESSION_TIMEOUT", "10s", "group session timeout: how soon a dead replica's partitions move"),
		heartbeat:        s.add("heartbeat-interval", "KAFKA_HEARTBEAT_INTERVAL", "1s", "group heartbeat interval"),
		rebalanceTimeout: s.add("rebalance-timeout", "KAFKA_REBALANCE_TIMEOUT", "15s", "group rebalance timeout"),
		joinRetry:        s.add("join-backoff", "KAFKA_JOIN_BACKOFF", "1s", "wait after a failed group join"),
		revokeGrace:      s.add("revoke-grace", "REVOKE_GRACE", "3s", "how long an in-flight send may finish after its partition is revoked"),
		drainTimeout:     s.add("drain-timeout", "DRAIN_TIMEOUT", "10s", "how long the in-flight send may finish at shutdown"),
		pauseInitial:     s.add("pause-initial", "PAUSE_INITIAL", "5s", "first wait before probing the API again while paused"),
		pauseMax:         s.add("pause-max", "PAUSE_MAX", "5m", "longest wait between probes while paused"),
		merge:            s.add("merge", "TIM_MERGE", "off", "on: pack waiting events into one call of up to TIM_MERGE_MAX_BYTES (README \"Merge mode\")"),
		mergeMaxBytes:    s.add("merge-max-bytes", "TIM_MERGE_MAX_BYTES", "12000", "largest merged request body, at most 12000"),
	}
}

func (k *kafkaSettings) config() (consumer.Config, error) {
	var cfg consumer.Config
	cfg.Brokers = k.brokers.list()
	if len(cfg.Brokers) == 0 {
		return cfg, k.brokers.errorf("is required (%s)", k.brokers.usage)
	}
	for _, b := range cfg.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return cfg, k.brokers.errorf("%q is not host:port", b)
		}
	}
	var err error
	if cfg.Topic, err = k.topic.required(); err != nil {
		return cfg, err
	}
	if cfg.GroupID, err = k.group.required(); err != nil {
		return cfg, err
	}
	cfg.DLQTopic = k.dlq.String()
	if cfg.DLQTopic == "" {
		cfg.DLQTopic = cfg.Topic + ".dlq"
	}
	if cfg.DLQTopic == cfg.Topic {
		return cfg, k.dlq.errorf("must differ from KAFKA_TOPIC")
	}
	switch k.merge.String() {
	case "on", "true", "1":
		cfg.Merge = true
	case "off", "false", "0", "":
	default:
		return cfg, k.merge.errorf("%q must be on or off", k.merge.val)
	}
	n, err := strconv.Atoi(k.mergeMaxBytes.String())
	if err != nil || n < 200 || n > sender.MaxBodyBytes {
		return cfg, k.mergeMaxBytes.errorf("%q must be a number of bytes between 200 and %d", k.mergeMaxBytes.val, sender.MaxBodyBytes)
	}
	cfg.MergeMaxBytes = n
	switch k.startOffset.String() {
	case "earliest":
		cfg.StartOffset = kafka.FirstOffset
	case "latest":
		cfg.StartOffset = kafka.LastOffset
	default:
		return cfg, k.startOffset.errorf("%q must be earliest or latest", k.startOffset.val)
	}
	if err := parseDurations(
		durationSetting{k.maxWait, &cfg.MaxWait}, durationSetting{k.sessionTimeout, &cfg.SessionTimeout},
		durationSetting{k.heartbeat, &cfg.HeartbeatInterval}, durationSetting{k.rebalanceTimeout, &cfg.RebalanceTimeout},
		durationSetting{k.joinRetry, &cfg.JoinGroupBackoff}, durationSetting{k.revokeGrace, &cfg.RevokeGrace},
		durationSetting{k.drainTimeout, &cfg.DrainTimeout}, durationSetting{k.pauseInitial, &cfg.PauseInitial},
		durationSetting{k.pauseMax, &cfg.PauseMax}); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// RunCmd is `timbroadcast run`: the worker.
type RunCmd struct {
	// Consumer and Sender are the resolved configurations.
	Consumer consumer.Config
	Sender   sender.Config
	// HTTPAddr serves /metrics, /healthz and /readyz; empty disables it.
	HTTPAddr string
	// Logger is the process logger.
	Logger *zap.Logger

	// Ready is closed once the HTTP listener is bound (tests).
	Ready chan struct{}
	// Addr is the bound HTTP address, valid after Ready.
	Addr string
}

// ParseRunFlags resolves the run command's configuration.
func ParseRunFlags(args []string, getenv func(string) string, logger *zap.Logger) (*RunCmd, error) {
	s := newSettings("run", getenv)
	k := addKafkaSettings(s, "")
	a := addAPISettings(s)
	httpAddr := s.add("http-addr", "HTTP_ADDR", ":9090", "address serving /metrics, /healthz and /readyz; 'off' disables it")
	if err := s.parse(args); err != nil {
		return nil, err
	}
	cmd := &RunCmd{Logger: logger, Ready: make(chan struct{})}
	var err error
	if cmd.Consumer, err = k.config(); err != nil {
		return nil, err
	}
	if cmd.Sender, err = a.config(); err != nil {
		return nil, err
	}
	cmd.HTTPAddr = httpAddr.String()
	if cmd.HTTPAddr == "off" {
		cmd.HTTPAddr = ""
	}
	return cmd, nil
}

// Run runs the worker until ctx ends, then drains.
func (c *RunCmd) Run(ctx context.Context) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := consumer.NewMetrics(reg)

	scfg := c.Sender
	scfg.Logger = c.Logger.Named("sender")
	scfg.Observe = metrics.ObserveAttempt
	client, err := sender.New(scfg)
	if err != nil {
		return err
	}
	defer client.Close()

	ccfg := c.Consumer
	ccfg.AppRate = scfg.Rate // replicas split it by partition share
	ccfg.Logger = c.Logger.Named("consumer")
	ccfg.Metrics = metrics
	w, err := consumer.New(ccfg, client)
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	if c.HTTPAddr != "" {
		srv, err := c.serveHTTP(reg, w, &wg)
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	} else {
		close(c.Ready)
	}
	c.Logger.Info("timbroadcast worker starting",
		zap.Strings("brokers", ccfg.Brokers), zap.String("topic", ccfg.Topic), zap.String("group", ccfg.GroupID),
		zap.String("dlq_topic", ccfg.DLQTopic), zap.Strings("endpoints", scfg.Endpoints), zap.Float64("rate", scfg.Rate),
		zap.Int("sdkappid", scfg.AppID), zap.Bool("merge", ccfg.Merge), zap.String("http_addr", c.Addr))
	return w.Run(ctx)
}

func (c *RunCmd) serveHTTP(reg *prometheus.Registry, w *consumer.Worker, wg *sync.WaitGroup) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(rw, "ok")
	})
	mux.HandleFunc("/readyz", func(rw http.ResponseWriter, _ *http.Request) {
		ready, why := w.Ready()
		if !ready {
			rw.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = fmt.Fprintln(rw, why)
	})
	l, err := net.Listen("tcp", c.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("HTTP_ADDR (--http-addr): listen on %s: %w", c.HTTPAddr, err)
	}
	c.Addr = l.Addr().String()
	close(c.Ready)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	wg.Go(func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.Logger.Error("HTTP server failed", zap.Error(err))
		}
	})
	return srv, nil
}
