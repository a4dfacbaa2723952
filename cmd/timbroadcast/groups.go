package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

// Settings groups shared by the commands. Each is declared once here, so
// a setting has one name, one meaning and one default in every command.

// kafkaSettings are how a command reaches Kafka: the brokers, TLS and
// SASL. Every command that talks to Kafka declares them, so one setting
// means the same in all of them.
type kafkaSettings struct {
	brokers                                              *setting
	tls, caFile, certFile, keyFile, serverName, insecure *setting
	mechanism, username, password, passwordFile          *setting
	tokenFile, tokenURL, clientID, clientSecret          *setting
	clientSecretFile, scope                              *setting
	saslPlaintext                                        *setting
	partitioner                                          *setting
	// warnings are said once the command's logger is there (access).
	warnings []string
}

func addKafkaSettings(s *settings, brokersDefault string) *kafkaSettings {
	return &kafkaSettings{
		brokers: s.add("brokers", "KAFKA_BROKERS", brokersDefault, "Kafka bootstrap brokers, comma-separated host:port"),
		saslPlaintext: s.add("kafka-sasl-plaintext", "KAFKA_SASL_PLAINTEXT", "off", "on: allow PLAIN, OAUTHBEARER or AWS_MSK_IAM credentials over a connection "+
			"without TLS, which sends the password or token in clear (a network you trust; warns at every start)"),
		tls:              s.add("kafka-tls", "KAFKA_TLS", "", "on/off: TLS to the brokers [default: off, on when any KAFKA_TLS_* file is set]"),
		caFile:           s.add("kafka-tls-ca-file", "KAFKA_TLS_CA_FILE", "", "PEM bundle of CAs to trust [default: the system pool]"),
		certFile:         s.add("kafka-tls-cert-file", "KAFKA_TLS_CERT_FILE", "", "client certificate (PEM) for mutual TLS"),
		keyFile:          s.add("kafka-tls-key-file", "KAFKA_TLS_KEY_FILE", "", "client key (PEM) for mutual TLS"),
		serverName:       s.add("kafka-tls-server-name", "KAFKA_TLS_SERVER_NAME", "", "name to verify in the broker's certificate when it differs from the broker host"),
		insecure:         s.add("kafka-tls-insecure-skip-verify", "KAFKA_TLS_INSECURE_SKIP_VERIFY", "", "on: accept any broker certificate (tests only; warns at start)"),
		mechanism:        s.add("kafka-sasl-mechanism", "KAFKA_SASL_MECHANISM", "", "SASL mechanism: "+strings.Join(kafkaconn.Mechanisms, ", ")),
		username:         s.add("kafka-sasl-username", "KAFKA_SASL_USERNAME", "", "SASL user (PLAIN, SCRAM)"),
		password:         s.add("kafka-sasl-password", "KAFKA_SASL_PASSWORD", "", "SASL password (prefer KAFKA_SASL_PASSWORD_FILE)"),
		passwordFile:     s.add("kafka-sasl-password-file", "KAFKA_SASL_PASSWORD_FILE", "", "file holding the SASL password, read at every connection"),
		tokenFile:        s.add("kafka-sasl-oauth-token-file", "KAFKA_SASL_OAUTH_TOKEN_FILE", "", "OAUTHBEARER token file, read at every connection"),
		tokenURL:         s.add("kafka-sasl-oauth-token-url", "KAFKA_SASL_OAUTH_TOKEN_URL", "", "OAUTHBEARER: OIDC token endpoint (client-credentials flow)"),
		clientID:         s.add("kafka-sasl-oauth-client-id", "KAFKA_SASL_OAUTH_CLIENT_ID", "", "OAUTHBEARER: client id"),
		clientSecret:     s.add("kafka-sasl-oauth-client-secret", "KAFKA_SASL_OAUTH_CLIENT_SECRET", "", "OAUTHBEARER: client secret (prefer the _FILE variant)"),
		clientSecretFile: s.add("kafka-sasl-oauth-client-secret-file", "KAFKA_SASL_OAUTH_CLIENT_SECRET_FILE", "", "OAUTHBEARER: file holding the client secret"),
		scope:            s.add("kafka-sasl-oauth-scope", "KAFKA_SASL_OAUTH_SCOPE", "", "OAUTHBEARER: scopes, comma-separated"),
		partitioner: s.add("kafka-partitioner", "KAFKA_PARTITIONER", "", "how record keys map to partitions when producing, to match your other producers: "+
			"fnv1a (default; kafka-go, Sarama), murmur2 (Java client, franz-go), crc32 (librdkafka, confluent-kafka-go)"),
	}
}

// given reports whether any broker is set.
func (k *kafkaSettings) given() bool { return len(k.brokers.list()) > 0 }

// security resolves the TLS and SASL settings.
func (k *kafkaSettings) security() (kafkaconn.Security, error) {
	var sec kafkaconn.Security
	tlsOn := k.caFile.String() != "" || k.certFile.String() != "" || k.keyFile.String() != "" ||
		k.serverName.String() != "" || k.insecure.String() != ""
	switch k.tls.String() {
	case "on", "true", "1":
		tlsOn = true
	case "off", "false", "0":
		if tlsOn {
			return sec, k.tls.errorf("is off, but KAFKA_TLS_* settings are set")
		}
	case "":
	default:
		return sec, k.tls.errorf("%q must be on or off", k.tls.val)
	}
	if tlsOn {
		insecure, err := k.insecure.on()
		if err != nil {
			return sec, err
		}
		sec.TLS = &kafkaconn.TLSConfig{CAFile: k.caFile.String(), CertFile: k.certFile.String(), KeyFile: k.keyFile.String(),
			ServerName: k.serverName.String(), InsecureSkipVerify: insecure}
	}
	sasl := []*setting{k.mechanism, k.username, k.password, k.passwordFile, k.tokenFile, k.tokenURL, k.clientID, k.clientSecret, k.clientSecretFile, k.scope}
	for _, st := range sasl {
		if st.String() != "" {
			sec.SASL = &kafkaconn.SASLConfig{Mechanism: k.mechanism.String(), Username: k.username.String(),
				Password: k.password.String(), PasswordFile: k.passwordFile.String(), OAuthTokenFile: k.tokenFile.String(),
				OAuthTokenURL: k.tokenURL.String(), OAuthClientID: k.clientID.String(), OAuthClientSecret: k.clientSecret.String(),
				OAuthClientSecretFile: k.clientSecretFile.String(), OAuthScopes: k.scope.list()}
			break
		}
	}
	allow, err := k.saslPlaintext.on()
	if err != nil {
		return sec, err
	}
	if sec.SASL != nil && sec.TLS == nil {
		mech := strings.ToUpper(k.mechanism.String())
		if mech == "AWS_MSK_IAM" && !kafkaconn.MSKIAMBuilt {
			mech = "" // the dialer says this build lacks it
		}
		switch mech {
		case "PLAIN", "OAUTHBEARER", "AWS_MSK_IAM":
			if !allow {
				return sec, k.tls.errorf("is off, and KAFKA_SASL_MECHANISM=%s would send the password or token in clear: "+
					"turn TLS on (KAFKA_TLS=on, KAFKA_TLS_CA_FILE), or set KAFKA_SASL_PLAINTEXT=on for a network you trust", mech)
			}
			k.warnings = append(k.warnings, "KAFKA_SASL_PLAINTEXT is on: "+mech+" credentials cross the network in clear (KAFKA_TLS is off)")
		case "SCRAM-SHA-256", "SCRAM-SHA-512":
			k.warnings = append(k.warnings, "KAFKA_TLS is off: SCRAM sends no password, but the records and the session "+
				"cross the network unencrypted and the broker is not authenticated")
		}
	} else if allow && sec.SASL != nil {
		k.warnings = append(k.warnings, "KAFKA_SASL_PLAINTEXT is on but unused: TLS is on")
	}
	return sec, nil
}

// conn resolves the settings into a connection, naming the setting on
// error. It reads the files it needs but does not connect.
func (k *kafkaSettings) conn() (*kafkaconn.Conn, error) {
	brokers := k.brokers.list()
	if len(brokers) == 0 {
		return nil, k.brokers.errorf("is required (%s)", k.brokers.usage)
	}
	for _, b := range brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return nil, k.brokers.errorf("%q is not host:port", b)
		}
	}
	sec, err := k.security()
	if err != nil {
		return nil, err
	}
	d, err := sec.Dialer()
	if err != nil {
		return nil, k.named(err)
	}
	c := kafkaconn.New(brokers, d)
	c.Secrets = sec.Secrets()
	if c.Balancer, err = kafkaconn.Balancer(k.partitioner.String()); err != nil {
		return nil, k.partitioner.errorf("%v", err)
	}
	return c, nil
}

// kafkaAccess is a command's resolved way to Kafka: the connection and
// the settings that name any failure of it. Commands embed it.
type kafkaAccess struct {
	settings *kafkaSettings
	conn     *kafkaconn.Conn // nil when no broker was given (demo, publish --dry-run)
	log      *zap.Logger
}

// access resolves the settings into a kafkaAccess (reading the files they
// name, not connecting).
func (k *kafkaSettings) access(log *zap.Logger) (kafkaAccess, error) {
	c, err := k.conn()
	if err == nil {
		for _, w := range k.warnings {
			log.Warn(w)
		}
	}
	return kafkaAccess{settings: k, conn: c, log: log}, err
}

// secrets are the connection's credential values.
func (a kafkaAccess) secrets() []string {
	if a.conn == nil {
		return nil
	}
	return a.conn.Secrets
}

// check connects once, so bad credentials fail at start naming the
// setting (a configError: exit 2); an unreachable broker is an ordinary
// error.
func (a kafkaAccess) check(ctx context.Context) error {
	c := a.conn
	if c.Dialer.TLS != nil && c.Dialer.TLS.InsecureSkipVerify {
		a.log.Warn("KAFKA_TLS_INSECURE_SKIP_VERIFY is on: any broker certificate is accepted; use it for tests only")
	}
	err := kafkaconn.Check(ctx, c.Brokers, c.Dialer)
	var fe *kafkaconn.FieldError
	if errors.As(err, &fe) {
		return configError{a.settings.named(err)}
	}
	if err != nil {
		return fmt.Errorf("connect to %v: %w", c.Brokers, err)
	}
	return nil
}

// named rewrites a kafkaconn.FieldError to name the setting.
func (k *kafkaSettings) named(err error) error {
	var fe *kafkaconn.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	names := map[string]string{
		"TLS": k.tls.name(), "CAFile": k.caFile.name(), "CertFile": k.certFile.name() + " / " + k.keyFile.name(),
		"KeyFile": k.keyFile.name(), "ServerName": k.serverName.name(), "Mechanism": k.mechanism.name(),
		"Username": k.username.name(), "Password": k.username.name() + " / " + k.password.name() + " / " + k.passwordFile.name(),
		"PasswordFile": k.passwordFile.name(), "OAuthTokenFile": k.tokenFile.name(), "OAuthTokenURL": k.tokenURL.name(),
		"OAuthClientID": k.clientID.name(), "OAuthClientSecret": k.clientSecret.name() + " / " + k.clientSecretFile.name(),
		"OAuthClientSecretFile": k.clientSecretFile.name(),
	}
	name := names[fe.Field]
	if name == "" {
		name = fe.Field
	}
	return fmt.Errorf("%s: %w", name, fe.Err)
}

// topicSettings are the source topic, its dead-letter topic and the
// urgent lane's topic.
type topicSettings struct {
	topic, dlq, urgent *setting
}

func addTopicSettings(s *settings, topicUsage, dlqUsage string) *topicSettings {
	t := &topicSettings{topic: s.add("topic", "KAFKA_TOPIC", "", topicUsage)}
	if dlqUsage != "" {
		t.dlq = s.add("dlq-topic", "KAFKA_DLQ_TOPIC", "", dlqUsage+" [default: <KAFKA_TOPIC>.dlq]")
	}
	t.urgent = s.add("urgent-topic", "KAFKA_URGENT_TOPIC", "", "the urgent lane: its events take the next call slot before any of KAFKA_TOPIC (optional)")
	return t
}

// urgentTopic returns the urgent topic ("" for none), checked against the
// others.
func (t *topicSettings) urgentTopic(topic, dlq string) (string, error) {
	u := t.urgent.String()
	cfg := consumer.Config{Topic: topic, DLQTopic: dlq, UrgentTopic: u}
	if err := cfg.ValidateTopics(); err != nil {
		return "", fieldError(err, t.urgent)
	}
	return u, nil
}

// slotTopic returns the claims log topic of setting r (its default,
// "<topic>.slots" in the help, is the consumer's), checked against the
// topics of cfg.
func slotTopic(r *setting, cfg consumer.Config) (string, error) {
	if cfg.SlotTopic = r.String(); cfg.SlotTopic == "<topic>.slots" {
		cfg.SlotTopic = ""
	}
	if err := cfg.ValidateTopics(); err != nil {
		return "", fieldError(err, r)
	}
	return cfg.SlotTopicOrDefault(), nil
}

// receiptTopic returns the receipt topic of setting r ("" for none),
// checked against the topics of cfg.
func receiptTopic(r *setting, cfg consumer.Config) (string, error) {
	cfg.ReceiptTopic = r.String()
	if err := cfg.ValidateTopics(); err != nil {
		return "", fieldError(err, r)
	}
	return cfg.ReceiptTopic, nil
}

// deliveredTopic returns the delivered log topic of setting r (its
// default, "<topic>.delivered" in the help, is the consumer's; "off" turns
// it off), checked against the topics of cfg.
func deliveredTopic(r *setting, cfg consumer.Config) (string, error) {
	if cfg.DeliveredTopic = r.String(); cfg.DeliveredTopic == "<topic>.delivered" {
		cfg.DeliveredTopic = ""
	}
	if err := cfg.ValidateTopics(); err != nil {
		return "", fieldError(err, r)
	}
	return cfg.DeliveredTopicOrDefault(), nil
}

// resolve returns the topic and the dead-letter topic (wire's default when
// unset).
func (t *topicSettings) resolve() (topic, dlq string, err error) {
	if topic, err = t.topic.required(); err != nil {
		return "", "", err
	}
	if t.dlq == nil {
		return topic, "", nil
	}
	dlq = t.dlq.String()
	if dlq == "" {
		dlq = wire.DeadLetterTopic(topic)
	}
	cfg := consumer.Config{Topic: topic, DLQTopic: dlq}
	if err := cfg.ValidateTopics(); err != nil {
		return "", "", fieldError(err, t.topic, t.dlq)
	}
	return topic, dlq, nil
}

// credentialSettings are the app's credentials: the client signs with
// them, the emulator checks them.
type credentialSettings struct {
	appID, admin, key, keyFile *setting
}

func addCredentialSettings(s *settings, whose string) *credentialSettings {
	return &credentialSettings{
		appID:   s.add("sdkappid", "TIM_SDKAPPID", "", whose+" SDKAppID"),
		admin:   s.add("admin", "TIM_ADMIN", "", whose+" administrator identifier"),
		key:     s.add("secret-key", "TIM_SECRET_KEY", "", whose+" secret key (prefer TIM_SECRET_KEY_FILE)"),
		keyFile: s.add("secret-key-file", "TIM_SECRET_KEY_FILE", "", "file holding "+whose+" secret key"),
	}
}

// resolve returns the SDKAppID, admin and secret key.
func (c *credentialSettings) resolve() (appID int, admin, key string, err error) {
	id, err := c.appID.required()
	if err != nil {
		return 0, "", "", err
	}
	if appID, err = strconv.Atoi(id); err != nil || appID <= 0 {
		return 0, "", "", c.appID.errorf("%q is not a positive number", id)
	}
	if admin, err = c.admin.required(); err != nil {
		return 0, "", "", err
	}
	if key, err = c.secretKey(); err != nil {
		return 0, "", "", err
	}
	return appID, admin, key, nil
}

// secretKey resolves TIM_SECRET_KEY / TIM_SECRET_KEY_FILE: exactly one.
func (c *credentialSettings) secretKey() (string, error) {
	key, from, err := orFile(c.key, c.keyFile)
	switch {
	case err != nil:
		return "", err
	case from == c.keyFile && strings.TrimSpace(key) == "":
		return "", from.errorf("the key file %s is empty", from.String())
	case from != nil:
		return strings.TrimSpace(key), nil
	}
	return "", errors.New("TIM_SECRET_KEY (--secret-key) or TIM_SECRET_KEY_FILE (--secret-key-file) is required: the app's secret key from the Chat console")
}

// watchKey makes cfg read TIM_SECRET_KEY_FILE again whenever the file
// changes (a key rotated without a restart); each key read is taught to
// the scrubbers of p's output first. Without the file it does nothing.
func (c *credentialSettings) watchKey(p process, cfg *sender.Config) error {
	path := c.keyFile.String()
	if path == "" {
		return nil
	}
	f, err := newSecretFile(path, p.learnSecret)
	if err != nil {
		return c.keyFile.errorf("%v", err)
	}
	cfg.SecretKeyFunc = f.get
	return nil
}

// learnSecret teaches a secret read (a key from its file) to the
// scrubbers of p's output.
func (p process) learnSecret(v string) {
	for _, w := range []io.Writer{p.stdout, p.stderr} {
		if sw, ok := w.(*scrubWriter); ok {
			sw.add(v)
		}
	}
}

// apiSettings are the TIM_* settings of the commands that call the API.
type apiSettings struct {
	creds                                               *credentialSettings
	region, endpoint, rate                              *setting
	attemptTimeout, retryInitial, retryMax, sigLifetime *setting
}

func addAPISettings(s *settings) *apiSettings {
	d := sender.DefaultConfig()
	return &apiSettings{
		creds:          addCredentialSettings(s, "the app's"),
		region:         s.add("region", "TIM_REGION", "", "API region: "+strings.Join(sender.RegionNames(), ", ")+" (standby domain used on failure)"),
		endpoint:       s.add("endpoint", "TIM_ENDPOINT", "", "explicit API base URL(s), comma-separated, primary first, e.g. http://127.0.0.1:8080 (instead of TIM_REGION)"),
		rate:           s.add("rate", "TIM_RATE", strconv.FormatFloat(d.Rate, 'f', -1, 64), "calls per second for the app, all replicas together (1 on Pro, 5 on Pro Plus and Enterprise)"),
		attemptTimeout: s.add("attempt-timeout", "TIM_ATTEMPT_TIMEOUT", durationDefault(d.AttemptTimeout), "timeout of one HTTP request (the server's own is not documented; public SDKs wait 10s)"),
		retryInitial:   s.add("retry-initial", "TIM_RETRY_INITIAL", durationDefault(d.RetryInitial), "first backoff between retries"),
		retryMax:       s.add("retry-max", "TIM_RETRY_MAX", durationDefault(d.RetryMax), "longest backoff between retries"),
		sigLifetime:    s.add("sig-lifetime", "TIM_SIG_LIFETIME", durationDefault(d.SigLifetime), "lifetime of generated UserSigs (renewed at 80%)"),
	}
}

// endpointGiven reports whether the user named an API (region or URL).
func (a *apiSettings) endpointGiven() bool {
	return a.region.String() != "" || a.endpoint.String() != ""
}

// shared builds the sender settings every app of an apps file shares
// (timeouts, backoff, UserSig lifetime), naming the setting on error.
func (a *apiSettings) shared() (sender.Config, error) {
	cfg := sender.DefaultConfig()
	if err := parseDurations(durationSetting{a.attemptTimeout, &cfg.AttemptTimeout}, durationSetting{a.retryInitial, &cfg.RetryInitial},
		durationSetting{a.retryMax, &cfg.RetryMax}, durationSetting{a.sigLifetime, &cfg.SigLifetime}); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// config builds the sender configuration, naming the setting on error.
func (a *apiSettings) config() (sender.Config, error) {
	var cfg sender.Config
	var err error
	if cfg.AppID, cfg.Admin, cfg.SecretKey, err = a.creds.resolve(); err != nil {
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

// workerSettings are the consumer-group and delivery settings of `run`.
type workerSettings struct {
	instanceID                                           *setting
	group, startOffset                                   *setting
	maxWait, sessionTimeout, heartbeat, rebalanceTimeout *setting
	joinRetry, revokeGrace, drainTimeout                 *setting
	pauseInitial, pauseMax, merge, mergeMaxBytes         *setting
	stuckAfter, retryMaxElapsed, partitionWatch          *setting
	commitInterval                                       *setting
	maxRecordBytes, maxBatchBytes, bufferBytes           *setting
	maxAge                                               *setting
}

func addWorkerSettings(s *settings) *workerSettings {
	d := consumer.DefaultConfig()
	return &workerSettings{
		group: s.add("group", "KAFKA_GROUP_ID", "timbroadcast", "consumer group; replicas share it"),
		instanceID: s.add("group-instance-id", "KAFKA_GROUP_INSTANCE_ID", "", "static membership: this replica's own stable id (the pod name of a StatefulSet); "+
			"a restart within KAFKA_SESSION_TIMEOUT takes its partitions back without a rebalance (README \"Static membership\")"),
		startOffset:      s.add("start-offset", "KAFKA_START_OFFSET", "earliest", "where a partition without a committed offset starts: earliest or latest"),
		maxWait:          s.add("fetch-max-wait", "KAFKA_FETCH_MAX_WAIT", durationDefault(d.MaxWait), "longest a fetch waits at the broker (records are handed over as they arrive)"),
		sessionTimeout:   s.add("session-timeout", "KAFKA_SESSION_TIMEOUT", durationDefault(d.SessionTimeout), "group session timeout: how soon a dead replica's partitions move"),
		heartbeat:        s.add("heartbeat-interval", "KAFKA_HEARTBEAT_INTERVAL", durationDefault(d.HeartbeatInterval), "group heartbeat interval (by default at most a third of the session timeout)"),
		rebalanceTimeout: s.add("rebalance-timeout", "KAFKA_REBALANCE_TIMEOUT", durationDefault(d.RebalanceTimeout), "group rebalance timeout"),
		joinRetry:        s.add("join-backoff", "KAFKA_JOIN_BACKOFF", durationDefault(d.JoinGroupBackoff), "wait after a failed group join"),
		revokeGrace:      s.add("revoke-grace", "REVOKE_GRACE", durationDefault(d.RevokeGrace), "how long an in-flight send may finish after its partition is revoked (by default at most a third of the rebalance timeout)"),
		drainTimeout:     s.add("drain-timeout", "DRAIN_TIMEOUT", durationDefault(d.DrainTimeout), "how long the in-flight send may finish at shutdown"),
		pauseInitial:     s.add("pause-initial", "PAUSE_INITIAL", durationDefault(d.PauseInitial), "first wait before probing the API again while paused"),
		pauseMax:         s.add("pause-max", "PAUSE_MAX", durationDefault(d.PauseMax), "longest wait between probes while paused"),
		merge:            s.add("merge", "TIM_MERGE", "off", "on (or native): pack waiting events into one ordinary message of up to TIM_MERGE_MAX_BYTES; envelope: any sequence into one envelope element receivers unpack (README \"Merge mode\")"),
		mergeMaxBytes: s.add("merge-max-bytes", "TIM_MERGE_MAX_BYTES", strconv.Itoa(d.MergeMaxBytes),
			fmt.Sprintf("largest merged request body, %d to %d", consumer.MinMergeMaxBytes, sender.MaxBodyBytes)),
		partitionWatch: s.add("partition-watch-interval", "KAFKA_PARTITION_WATCH_INTERVAL", durationDefault(d.PartitionWatchInterval), "how often the topic's partition count is checked; added partitions are consumed within about this time"),
		commitInterval: s.add("commit-interval", "KAFKA_COMMIT_INTERVAL", "0", "how often a partition commits at most; 0: at once, what settles "+
			"while a commit is on its way going into the next. Longer makes fewer requests, and a crash resends what settled in the last interval (within the server's dedupe window)"),
		stuckAfter:      s.add("stuck-after", "TIM_STUCK_AFTER", durationDefault(d.StuckAfter), "a partition failing on one record this long shows in /readyz and timbroadcast_stuck_partitions"),
		retryMaxElapsed: s.add("retry-max-elapsed", "TIM_RETRY_MAX_ELAPSED", "0", "give up an event retried this long and dead-letter it as retry_exhausted; 0 never gives up (README \"Giving up\")"),
		maxRecordBytes: s.add("max-record-bytes", "KAFKA_MAX_RECORD_BYTES", strconv.Itoa(d.MaxRecordBytes),
			"largest record read (key, value, headers); a larger one is dead-lettered too_large naming where it is"),
		maxBatchBytes: s.add("max-batch-bytes", "KAFKA_MAX_BATCH_BYTES", strconv.Itoa(d.MaxBatchBytes),
			"largest record batch read as sent (compressed); it may expand to 16 times this. A larger one is dead-lettered too_large"),
		maxAge: s.add("max-age", "TIM_MAX_AGE", "0", "dead-letter as expired an event older than this by its record timestamp when its turn "+
			"comes (e.g. 1h); 0 never does"),
		bufferBytes: s.add("buffer-bytes", "TIM_BUFFER_BYTES", strconv.FormatInt(d.BufferBytes, 10),
			"most bytes of records held between fetch and commit, all partitions together (README \"Limits\")"),
	}
}

// config fills the worker's group and delivery settings into cfg.
func (k *workerSettings) config(cfg *consumer.Config) error {
	var err error
	if cfg.GroupID, err = k.group.required(); err != nil {
		return err
	}
	cfg.GroupInstanceID = k.instanceID.String()
	var fe *consumer.FieldError
	if errors.As(consumer.ValidateGroupInstanceID(cfg.GroupInstanceID), &fe) {
		return k.instanceID.errorf("%q %s", cfg.GroupInstanceID, fe.Msg)
	}
	switch k.merge.String() {
	case "on", "true", "1", "native":
		cfg.Merge = true
	case "envelope":
		cfg.Merge, cfg.MergeEnvelope = true, true
	case "off", "false", "0", "":
	default:
		return k.merge.errorf("%q must be off, on (native) or envelope", k.merge.val)
	}
	n, err := strconv.Atoi(k.mergeMaxBytes.String())
	if err != nil {
		n = 0 // not a number: the rule's message says what is wanted
	}
	fe = nil
	if errors.As(consumer.ValidateMergeMaxBytes(n), &fe) {
		return k.mergeMaxBytes.errorf("%q %s", k.mergeMaxBytes.val, fe.Msg)
	}
	cfg.MergeMaxBytes = n
	for _, b := range []struct {
		st  *setting
		dst *int
	}{{k.maxRecordBytes, &cfg.MaxRecordBytes}, {k.maxBatchBytes, &cfg.MaxBatchBytes}} {
		if *b.dst, err = strconv.Atoi(b.st.String()); err != nil || *b.dst < 1 {
			return b.st.errorf("%q is not a positive number of bytes", b.st.val)
		}
	}
	if cfg.BufferBytes, err = strconv.ParseInt(k.bufferBytes.String(), 10, 64); err != nil || cfg.BufferBytes < 1 {
		return k.bufferBytes.errorf("%q is not a positive number of bytes", k.bufferBytes.val)
	}
	if err := fieldError(cfg.ValidateLimits(), k.maxRecordBytes, k.maxBatchBytes, k.bufferBytes); err != nil {
		return err
	}
	switch k.startOffset.String() {
	case "earliest":
		cfg.StartOffset = kafka.FirstOffset
	case "latest":
		cfg.StartOffset = kafka.LastOffset
	default:
		return k.startOffset.errorf("%q must be earliest or latest", k.startOffset.val)
	}
	if err := parseDurations(
		durationSetting{k.maxWait, &cfg.MaxWait}, durationSetting{k.sessionTimeout, &cfg.SessionTimeout},
		durationSetting{k.heartbeat, &cfg.HeartbeatInterval}, durationSetting{k.rebalanceTimeout, &cfg.RebalanceTimeout},
		durationSetting{k.joinRetry, &cfg.JoinGroupBackoff}, durationSetting{k.revokeGrace, &cfg.RevokeGrace},
		durationSetting{k.drainTimeout, &cfg.DrainTimeout}, durationSetting{k.pauseInitial, &cfg.PauseInitial},
		durationSetting{k.pauseMax, &cfg.PauseMax}, durationSetting{k.stuckAfter, &cfg.StuckAfter},
		durationSetting{k.retryMaxElapsed, &cfg.RetryMaxElapsed}, durationSetting{k.partitionWatch, &cfg.PartitionWatchInterval},
		durationSetting{k.maxAge, &cfg.MaxAge}, durationSetting{k.commitInterval, &cfg.CommitInterval}); err != nil {
		return err
	}
	// Left to their defaults, the heartbeat and the grace fit the session
	// and rebalance timeouts set (consumer.Config.ValidateTimeouts).
	if !k.heartbeat.given {
		cfg.HeartbeatInterval = 0
	}
	if !k.revokeGrace.given {
		cfg.RevokeGrace = 0
	}
	if err := fieldError(cfg.ValidateTimeouts(), k.heartbeat, k.revokeGrace); err != nil {
		return err
	}
	cfg.SessionTimeout, cfg.HeartbeatInterval, cfg.RebalanceTimeout, cfg.RevokeGrace = cfg.GroupTimeouts()
	return nil
}

// waitSettings are --wait and the receipt topic it reads: publish and
// replay wait for the worker's receipts of what they wrote.
type waitSettings struct {
	wait, receipts *setting
}

func addWaitSettings(s *settings) *waitSettings {
	return &waitSettings{
		receipts: s.add("receipt-topic", "KAFKA_RECEIPT_TOPIC", "", "the worker's receipt topic, read by --wait"),
		wait: s.add("wait", "", "", "wait up to this long (e.g. 30s) for every event's receipt and print its outcome; "+
			"exit 1 unless all were delivered (needs the receipt topic)"),
	}
}

// resolve returns the wait for events written to topic (zero: none).
func (w *waitSettings) resolve(dryRun bool, topic string) (receiptWait, error) {
	d, err := w.wait.duration()
	if err != nil || d == 0 {
		return receiptWait{}, err
	}
	receipts := w.receipts.String()
	switch {
	case dryRun:
		return receiptWait{}, w.wait.errorf("has nothing to wait for with --dry-run")
	case receipts == "":
		return receiptWait{}, w.receipts.errorf("is required with --wait: the worker's receipts say what became of each event")
	case receipts == topic:
		return receiptWait{}, w.receipts.errorf("must differ from the topic written to")
	}
	return receiptWait{d: d, topic: receipts}, nil
}
