package kafkaconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// SASL mechanisms.
const (
	MechanismPlain       = "PLAIN"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismScramSHA512 = "SCRAM-SHA-512"
	MechanismOAuthBearer = "OAUTHBEARER"
	MechanismAWSMSKIAM   = "AWS_MSK_IAM"
)

// Mechanisms lists the SASL mechanisms offered.
var Mechanisms = []string{MechanismPlain, MechanismScramSHA256, MechanismScramSHA512, MechanismOAuthBearer, MechanismAWSMSKIAM}

// Security is how a Conn encrypts and authenticates. The zero value is
// plaintext without authentication.
type Security struct {
	// TLS, if set, encrypts every connection.
	TLS *TLSConfig
	// SASL, if set, authenticates every connection.
	SASL *SASLConfig
}

// TLSConfig configures TLS.
type TLSConfig struct {
	// CAFile is a PEM bundle of CAs to trust; empty trusts the system pool.
	CAFile string
	// CertFile and KeyFile are the client certificate and key (mutual
	// TLS). They are read again at every handshake, so a rotated
	// certificate is used without a restart.
	CertFile, KeyFile string
	// ServerName is the name to verify when it differs from the broker's
	// host.
	ServerName string
	// InsecureSkipVerify accepts any certificate (tests only).
	InsecureSkipVerify bool
}

// SASLConfig configures SASL. Secrets given as files are read again at
// every connection, so a rotated password or token is used without a
// restart.
type SASLConfig struct {
	// Mechanism is one of Mechanisms.
	Mechanism string
	// Username and Password (or PasswordFile) for PLAIN and SCRAM.
	Username, Password, PasswordFile string
	// OAuthTokenFile holds an OAUTHBEARER token (a Kubernetes projected
	// token, say), read at every connection.
	OAuthTokenFile string
	// OAuthTokenURL, OAuthClientID, OAuthClientSecret (or
	// OAuthClientSecretFile) and OAuthScopes get OAUTHBEARER tokens with
	// the OIDC client-credentials flow; tokens are cached and renewed
	// before they expire.
	OAuthTokenURL, OAuthClientID, OAuthClientSecret, OAuthClientSecretFile string
	OAuthScopes                                                            []string
	// HTTPClient calls the token endpoint; default a client with a 10s
	// timeout.
	HTTPClient *http.Client
}

// FieldError is a problem with one field of Security: the caller maps the
// field to the setting the user wrote.
type FieldError struct {
	// Field is the field's name: "TLS", "CAFile", "CertFile", "KeyFile",
	// "ServerName", "Mechanism", "Username", "Password", "PasswordFile",
	// "OAuthTokenFile", "OAuthTokenURL", "OAuthClientID",
	// "OAuthClientSecret", "OAuthClientSecretFile".
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Dialer builds the dialer for s, checking every file it needs now.
func (s Security) Dialer() (*kafka.Dialer, error) {
	d := &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true, ClientID: ClientID}
	if s.TLS != nil {
		c, err := s.TLS.config()
		if err != nil {
			return nil, err
		}
		d.TLS = c
	}
	if s.SASL != nil {
		m, err := s.SASL.mechanism()
		if err != nil {
			return nil, err
		}
		d.SASLMechanism = m
	}
	return d, nil
}

// Secrets returns the secret values of s (passwords, client secrets,
// tokens read now), for scrubbing from any text shown to people.
func (s Security) Secrets() []string {
	if s.SASL == nil {
		return nil
	}
	out := []string{s.SASL.Password, s.SASL.OAuthClientSecret}
	for _, f := range []string{s.SASL.PasswordFile, s.SASL.OAuthClientSecretFile, s.SASL.OAuthTokenFile} {
		if f != "" {
			if b, err := os.ReadFile(f); err == nil {
				out = append(out, strings.TrimSpace(string(b)))
			}
		}
	}
	var keep []string
	for _, v := range out {
		if len(v) >= 4 { // a shorter one would scrub ordinary text
			keep = append(keep, v)
		}
	}
	return keep
}

func (t *TLSConfig) config() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // a test-only setting, warned about at start
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fieldErr("CAFile", "cannot read the CA bundle: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fieldErr("CAFile", "%s holds no PEM certificate", t.CAFile)
		}
		c.RootCAs = pool
	}
	switch {
	case t.CertFile == "" && t.KeyFile == "":
	case t.CertFile == "":
		return nil, fieldErr("CertFile", "is required with a client key")
	case t.KeyFile == "":
		return nil, fieldErr("KeyFile", "is required with a client certificate")
	default:
		kp := &keyPair{cert: t.CertFile, key: t.KeyFile}
		if _, err := kp.load(); err != nil {
			return nil, err
		}
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.load() }
	}
	return c, nil
}

// keyPair reads a certificate and key, again whenever a file changed.
type keyPair struct {
	cert, key string
	mu        sync.Mutex
	stamp     string
	loaded    *tls.Certificate
}

func (k *keyPair) load() (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	stamp := ""
	for _, f := range []string{k.cert, k.key} {
		st, err := os.Stat(f)
		if err != nil {
			field := "CertFile"
			if f == k.key {
				field = "KeyFile"
			}
			return nil, fieldErr(field, "cannot read %s: %v", f, err)
		}
		stamp += st.ModTime().String() + fmt.Sprint(st.Size())
	}
	if k.loaded != nil && stamp == k.stamp {
		return k.loaded, nil
	}
	c, err := tls.LoadX509KeyPair(k.cert, k.key)
	if err != nil {
		return nil, fieldErr("CertFile", "cannot load the client certificate and key: %v", err)
	}
	k.loaded, k.stamp = &c, stamp
	return k.loaded, nil
}

func (s *SASLConfig) mechanism() (sasl.Mechanism, error) {
	switch strings.ToUpper(s.Mechanism) {
	case MechanismPlain, MechanismScramSHA256, MechanismScramSHA512:
		if s.Username == "" {
			return nil, fieldErr("Username", "is required with %s", s.Mechanism)
		}
		if (s.Password == "") == (s.PasswordFile == "") {
			return nil, fieldErr("Password", "set the password or a password file (one of them) for %s", s.Mechanism)
		}
		if _, err := secret(s.Password, s.PasswordFile, "PasswordFile"); err != nil {
			return nil, err
		}
		return &passwordMechanism{cfg: s, name: strings.ToUpper(s.Mechanism)}, nil
	case MechanismOAuthBearer:
		return s.oauth()
	case MechanismAWSMSKIAM:
		return awsMSKIAM()
	case "":
		return nil, fieldErr("Mechanism", "is required with SASL settings (one of %s)", strings.Join(Mechanisms, ", "))
	}
	return nil, fieldErr("Mechanism", "%q is not one of %s", s.Mechanism, strings.Join(Mechanisms, ", "))
}

// secret returns value, or the trimmed content of file.
func secret(value, file, field string) (string, error) {
	if file == "" {
		return value, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fieldErr(field, "cannot read %s: %v", file, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fieldErr(field, "%s is empty", file)
	}
	return v, nil
}

// passwordMechanism is PLAIN or SCRAM with the password read at every
// connection.
type passwordMechanism struct {
	cfg  *SASLConfig
	name string
}

func (m *passwordMechanism) Name() string { return m.name }

func (m *passwordMechanism) Start(ctx context.Context) (sasl.StateMachine, []byte, error) {
	pw, err := secret(m.cfg.Password, m.cfg.PasswordFile, "PasswordFile")
	if err != nil {
		return nil, nil, err
	}
	var inner sasl.Mechanism
	switch m.name {
	case MechanismPlain:
		inner = plain.Mechanism{Username: m.cfg.Username, Password: pw}
	case MechanismScramSHA256:
		inner, err = scram.Mechanism(scram.SHA256, m.cfg.Username, pw)
	default:
		inner, err = scram.Mechanism(scram.SHA512, m.cfg.Username, pw)
	}
	if err != nil {
		return nil, nil, fieldErr("Username", "%v", err)
	}
	return inner.Start(ctx)
}

func (s *SASLConfig) oauth() (sasl.Mechanism, error) {
	switch {
	case s.OAuthTokenFile != "" && s.OAuthTokenURL != "":
		return nil, fieldErr("OAuthTokenFile", "set a token file or a token URL, not both")
	case s.OAuthTokenFile != "":
		if _, err := secret("", s.OAuthTokenFile, "OAuthTokenFile"); err != nil {
			return nil, err
		}
		file := s.OAuthTokenFile
		return &OAuthBearer{Token: func(context.Context) (string, error) { return secret("", file, "OAuthTokenFile") }}, nil
	case s.OAuthTokenURL != "":
		if s.OAuthClientID == "" {
			return nil, fieldErr("OAuthClientID", "is required with a token URL")
		}
		if (s.OAuthClientSecret == "") == (s.OAuthClientSecretFile == "") {
			return nil, fieldErr("OAuthClientSecret", "set the client secret or a client secret file (one of them)")
		}
		cs, err := secret(s.OAuthClientSecret, s.OAuthClientSecretFile, "OAuthClientSecretFile")
		if err != nil {
			return nil, err
		}
		hc := s.HTTPClient
		if hc == nil {
			hc = &http.Client{Timeout: 10 * time.Second}
		}
		source := func(secret string) oauth2.TokenSource {
			cc := clientcredentials.Config{ClientID: s.OAuthClientID, ClientSecret: secret, TokenURL: s.OAuthTokenURL, Scopes: s.OAuthScopes}
			return oauth2.ReuseTokenSourceWithExpiry(nil, cc.TokenSource(context.WithValue(context.Background(), oauth2.HTTPClient, hc)), time.Minute)
		}
		var mu sync.Mutex
		ts := source(cs)
		return &OAuthBearer{Token: func(context.Context) (string, error) {
			mu.Lock()
			if s.OAuthClientSecretFile != "" {
				// Read at every connection: a rotated client secret is used
				// for the next token (the cached one stays good until it
				// expires).
				if now, err := secret("", s.OAuthClientSecretFile, "OAuthClientSecretFile"); err == nil && now != cs {
					cs, ts = now, source(now)
				}
			}
			cur := ts
			mu.Unlock()
			tok, err := cur.Token()
			if err != nil {
				return "", fieldErr("OAuthTokenURL", "cannot get a token from %s: %v", s.OAuthTokenURL, redactOAuth(err))
			}
			return tok.AccessToken, nil
		}}, nil
	}
	return nil, fieldErr("OAuthTokenFile", "OAUTHBEARER needs a token file or a token URL")
}

// redactOAuth keeps the status of a failed token request and drops its
// body, which some providers fill with the request.
func redactOAuth(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		msg := re.Response.Status
		if re.ErrorCode != "" {
			msg += " (" + re.ErrorCode + ")"
		}
		return errors.New(msg)
	}
	return err
}

// OAuthBearer is the SASL OAUTHBEARER mechanism (RFC 7628) with a token
// from Token, asked for at every connection.
type OAuthBearer struct {
	// Token returns the bearer token to present.
	Token func(ctx context.Context) (string, error)
}

// Name returns "OAUTHBEARER".
func (m *OAuthBearer) Name() string { return MechanismOAuthBearer }

// Start returns the client's initial response: the GS2 header "n,," and
// the "auth" key, "n,,\x01auth=Bearer <token>\x01\x01".
func (m *OAuthBearer) Start(ctx context.Context) (sasl.StateMachine, []byte, error) {
	tok, err := m.Token(ctx)
	if err != nil {
		return nil, nil, err
	}
	if tok == "" || strings.ContainsAny(tok, "\x01 ") {
		return nil, nil, fieldErr("OAuthTokenFile", "the token is empty or not a bearer token")
	}
	return oauthSession{}, []byte("n,,\x01auth=Bearer " + tok + "\x01\x01"), nil
}

type oauthSession struct{}

// Next handles the server's answer: an empty one is success; a challenge
// is the server's error (JSON), acknowledged with "\x01" as the RFC asks.
func (oauthSession) Next(_ context.Context, challenge []byte) (bool, []byte, error) {
	if len(challenge) == 0 {
		return true, nil, nil
	}
	return true, []byte{0x01}, fmt.Errorf("OAUTHBEARER refused: %s", challenge)
}

// Check connects to one of brokers with d, so a bad CA, a missing client
// certificate or a wrong password fails at start, naming the field.
func Check(ctx context.Context, brokers []string, d *kafka.Dialer) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var last error
	for _, b := range brokers {
		c, err := d.DialContext(ctx, "tcp", b)
		if err == nil {
			_, err = c.ApiVersions()
			_ = c.Close()
		}
		if err == nil {
			return nil
		}
		last = classify(err, d)
		var fe *FieldError
		if errors.As(last, &fe) {
			return last
		}
	}
	return last
}

// classify names the field behind a failed connection.
func classify(err error, d *kafka.Dialer) error {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var verify *tls.CertificateVerificationError
	msg := err.Error()
	switch {
	case errors.As(err, &hostname):
		return &FieldError{Field: "ServerName", Err: fmt.Errorf("the broker's certificate is not for this name: %w", err)}
	case errors.As(err, &unknownCA), errors.As(err, &verify):
		return &FieldError{Field: "CAFile", Err: fmt.Errorf("the broker's certificate does not verify: %w", err)}
	case strings.Contains(msg, "certificate required") || strings.Contains(msg, "bad certificate"):
		return &FieldError{Field: "CertFile", Err: fmt.Errorf("the broker wants a client certificate it accepts: %w", err)}
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return &FieldError{Field: "TLS", Err: fmt.Errorf("the broker does not speak TLS: %w", err)}
	case errors.Is(err, kafka.UnsupportedSASLMechanism):
		return &FieldError{Field: "Mechanism", Err: fmt.Errorf("the broker does not offer this mechanism: %w", err)}
	case errors.Is(err, kafka.SASLAuthenticationFailed) || strings.Contains(msg, "OAUTHBEARER refused"):
		return &FieldError{Field: "Password", Err: fmt.Errorf("authentication failed: %w", err)}
	case d.TLS == nil && (errors.Is(err, io.EOF) || strings.Contains(msg, "EOF") || strings.Contains(msg, "connection reset")):
		return &FieldError{Field: "TLS", Err: fmt.Errorf("the broker closed the connection: does it expect TLS? %w", err)}
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe
	}
	return err
}
