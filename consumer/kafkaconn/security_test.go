package kafkaconn_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/segmentio/kafka-go/sasl"

	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
)

// TestOAuthBearerInitialResponse: RFC 7628 section 3.1: GS2 header "n,,",
// then kvpairs separated by 0x01, ending with 0x01 0x01.
func TestOAuthBearerInitialResponse(t *testing.T) {
	m := &kafkaconn.OAuthBearer{Token: func(context.Context) (string, error) { return "eyJhbGciOi.payload.sig", nil }}
	if m.Name() != "OAUTHBEARER" {
		t.Errorf("name %q", m.Name())
	}
	sess, ir, err := m.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(ir), "n,,\x01auth=Bearer eyJhbGciOi.payload.sig\x01\x01"; got != want {
		t.Errorf("initial response %q, want %q", got, want)
	}
	done, resp, err := sess.Next(context.Background(), nil)
	if !done || resp != nil || err != nil {
		t.Errorf("empty server answer: %v %q %v; want success", done, resp, err)
	}
	done, resp, err = sess.Next(context.Background(), []byte(`{"status":"invalid_token"}`))
	if !done || string(resp) != "\x01" || err == nil || !strings.Contains(err.Error(), "invalid_token") {
		t.Errorf("error challenge: %v %q %v; want the 0x01 acknowledgement and an error", done, resp, err)
	}
	bad := &kafkaconn.OAuthBearer{Token: func(context.Context) (string, error) { return "two words", nil }}
	if _, _, err := bad.Start(context.Background()); err == nil {
		t.Error("a token with a space was accepted")
	}
}

func tokenServer(t *testing.T, fail *atomic.Bool, issued *atomic.Int32, expiresIn int) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		user, pass, _ := r.BasicAuth()
		if fail.Load() || r.Form.Get("grant_type") != "client_credentials" || user != "client-1" || pass != "client-secret-value" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client","client_secret":"client-secret-value"}`))
			return
		}
		n := issued.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"access_token":"token-%d","token_type":"bearer","expires_in":%d}`, n, expiresIn)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func start(t *testing.T, m sasl.Mechanism) (string, error) {
	t.Helper()
	_, ir, err := m.Start(context.Background())
	return string(ir), err
}

func TestOAuthClientCredentials(t *testing.T) {
	var fail atomic.Bool
	var issued atomic.Int32
	srv := tokenServer(t, &fail, &issued, 3600)
	d, err := kafkaconn.Security{SASL: &kafkaconn.SASLConfig{Mechanism: "OAUTHBEARER", OAuthTokenURL: srv.URL,
		OAuthClientID: "client-1", OAuthClientSecret: "client-secret-value"}}.Dialer()
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // cached: one token for three connections
		ir, err := start(t, d.SASLMechanism)
		if err != nil || !strings.Contains(ir, "auth=Bearer token-1\x01") {
			t.Fatalf("initial response %q, %v", ir, err)
		}
	}
	if issued.Load() != 1 {
		t.Errorf("%d tokens fetched for three connections, want 1 (cached)", issued.Load())
	}

	// A token that expires within the renewal margin is renewed.
	var issued2 atomic.Int32
	short := tokenServer(t, &fail, &issued2, 30) // expires in 30s: inside the 1 minute margin
	d2, _ := kafkaconn.Security{SASL: &kafkaconn.SASLConfig{Mechanism: "OAUTHBEARER", OAuthTokenURL: short.URL,
		OAuthClientID: "client-1", OAuthClientSecret: "client-secret-value"}}.Dialer()
	_, _ = start(t, d2.SASLMechanism)
	ir, _ := start(t, d2.SASLMechanism)
	if issued2.Load() != 2 || !strings.Contains(ir, "token-2") {
		t.Errorf("%d tokens, second response %q: want a renewal before expiry", issued2.Load(), ir)
	}

	// A failing endpoint is reported by name, without its body.
	fail.Store(true)
	var issued3 atomic.Int32
	broken := tokenServer(t, &fail, &issued3, 3600)
	d3, _ := kafkaconn.Security{SASL: &kafkaconn.SASLConfig{Mechanism: "OAUTHBEARER", OAuthTokenURL: broken.URL,
		OAuthClientID: "client-1", OAuthClientSecret: "client-secret-value"}}.Dialer()
	_, err = start(t, d3.SASLMechanism)
	var fe *kafkaconn.FieldError
	if !errors.As(err, &fe) || fe.Field != "OAuthTokenURL" || !strings.Contains(err.Error(), "401") {
		t.Fatalf("failing endpoint: %v; want a FieldError naming OAuthTokenURL with the status", err)
	}
	if strings.Contains(err.Error(), "client-secret-value") {
		t.Errorf("the error leaks the client secret: %v", err)
	}
}

func TestOAuthTokenFileReadAtEveryConnection(t *testing.T) {
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte("first-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := kafkaconn.Security{SASL: &kafkaconn.SASLConfig{Mechanism: "OAUTHBEARER", OAuthTokenFile: f}}.Dialer()
	if err != nil {
		t.Fatal(err)
	}
	if ir, _ := start(t, d.SASLMechanism); !strings.Contains(ir, "Bearer first-token\x01") {
		t.Errorf("first: %q", ir)
	}
	if err := os.WriteFile(f, []byte("rotated-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ir, _ := start(t, d.SASLMechanism); !strings.Contains(ir, "Bearer rotated-token\x01") {
		t.Errorf("after rotation: %q", ir)
	}
}

func TestSecurityErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	_ = os.WriteFile(empty, []byte("no certificate here"), 0o600)
	tests := []struct {
		sec   kafkaconn.Security
		field string
	}{
		{kafkaconn.Security{TLS: &kafkaconn.TLSConfig{CAFile: filepath.Join(dir, "missing.pem")}}, "CAFile"},
		{kafkaconn.Security{TLS: &kafkaconn.TLSConfig{CAFile: empty}}, "CAFile"},
		{kafkaconn.Security{TLS: &kafkaconn.TLSConfig{CertFile: empty}}, "KeyFile"},
		{kafkaconn.Security{TLS: &kafkaconn.TLSConfig{CertFile: empty, KeyFile: empty}}, "CertFile"},
		{kafkaconn.Security{SASL: &kafkaconn.SASLConfig{Mechanism: "GSSAPI"}}, "Mechanism"},
		{kafkaconn.Security{SASL: &kafkaconn.SASLConfig{Username: "u", Password: "p"}}, "Mechanism"},
		{kafkaconn.Security{SASL: &kafkaconn.SASLConfig{Mechanism: "PLAIN", Password: "p"}}, "Username"},
		{kafkaconn.Security{SASL: &kafkaconn.SASLConfig{Mechanism: "SCRAM-SHA-512", Username: "u"}}, "Password"},
		{kafkaconn.Security{SASL: &kafkaconn.SASLConfig{Mechanism: "PLAIN", Username: "u", PasswordFile: filepath.Join(dir, "nope")}}, "PasswordFile"},
		{kafkaconn.Security{SASL: &kafkaconn.SASLConfig{Mechanism: "OAUTHBEARER"}}, "OAuthTokenFile"},
		{kafkaconn.Security{SASL: &kafkaconn.SASLConfig{Mechanism: "OAUTHBEARER", OAuthTokenURL: "https://idp/token"}}, "OAuthClientID"},
	}
	for _, tt := range tests {
		_, err := tt.sec.Dialer()
		var fe *kafkaconn.FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%+v: %v, want a FieldError for %s", tt.sec, err, tt.field)
		}
	}
}
