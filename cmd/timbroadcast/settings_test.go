package main

import (
	"bytes"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// envOf returns a getenv over a map.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func validRunEnv() map[string]string {
	return map[string]string{
		"KAFKA_BROKERS": "127.0.0.1:9092", "KAFKA_TOPIC": "t", "KAFKA_DLQ_TOPIC": "t.dlq",
		"TIM_SDKAPPID": "1400000001", "TIM_ADMIN": "administrator", "TIM_SECRET_KEY": "settings-test-secret",
		"TIM_ENDPOINT": "http://127.0.0.1:1", "TIM_RATE": "200",
	}
}

// TestGroupTimeoutDefaults: a heartbeat and a revoke grace left to their
// defaults fit short session and rebalance timeouts (a third of each); set
// by the user, they are kept.
func TestGroupTimeoutDefaults(t *testing.T) {
	env := validRunEnv()
	env["KAFKA_SESSION_TIMEOUT"], env["KAFKA_REBALANCE_TIMEOUT"] = "900ms", "3s"
	c, err := parseRun(process{getenv: envOf(env)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if hb, g := c.consumer.HeartbeatInterval, c.consumer.RevokeGrace; hb != 300*time.Millisecond || g != time.Second {
		t.Errorf("heartbeat %v, grace %v; want 300ms and 1s (a third of the timeouts set)", hb, g)
	}
	env["KAFKA_HEARTBEAT_INTERVAL"], env["REVOKE_GRACE"] = "100ms", "1.5s"
	if c, err = parseRun(process{getenv: envOf(env)}, nil); err != nil {
		t.Fatal(err)
	}
	if hb, g := c.consumer.HeartbeatInterval, c.consumer.RevokeGrace; hb != 100*time.Millisecond || g != 1500*time.Millisecond {
		t.Errorf("heartbeat %v, grace %v; want the values set (100ms, 1.5s)", hb, g)
	}
}

func TestSettingsPrecedence(t *testing.T) {
	env := validRunEnv()
	env["KAFKA_SESSION_TIMEOUT"] = "12s"
	env["DRAIN_TIMEOUT"] = "3s"
	c, err := parseRun(process{getenv: envOf(env)}, []string{"--drain-timeout=4s"})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.consumer.DrainTimeout; got != 4*time.Second {
		t.Errorf("DrainTimeout %v: the flag (4s) must win over DRAIN_TIMEOUT (3s)", got)
	}
	if got := c.consumer.SessionTimeout; got != 12*time.Second {
		t.Errorf("SessionTimeout %v: KAFKA_SESSION_TIMEOUT (12s) must win over the default", got)
	}
	if got := c.consumer.HeartbeatInterval; got != 3*time.Second {
		t.Errorf("HeartbeatInterval %v: want the default 3s (under a third of the session timeout)", got)
	}
	if c.consumer.GroupID != "timbroadcast" || c.httpAddr != ":9090" || c.sender.Rate != 200 {
		t.Errorf("defaults: group %q http %q rate %v", c.consumer.GroupID, c.httpAddr, c.sender.Rate)
	}

	delete(env, "KAFKA_DLQ_TOPIC")
	if c, err = parseRun(process{getenv: envOf(env)}, nil); err != nil || c.consumer.DLQTopic != "t.dlq" {
		t.Errorf("dead-letter default: %q, %v; want t.dlq", c.consumer.DLQTopic, err)
	}
}

// TestConfigErrors: each bad setting makes `run` exit 2 with a message
// naming it, never the secret key.
func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name  string
		unset []string
		set   map[string]string
		args  []string
		want  string
	}{
		{"no brokers", []string{"KAFKA_BROKERS"}, nil, nil, "KAFKA_BROKERS"},
		{"bad broker", nil, map[string]string{"KAFKA_BROKERS": "localhost"}, nil, "KAFKA_BROKERS"},
		{"no topic", []string{"KAFKA_TOPIC"}, nil, nil, "KAFKA_TOPIC"},
		{"dlq equals topic", nil, map[string]string{"KAFKA_DLQ_TOPIC": "t"}, nil, "KAFKA_DLQ_TOPIC (--dlq-topic): must differ from KAFKA_TOPIC"},
		{"urgent equals dlq", nil, map[string]string{"KAFKA_URGENT_TOPIC": "t.dlq"}, nil, "KAFKA_URGENT_TOPIC (--urgent-topic): must differ from KAFKA_TOPIC and KAFKA_DLQ_TOPIC"},
		{"slot topic equals dlq", nil, map[string]string{"KAFKA_SLOT_TOPIC": "t.dlq"}, nil, "KAFKA_SLOT_TOPIC (--slot-topic): must differ from KAFKA_TOPIC"},
		{"bad pprof", nil, map[string]string{"HTTP_PPROF": "maybe"}, nil, "HTTP_PPROF"},
		{"no app id", []string{"TIM_SDKAPPID"}, nil, nil, "TIM_SDKAPPID"},
		{"bad app id", nil, map[string]string{"TIM_SDKAPPID": "abc"}, nil, "TIM_SDKAPPID"},
		{"no admin", []string{"TIM_ADMIN"}, nil, nil, "TIM_ADMIN"},
		{"no key", []string{"TIM_SECRET_KEY"}, nil, nil, "TIM_SECRET_KEY"},
		{"both keys", nil, map[string]string{"TIM_SECRET_KEY_FILE": "/etc/key"}, nil, "TIM_SECRET_KEY_FILE"},
		{"key file missing", []string{"TIM_SECRET_KEY"}, map[string]string{"TIM_SECRET_KEY_FILE": "/nonexistent/key"}, nil, "TIM_SECRET_KEY_FILE"},
		{"no endpoint", []string{"TIM_ENDPOINT"}, nil, nil, "TIM_REGION"},
		{"both endpoints", nil, map[string]string{"TIM_REGION": "singapore"}, nil, "TIM_REGION"},
		{"bad region", []string{"TIM_ENDPOINT"}, map[string]string{"TIM_REGION": "mars"}, nil, "TIM_REGION"},
		{"bad endpoint", nil, map[string]string{"TIM_ENDPOINT": "127.0.0.1:8080"}, nil, "TIM_ENDPOINT"},
		{"plain http off loopback", nil, map[string]string{"TIM_ENDPOINT": "http://0.0.0.0:9"}, nil, "TIM_ENDPOINT"},
		{"plain http to a name", nil, map[string]string{"TIM_ENDPOINT": "http://emulator:8080"}, nil, "TIM_ENDPOINT"},
		{"bad stuck-after", nil, map[string]string{"TIM_STUCK_AFTER": "long"}, nil, "TIM_STUCK_AFTER"},
		{"bad retry budget", nil, map[string]string{"TIM_RETRY_MAX_ELAPSED": "-1m"}, nil, "TIM_RETRY_MAX_ELAPSED"},
		{"bad rate", nil, map[string]string{"TIM_RATE": "0"}, nil, "TIM_RATE"},
		{"flag wins", nil, nil, []string{"--rate=-3"}, `TIM_RATE (--rate): "-3"`},
		{"bad duration", nil, map[string]string{"KAFKA_SESSION_TIMEOUT": "soon"}, nil, "KAFKA_SESSION_TIMEOUT"},
		{"bad merge", nil, map[string]string{"TIM_MERGE": "maybe"}, nil, "TIM_MERGE"},
		{"bad merge size", nil, map[string]string{"TIM_MERGE_MAX_BYTES": "20000"}, nil, `TIM_MERGE_MAX_BYTES (--merge-max-bytes): "20000" must be a number of bytes between 200 and 12000`},
		{"merge size not a number", nil, map[string]string{"TIM_MERGE_MAX_BYTES": "12k"}, nil, `TIM_MERGE_MAX_BYTES (--merge-max-bytes): "12k" must be a number of bytes between 200 and 12000`},
		{"bad start offset", nil, map[string]string{"KAFKA_START_OFFSET": "middle"}, nil, "KAFKA_START_OFFSET"},
		{"bad log level", nil, map[string]string{"LOG_LEVEL": "loud"}, nil, "LOG_LEVEL"},
		{"receipts to the source topic", nil, map[string]string{"KAFKA_RECEIPT_TOPIC": "t"}, nil, "KAFKA_RECEIPT_TOPIC (--receipt-topic): must differ from KAFKA_TOPIC, KAFKA_DLQ_TOPIC and KAFKA_URGENT_TOPIC"},
		{"receipts to the dead-letter topic", nil, nil, []string{"--receipt-topic", "t.dlq"}, "KAFKA_RECEIPT_TOPIC (--receipt-topic)"},
		{"unknown trace exporter", nil, map[string]string{"OTEL_TRACES_EXPORTER": "jaeger"}, nil, "OTEL_TRACES_EXPORTER"},
		{"none with another exporter", nil, map[string]string{"OTEL_TRACES_EXPORTER": "none,otlp"}, nil, "OTEL_TRACES_EXPORTER"},
		{"unknown OTLP protocol", nil, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, nil, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{"unknown OTLP traces protocol", nil, map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"}, nil, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
		{"unknown propagator", nil, map[string]string{"OTEL_PROPAGATORS": "tracecontext,zipkin"}, nil, "OTEL_PROPAGATORS"},
		{"unknown partitioner", nil, map[string]string{"KAFKA_PARTITIONER": "random"}, nil, "KAFKA_PARTITIONER"},
		{"heartbeat not under the session timeout", nil, map[string]string{"KAFKA_HEARTBEAT_INTERVAL": "20s"}, nil, "KAFKA_HEARTBEAT_INTERVAL (--heartbeat-interval): (20s) must be shorter than the session timeout (10s), a third of it is usual: lower it or raise KAFKA_SESSION_TIMEOUT"},
		{"revoke grace not under the rebalance timeout", nil, map[string]string{"REVOKE_GRACE": "5s", "KAFKA_REBALANCE_TIMEOUT": "5s"}, nil, "REVOKE_GRACE (--revoke-grace): (5s) must be at most two thirds of the rebalance timeout (5s)"},
		{"stray argument", nil, nil, []string{"extra"}, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validRunEnv()
			for _, k := range tt.unset {
				delete(env, k)
			}
			for k, v := range tt.set {
				env[k] = v
			}
			var stdout, stderr bytes.Buffer
			code := runMain(append([]string{"run"}, tt.args...), envOf(env), &stdout, &stderr)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr: %s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr %q does not name %s", stderr.String(), tt.want)
			}
			if strings.Contains(stderr.String(), "settings-test-secret") {
				t.Errorf("stderr leaks the secret key: %q", stderr.String())
			}
		})
	}
}

func TestUnknownCommandAndHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := runMain([]string{"frobnicate"}, envOf(nil), &out, &errOut); code != 2 || !strings.Contains(errOut.String(), `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d, %q", code, errOut.String())
	}
	errOut.Reset()
	if code := runMain([]string{"--help"}, envOf(nil), &out, &errOut); code != 0 || !strings.Contains(errOut.String(), "Commands:") {
		t.Errorf("--help: exit %d, %q", code, errOut.String())
	}
}

func TestEmulatorSettings(t *testing.T) {
	env := map[string]string{"TIM_SDKAPPID": "1", "TIM_ADMIN": "a", "TIM_SECRET_KEY": "k"}
	c, err := parseEmulator(process{getenv: envOf(env)}, []string{"--answer", "70009,10002:0.25", "--limiter", "spacing", "--accounts", "x,y"})
	if err != nil {
		t.Fatal(err)
	}
	if c.opts.Faults.Answers[70009] != 1 || c.opts.Faults.Answers[10002] != 0.25 || c.opts.Limiter != "spacing" || len(c.opts.Accounts) != 2 {
		t.Errorf("options %+v", c.opts)
	}
	for _, bad := range [][]string{{"--answer", "abc"}, {"--answer", "10002:2"}, {"--limiter", "leaky"}} {
		if _, err := parseEmulator(process{getenv: envOf(env)}, bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestRetryBudgetReachesTheClient(t *testing.T) {
	env := validRunEnv()
	env["TIM_RETRY_MAX_ELAPSED"] = "10m"
	c, err := parseRun(process{getenv: envOf(env)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.consumer.RetryMaxElapsed != 10*time.Minute || c.sender.MaxElapsed != 10*time.Minute || c.consumer.StuckAfter != 2*time.Minute {
		t.Errorf("retry budget %v / %v, stuck after %v", c.consumer.RetryMaxElapsed, c.sender.MaxElapsed, c.consumer.StuckAfter)
	}
}

func TestUrgentSettings(t *testing.T) {
	env := validRunEnv()
	env["KAFKA_URGENT_TOPIC"] = "t.urgent"
	c, err := parseRun(process{getenv: envOf(env)}, nil)
	if err != nil || c.consumer.UrgentTopic != "t.urgent" {
		t.Fatalf("run: urgent topic %q, %v", c.consumer.UrgentTopic, err)
	}
	p, err := parsePublish(process{getenv: envOf(env)}, []string{"--urgent", "--text", "now"})
	if err != nil || p.topic != "t.urgent" {
		t.Fatalf("publish --urgent: topic %q, %v", p.topic, err)
	}
	if p, err = parsePublish(process{getenv: envOf(env)}, []string{"--text", "later"}); err != nil || p.topic != "t" {
		t.Fatalf("publish: topic %q, %v", p.topic, err)
	}
	r, err := parseReplay(process{getenv: envOf(env)}, nil)
	if err != nil || r.main != "t" {
		t.Fatalf("replay: to %q, %v; want the bulk topic by default", r.main, err)
	}
	if r, err = parseReplay(process{getenv: envOf(env)}, []string{"--urgent"}); err != nil || r.main != "t.urgent" {
		t.Fatalf("replay --urgent: to %q, %v", r.main, err)
	}
	env["KAFKA_URGENT_TOPIC"] = "t"
	if _, err := parseRun(process{getenv: envOf(env)}, nil); err == nil || !strings.Contains(err.Error(), "KAFKA_URGENT_TOPIC") {
		t.Errorf("urgent topic equal to the bulk topic: %v", err)
	}
}

func TestReceiptAndTracingSettings(t *testing.T) {
	env := validRunEnv()
	c, err := parseRun(process{getenv: envOf(env)}, []string{"--receipt-topic", "t.receipts"})
	if err != nil || c.consumer.ReceiptTopic != "t.receipts" || c.tracing.on() {
		t.Fatalf("run: receipt topic %q, tracing %v, %v; want the flag's topic, tracing off", c.consumer.ReceiptTopic, c.tracing.on(), err)
	}
	for _, tt := range []struct {
		set     map[string]string
		otlp    string
		console bool
	}{
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http/protobuf", false},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "http/protobuf", false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc", false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, "grpc", false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console"}, "", true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp,console"}, "http/protobuf", true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "", false},
		{map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "", false},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "", false}, // no exporter, no endpoint: off
	} {
		if tt.otlp != "" && !otlpBuilt {
			continue // TestLeanBuild: refused, naming the variable
		}
		env := validRunEnv()
		for k, v := range tt.set {
			env[k] = v
		}
		c, err := parseRun(process{getenv: envOf(env)}, nil)
		if err != nil || c.tracing.otlp != tt.otlp || c.tracing.console != tt.console {
			t.Errorf("%v: otlp %q console %v (%v); want %q %v", tt.set, c.tracing.otlp, c.tracing.console, err, tt.otlp, tt.console)
		}
	}
}

// TestPropagators: OTEL_PROPAGATORS chooses the trace headers, with or
// without an exporter; the default is W3C trace context and baggage.
func TestPropagators(t *testing.T) {
	for _, tt := range []struct {
		value string
		want  []string // the headers written and copied to receipts
	}{
		{"", []string{"baggage", "traceparent", "tracestate"}},
		{"tracecontext", []string{"traceparent", "tracestate"}},
		{" B3 , baggage", []string{"b3", "baggage"}},
		{"b3multi", []string{"x-b3-flags", "x-b3-sampled", "x-b3-spanid", "x-b3-traceid"}},
		{"jaeger", []string{"uber-trace-id"}},
		{"none", nil},
	} {
		env := validRunEnv()
		env["OTEL_PROPAGATORS"] = tt.value
		c, err := parseRun(process{getenv: envOf(env)}, nil)
		if err != nil {
			t.Errorf("OTEL_PROPAGATORS=%q: %v", tt.value, err)
			continue
		}
		var got []string
		for _, f := range c.tracing.propagator.Fields() {
			got = append(got, strings.ToLower(f))
		}
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("OTEL_PROPAGATORS=%q: headers %v, want %v", tt.value, got, tt.want)
		}
	}
}

// TestPublishWaitSettings: --wait needs a receipt topic other than the
// topic published to, a duration, and something to publish.
func TestPublishWaitSettings(t *testing.T) {
	env := validRunEnv()
	env["KAFKA_RECEIPT_TOPIC"] = "t.receipts"
	p, err := parsePublish(process{getenv: envOf(env)}, []string{"--text", "hi", "--wait", "30s"})
	if err != nil || p.wait.d != 30*time.Second || p.wait.topic != "t.receipts" {
		t.Fatalf("publish --wait 30s: wait %v topic %q, %v", p.wait.d, p.wait.topic, err)
	}
	for _, tt := range []struct {
		set  map[string]string
		args []string
		want string
	}{
		{map[string]string{"KAFKA_RECEIPT_TOPIC": ""}, []string{"--wait", "5s"}, "KAFKA_RECEIPT_TOPIC (--receipt-topic): is required with --wait"},
		{nil, []string{"--wait", "soon"}, "--wait"},
		{nil, []string{"--wait", "5s", "--dry-run"}, "--dry-run"},
		{map[string]string{"KAFKA_RECEIPT_TOPIC": "t"}, []string{"--wait", "5s"}, "must differ"},
	} {
		env := validRunEnv()
		env["KAFKA_RECEIPT_TOPIC"] = "t.receipts"
		for k, v := range tt.set {
			env[k] = v
		}
		_, err := parsePublish(process{getenv: envOf(env)}, append([]string{"--text", "hi"}, tt.args...))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("publish %v with %v: %v; want an error containing %q", tt.args, tt.set, err, tt.want)
		}
	}
}

// TestREADMEConfigurationTable: every setting of run (as --help lists it,
// from the one registry of settings and the components' DefaultConfig) has
// a row in the configuration reference (deploy/README.md), with the same
// default.
func TestREADMEConfigurationTable(t *testing.T) {
	readme, err := os.ReadFile("../../deploy/README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{} // variable -> the row's cells
	for _, line := range strings.Split(string(readme), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, " | ")
		for _, v := range regexp.MustCompile("`([A-Z][A-Z0-9_]+)`").FindAllStringSubmatch(cells[0], -1) {
			rows[v[1]] = cells
		}
	}
	var out, help bytes.Buffer
	if code := runMain([]string{"run", "--help"}, envOf(nil), &out, &help); code != 0 {
		t.Fatalf("run --help: exit %d", code)
	}
	entry := regexp.MustCompile(`(?m)^  --(\S+) \(([A-Z0-9_]+)\)(?: \[default (.*)\])?$`)
	found := entry.FindAllStringSubmatch(help.String(), -1)
	if len(found) < 30 {
		t.Fatalf("run --help lists %d settings, want the whole list:\n%s", len(found), help.String())
	}
	for _, f := range found {
		flagName, env, def := f[1], f[2], f[3]
		cells, ok := rows[env]
		if !ok {
			t.Errorf("%s (--%s) has no row in deploy/README.md's configuration reference", env, flagName)
			continue
		}
		if def != "" && (len(cells) < 3 || !strings.HasPrefix(cells[2], "`"+def+"`")) {
			t.Errorf("deploy/README.md: %s's default is %q, want `%s` as --help and the code say", env, cells[2], def)
		}
	}
}

// pause and resume read the workers' settings: the app from --app or
// TIM_SDKAPPID, the claims log from KAFKA_SLOT_TOPIC or KAFKA_TOPIC; a bad
// setting is exit 2 naming it.
func TestPauseSettings(t *testing.T) {
	env := map[string]string{"KAFKA_BROKERS": "127.0.0.1:9092", "KAFKA_TOPIC": "t", "TIM_SDKAPPID": "1400000001"}
	c, err := parsePause(process{getenv: envOf(env)}, []string{"--for", "90s", "--reason", "wrong text", "--by", "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if c.app != 1400000001 || c.slotTopic != "t.slots" || c.d != 90*time.Second || c.reason != "wrong text" || c.by != "alice" || c.resume {
		t.Errorf("pause settings %+v", c)
	}
	c, err = parseResume(process{getenv: envOf(env)}, []string{"--app", "1400000002", "--slot-topic", "claims"})
	if err != nil {
		t.Fatal(err)
	}
	if c.app != 1400000002 || c.slotTopic != "claims" || !c.resume || c.by == "" {
		t.Errorf("resume settings %+v", c)
	}
	tests := []struct {
		name  string
		cmd   string
		unset []string
		args  []string
		want  string
	}{
		{"no brokers", "pause", []string{"KAFKA_BROKERS"}, nil, "KAFKA_BROKERS"},
		{"no topic", "pause", []string{"KAFKA_TOPIC"}, nil, "KAFKA_TOPIC"},
		{"no app", "resume", []string{"TIM_SDKAPPID"}, nil, "TIM_SDKAPPID"},
		{"bad app", "pause", nil, []string{"--app", "live-sg"}, `--app: "live-sg" is not an SDKAppID`},
		{"zero duration", "pause", nil, []string{"--for", "0s"}, "--for"},
		{"bad duration", "pause", nil, []string{"--for", "soon"}, "--for"},
		{"negative duration", "pause", nil, []string{"--for", "-1m"}, "--for"},
		{"empty by", "pause", nil, []string{"--by", " "}, "--by"},
		{"resume has no reason", "resume", nil, []string{"--reason", "x"}, "reason"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := map[string]string{}
			for k, v := range env {
				e[k] = v
			}
			for _, k := range tt.unset {
				delete(e, k)
			}
			var stdout, stderr bytes.Buffer
			if code := runMain(append([]string{tt.cmd}, tt.args...), envOf(e), &stdout, &stderr); code != 2 {
				t.Fatalf("exit code %d, want 2; stderr: %s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr %q does not name %s", stderr.String(), tt.want)
			}
		})
	}
}
