package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/mapping"
	"github.com/timbroadcast/timbroadcast/consumer/schema"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

// mappingSettings are how records that are not yet events become events:
// a jq program and a Schema Registry. run and map declare them.
type mappingSettings struct {
	program, programFile                   *setting
	timeout, maxOutput                     *setting
	registry, user, password, passwordFile *setting
	registryCA                             *setting
	passwordValue                          string // resolved, for scrubbing
}

func addMappingSettings(s *settings) *mappingSettings {
	return &mappingSettings{
		program: s.add("map", "TIM_MAP", "", "jq program mapping each record's value to an event, or filtering it out "+
			"(README \"Your own events\")"),
		programFile: s.add("map-file", "TIM_MAP_FILE", "", "file holding the jq program (instead of TIM_MAP)"),
		timeout: s.add("map-timeout", "TIM_MAP_TIMEOUT", durationDefault(mapping.DefaultTimeout),
			"longest the mapping may run on one record; a record it runs longer on is dead-lettered map_failed"),
		maxOutput: s.add("map-max-output-bytes", "TIM_MAP_MAX_OUTPUT_BYTES", strconv.Itoa(mapping.DefaultMaxOutputBytes),
			"largest output the mapping may give for one record; a larger one is dead-lettered map_failed"),
		registry: s.add("schema-registry-url", "KAFKA_SCHEMA_REGISTRY_URL", "", "Confluent Schema Registry URL(s), comma-separated, tried in turn: "+
			"values in its wire format (Avro, Protobuf, JSON Schema) are decoded"),
		user:         s.add("schema-registry-username", "KAFKA_SCHEMA_REGISTRY_USERNAME", "", "basic-auth user (Confluent Cloud: the API key)"),
		password:     s.add("schema-registry-password", "KAFKA_SCHEMA_REGISTRY_PASSWORD", "", "basic-auth password (prefer the _FILE variant)"),
		passwordFile: s.add("schema-registry-password-file", "KAFKA_SCHEMA_REGISTRY_PASSWORD_FILE", "", "file holding the basic-auth password"),
		registryCA:   s.add("schema-registry-tls-ca-file", "KAFKA_SCHEMA_REGISTRY_TLS_CA_FILE", "", "PEM bundle of CAs to trust for the registry [default: the system pool]"),
	}
}

// resolve compiles the program and builds the registry client, naming
// the setting on error.
func (m *mappingSettings) resolve() (consumer.RecordDecoder, error) {
	var d consumer.RecordDecoder
	src, st, err := orFile(m.program, m.programFile)
	if err != nil {
		return d, err
	}
	if strings.TrimSpace(src) != "" {
		p, err := mapping.Compile(src)
		if err != nil {
			return d, st.errorf("%v", err)
		}
		if p.Timeout, err = m.timeout.duration(); err != nil {
			return d, err
		}
		if p.Timeout == 0 {
			return d, m.timeout.errorf("must be more than 0")
		}
		if p.MaxOutputBytes, err = strconv.Atoi(m.maxOutput.String()); err != nil || p.MaxOutputBytes < 1 {
			return d, m.maxOutput.errorf("%q is not a positive number of bytes", m.maxOutput.val)
		}
		d.Map = p
	}
	urls := m.registry.list()
	if len(urls) == 0 {
		for _, o := range []*setting{m.user, m.password, m.passwordFile, m.registryCA} {
			if o.String() != "" {
				return d, o.errorf("is set but KAFKA_SCHEMA_REGISTRY_URL is not")
			}
		}
		return d, nil
	}
	opts := []sr.ClientOpt{sr.URLs(urls...), sr.UserAgent("timbroadcast")}
	password, _, err := orFile(m.password, m.passwordFile)
	if err != nil {
		return d, err
	}
	password = strings.TrimRight(password, "\r\n")
	m.passwordValue = password
	basic := m.user.String() != "" || password != ""
	for _, raw := range urls {
		u, err := url.Parse(raw)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			return d, m.registry.errorf("%q is not an http(s) URL", redactURL(raw))
		case u.User != nil:
			return d, m.registry.errorf("%q carries credentials: set KAFKA_SCHEMA_REGISTRY_USERNAME and "+
				"KAFKA_SCHEMA_REGISTRY_PASSWORD_FILE instead (a URL is printed in logs and /readyz)", u.Redacted())
		case basic && u.Scheme == "http" && !sender.IsLoopback(u.Hostname()):
			return d, m.registry.errorf("%q is http://, and basic auth would send the password in clear: use https "+
				"(http is accepted with credentials only for loopback addresses)", u.Redacted())
		}
	}
	var auth func(*http.Request)
	if basic {
		user := m.user.String()
		auth = func(r *http.Request) { r.SetBasicAuth(user, password) }
		if path := m.passwordFile.String(); path != "" {
			// Read again whenever the file changes: a rotated password is
			// used from the next request on, without a restart.
			f, err := newSecretFile(path, func(v string) { m.passwordValue = v })
			if err != nil {
				return d, m.passwordFile.errorf("%v", err)
			}
			auth = func(r *http.Request) {
				if pw, err := f.get(); err == nil {
					r.SetBasicAuth(user, pw)
				}
			}
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if f := m.registryCA.String(); f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return d, m.registryCA.errorf("%v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return d, m.registryCA.errorf("%s holds no PEM certificate", f)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	var rt http.RoundTripper = tr
	if auth != nil {
		rt = authTransport{rt: tr, auth: auth}
	}
	opts = append(opts, sr.HTTPClient(&http.Client{Transport: schema.LimitAnswers(rt, 0), Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}))
	cl, err := sr.NewClient(opts...)
	if err != nil {
		return d, m.registry.errorf("%v", err)
	}
	d.Schemas = schema.New(cl)
	return d, nil
}

// authTransport sets each request's credentials as it leaves.
type authTransport struct {
	rt   http.RoundTripper
	auth func(*http.Request)
}

func (t authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	t.auth(r)
	return t.rt.RoundTrip(r)
}

// redactURL is raw with any password replaced, for messages.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	if i := strings.LastIndex(raw, "@"); i >= 0 {
		return "[REDACTED]" + raw[i:]
	}
	return raw
}

// secrets are the registry password, to scrub from output.
func (m *mappingSettings) secrets() []string {
	if m.passwordValue == "" {
		return nil
	}
	return []string{m.passwordValue}
}

// mapCmd is `timbroadcast map`: it tries a mapping on records (from a JSON
// Lines file or a topic) and prints, for each, the request body the worker
// would send, "skipped", or the dead-letter reason.
type mapCmd struct {
	kafkaAccess
	decoder   consumer.RecordDecoder
	settings  *mappingSettings
	file      string
	fromTopic string
	limit     int
	stdin     io.Reader
	stdout    io.Writer
}

func (c *mapCmd) secrets() []string { return append(c.kafkaAccess.secrets(), c.settings.secrets()...) }

func parseMap(p process, args []string) (*mapCmd, error) {
	s := p.settings("map")
	k := addKafkaSettings(s, "")
	ms := addMappingSettings(s)
	file := s.add("file", "", "", "JSON Lines file of records ('-' for standard input): each line a value, or "+
		"{\"key\":...,\"event\":<value>,\"headers\":{...}} as publish reads them")
	from := s.add("from-topic", "", "", "read records from this Kafka topic instead (from the start of each partition)")
	limit := s.add("limit", "", "20", "with --from-topic: at most this many records")
	if err := s.parse(args); err != nil {
		return nil, err
	}
	c := &mapCmd{settings: ms, file: file.String(), fromTopic: from.String(), stdin: os.Stdin, stdout: p.stdout}
	var err error
	if c.decoder, err = ms.resolve(); err != nil {
		return nil, err
	}
	if c.decoder.Map == nil && c.decoder.Schemas == nil {
		return nil, ms.program.errorf("is required: map tries a mapping (or a Schema Registry) on records")
	}
	switch {
	case c.file != "" && c.fromTopic != "":
		return nil, errors.New("--file and --from-topic are both set; set one")
	case c.file == "" && c.fromTopic == "":
		return nil, errors.New("say where the records are: --file FILE ('-' for standard input) or --from-topic TOPIC")
	}
	if _, err := fmt.Sscan(limit.String(), &c.limit); err != nil || c.limit <= 0 {
		return nil, limit.errorf("%q is not a positive number", limit.val)
	}
	if c.fromTopic != "" {
		if c.kafkaAccess, err = k.access(p.logger); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Run maps every record and prints the result; it fails (exit 1) when any
// record would be dead-lettered.
func (c *mapCmd) Run(ctx context.Context) error {
	var msgs []kafka.Message
	if c.fromTopic != "" {
		all, err := c.conn.ReadFrom(ctx, c.fromTopic, nil)
		if err != nil {
			return err
		}
		msgs = all[:min(len(all), c.limit)]
	} else {
		r, err := openInput(c.file, c.stdin)
		if err != nil {
			return err
		}
		defer r.Close()
		lines, bad, err := readLines(r)
		if err != nil {
			return err
		}
		if len(bad) > 0 {
			return configError{fmt.Errorf("--file: %s", strings.Join(bad, "; "))}
		}
		for _, l := range lines {
			msgs = append(msgs, l.Message)
		}
	}
	failed, skipped := 0, 0
	for i, m := range msgs {
		where := fmt.Sprintf("record %d", i+1)
		if c.fromTopic != "" {
			where = fmt.Sprintf("%s/%d@%d", m.Topic, m.Partition, m.Offset)
		}
		if m.Key != nil {
			where += fmt.Sprintf(" (key %s)", wire.Printable(wire.Cut(string(m.Key), 256)))
		}
		ev, filtered, err := c.decoder.Decode(ctx, m)
		var ie *wire.InvalidEventError
		switch {
		case errors.As(err, &ie):
			failed++
			fmt.Fprintf(c.stdout, "%s: dead-lettered: %s: %s\n", where, ie.Reason, wire.Printable(ie.Msg))
		case err != nil:
			return fmt.Errorf("%s: %w", where, err)
		case filtered:
			skipped++
			fmt.Fprintf(c.stdout, "%s: skipped\n", where)
		default:
			fmt.Fprintf(c.stdout, "%s: %s\n", where, ev.Body)
		}
	}
	fmt.Fprintf(c.stdout, "%d record(s): %d mapped, %d skipped, %d dead-lettered\n", len(msgs), len(msgs)-skipped-failed, skipped, failed)
	if failed > 0 {
		return fmt.Errorf("%d of %d record(s) would be dead-lettered", failed, len(msgs))
	}
	return nil
}
