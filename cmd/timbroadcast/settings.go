package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/timbroadcast/timbroadcast/consumer"
)

// settings reads configuration from flags with environment fallbacks: a
// flag given on the command line wins, then the environment variable, then
// the default. Every error names the setting as "ENV (--flag)".
type settings struct {
	fs     *flag.FlagSet
	getenv func(string) string
	all    []*setting
	// tracing says the command reads the OTEL_* variables (help names them).
	tracing bool
	// strict is --strict-env: unknown TIM_*, KAFKA_* and OTEL_* variables
	// are an error, not a warning.
	strict *bool
}

// setting is one flag with its environment variable.
type setting struct {
	flag, env, def, usage string
	val                   string
	given                 bool // by flag or variable, not the default
}

// newSettings returns the settings of command name, read from getenv; help
// and flag errors go to stderr.
func newSettings(name string, getenv func(string) string, stderr io.Writer) *settings {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	s := &settings{fs: fs, getenv: getenv}
	s.strict = fs.Bool("strict-env", false, "exit 2 when a TIM_*, KAFKA_* or OTEL_* variable is not a setting of this command (else a warning)")
	fs.Usage = func() { s.usage(name) }
	return s
}

// settings returns the settings of command name, read from p's
// environment, and records them for the unknown-variable check.
func (p process) settings(name string) *settings {
	s := newSettings(name, p.getenv, p.stderr)
	if p.declared != nil {
		*p.declared = append(*p.declared, s)
	}
	return s
}

// add registers a setting. env may be empty for flag-only settings.
func (s *settings) add(flagName, env, def, usage string) *setting {
	st := &setting{flag: flagName, env: env, def: def, usage: usage}
	s.fs.StringVar(&st.val, flagName, "", usage)
	s.all = append(s.all, st)
	return st
}

// boolFlag registers a flag-only boolean.
func (s *settings) boolFlag(name, usage string) *bool {
	return s.fs.Bool(name, false, usage)
}

// parse parses args and resolves every setting.
func (s *settings) parse(args []string) error {
	if err := s.fs.Parse(args); err != nil {
		return err
	}
	if s.fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (settings are flags such as --%s=VALUE)", s.fs.Arg(0), s.all[0].flag)
	}
	set := map[string]bool{}
	s.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, st := range s.all {
		if set[st.flag] {
			st.given = true
			continue
		}
		if st.env != "" {
			if v, ok := lookup(s.getenv, st.env); ok {
				st.val, st.given = v, true
				continue
			}
		}
		st.val = st.def
	}
	return nil
}

func lookup(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

func (s *settings) usage(name string) {
	w := s.fs.Output()
	fmt.Fprintf(w, "Usage: timbroadcast %s [flags]\n\nFlags (each also read from the environment variable shown):\n", name)
	for _, st := range s.all {
		env := ""
		if st.env != "" {
			env = " (" + st.env + ")"
		}
		def := ""
		if st.def != "" {
			def = " [default " + st.def + "]"
		}
		fmt.Fprintf(w, "  --%s%s%s\n      %s\n", st.flag, env, def, st.usage)
	}
	s.fs.VisitAll(func(f *flag.Flag) {
		for _, st := range s.all {
			if st.flag == f.Name {
				return
			}
		}
		fmt.Fprintf(w, "  --%s\n      %s\n", f.Name, f.Usage)
	})
	if s.tracing {
		fmt.Fprint(w, "\nTracing follows the standard OpenTelemetry variables, off unless an exporter is set:\n"+
			"  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_EXPORTER (otlp, console, none), OTEL_EXPORTER_OTLP_PROTOCOL\n"+
			"  (http/protobuf, grpc), OTEL_PROPAGATORS (tracecontext,baggage; b3, b3multi, jaeger, xray, ottrace, none),\n"+
			"  OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ... (README \"Traces\").\n")
	}
}

// name is how errors refer to the setting.
func (st *setting) name() string {
	if st.env == "" {
		return "--" + st.flag
	}
	return st.env + " (--" + st.flag + ")"
}

func (st *setting) errorf(format string, args ...any) error {
	return fmt.Errorf("%s: %s", st.name(), fmt.Sprintf(format, args...))
}

func (st *setting) String() string { return strings.TrimSpace(st.val) }

func (st *setting) required() (string, error) {
	if st.String() == "" {
		return "", st.errorf("is required (%s)", st.usage)
	}
	return st.String(), nil
}

func (st *setting) list() []string {
	var out []string
	for _, p := range strings.Split(st.val, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (st *setting) duration() (time.Duration, error) {
	if st.String() == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(st.String())
	if err != nil || d < 0 {
		return 0, st.errorf("%q is not a duration such as 500ms or 10s", st.val)
	}
	return d, nil
}

// durationSetting pairs a setting with where its duration goes.
type durationSetting struct {
	st  *setting
	dst *time.Duration
}

// parseDurations resolves each setting into its destination, stopping at
// the first invalid one.
func parseDurations(ds ...durationSetting) error {
	for _, d := range ds {
		v, err := d.st.duration()
		if err != nil {
			return err
		}
		*d.dst = v
	}
	return nil
}

// durationDefault writes a default duration as a user would: 5m, not
// 5m0s.
func durationDefault(d time.Duration) string {
	s := d.String()
	s = strings.TrimSuffix(s, "m0s") + map[bool]string{true: "m"}[strings.HasSuffix(s, "m0s")]
	s = strings.TrimSuffix(s, "h0m") + map[bool]string{true: "h"}[strings.HasSuffix(s, "h0m")]
	return s
}

// consumerFields names the settings of consumer.Config fields that
// consumer.FieldError may name.
var consumerFields = map[string]string{
	"Topic": "KAFKA_TOPIC", "DLQTopic": "KAFKA_DLQ_TOPIC", "UrgentTopic": "KAFKA_URGENT_TOPIC",
	"ReceiptTopic": "KAFKA_RECEIPT_TOPIC", "SlotTopic": "KAFKA_SLOT_TOPIC", "DeliveredTopic": "KAFKA_DELIVERED_TOPIC", "MergeMaxBytes": "TIM_MERGE_MAX_BYTES", "GroupID": "KAFKA_GROUP_ID",
	"HeartbeatInterval": "KAFKA_HEARTBEAT_INTERVAL", "SessionTimeout": "KAFKA_SESSION_TIMEOUT",
	"RevokeGrace": "REVOKE_GRACE", "RebalanceTimeout": "KAFKA_REBALANCE_TIMEOUT",
	"MaxRecordBytes": "KAFKA_MAX_RECORD_BYTES", "MaxBatchBytes": "KAFKA_MAX_BATCH_BYTES", "BufferBytes": "TIM_BUFFER_BYTES",
}

// fieldError renders a consumer configuration error (the rule is the
// consumer's, written once there) with the names of the settings: the one
// among candidates at fault, the related ones by variable.
func fieldError(err error, candidates ...*setting) error {
	var fe *consumer.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	for _, st := range candidates {
		if st.env != consumerFields[fe.Field] {
			continue
		}
		related := make([]string, len(fe.Related))
		for i, r := range fe.Related {
			related[i] = consumerFields[r]
		}
		return st.errorf("%s", fe.Msg+consumer.JoinAnd(related))
	}
	return err
}

// orFile resolves a value given either directly (value) or in a file
// (file, a ..._FILE setting): at most one of the two. It returns the value
// (a file's content as read) and the setting that gave it; "" and nil when
// neither is set.
func orFile(value, file *setting) (string, *setting, error) {
	switch {
	case file.String() == "" && value.String() == "":
		return "", nil, nil
	case file.String() == "":
		return value.String(), value, nil
	case value.String() != "":
		return "", nil, file.errorf("and %s are both set; set one", value.name())
	}
	b, err := os.ReadFile(file.String())
	if err != nil {
		return "", nil, file.errorf("%v", err)
	}
	return string(b), file, nil
}

// on reads an on/off setting (also true/false, 1/0; empty is off).
func (st *setting) on() (bool, error) {
	switch st.String() {
	case "on", "true", "1":
		return true, nil
	case "", "off", "false", "0":
		return false, nil
	}
	return false, st.errorf("%q must be on or off", st.val)
}

func (st *setting) positiveFloat() (float64, error) {
	f, err := strconv.ParseFloat(st.String(), 64)
	if err != nil || f <= 0 || f != f {
		return 0, st.errorf("%q is not a positive number", st.val)
	}
	return f, nil
}
