package main_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// pki is a test CA with a server and a client certificate, as PEM files.
type pki struct {
	dir                                   string
	ca, serverCert, serverKey, clientCert string
	clientKey, otherCA                    string
	serverTLS                             tls.Certificate
	pool                                  *x509.CertPool
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(p.dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	newCA := func(name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
			KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		return cert, key, der
	}
	leaf := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	ca, caKey, caDER := newCA("timbroadcast test CA")
	_, _, otherDER := newCA("some other CA")
	p.ca = write("ca.pem", "CERTIFICATE", caDER)
	p.otherCA = write("other-ca.pem", "CERTIFICATE", otherDER)
	sDER, sKey := leaf(ca, caKey, "broker", x509.ExtKeyUsageServerAuth)
	cDER, cKey := leaf(ca, caKey, "timbroadcast", x509.ExtKeyUsageClientAuth)
	keyDER := func(k *ecdsa.PrivateKey) []byte { b, _ := x509.MarshalECPrivateKey(k); return b }
	p.serverCert, p.serverKey = write("server.pem", "CERTIFICATE", sDER), write("server-key.pem", "EC PRIVATE KEY", keyDER(sKey))
	p.clientCert, p.clientKey = write("client.pem", "CERTIFICATE", cDER), write("client-key.pem", "EC PRIVATE KEY", keyDER(cKey))
	var err error
	if p.serverTLS, err = tls.LoadX509KeyPair(p.serverCert, p.serverKey); err != nil {
		t.Fatal(err)
	}
	p.pool = x509.NewCertPool()
	p.pool.AddCert(ca)
	return p
}

// secureCluster starts kfake with opts and returns it, reached by the test
// with sec.
func secureCluster(t *testing.T, sec kafkaconn.Security, opts ...kfake.Opt) *consumertest.Cluster {
	t.Helper()
	d, err := sec.Dialer()
	if err != nil {
		t.Fatal(err)
	}
	return consumertest.NewFakeSecure(t, d, opts...)
}

// deliverOver runs the real binary against kc with the given settings and
// checks it delivers and commits; then publish and replay --dry-run work
// with the same settings.
func deliverOver(t *testing.T, kc *consumertest.Cluster, settings map[string]string) {
	t.Helper()
	emu := sendertest.NewServer(sendertest.Options{AppID: 1400000001, Admin: admin, SecretKey: key})
	t.Cleanup(emu.Close)
	topic := kc.Topic(t, "secure", 2)
	dlq := kc.Topic(t, "secure-dlq", 1)
	env := baseEnv(kc.Brokers, topic, dlq, emu.URL)
	for k, v := range settings {
		env[k] = v
	}
	ce := &crashEnv{kc: kc, emu: emu, topic: topic, env: env, want: []string{"a-0", "b-0"}}
	for _, text := range ce.want {
		out, stderr, code := runCmd(t, env, "", "publish", "--text", text, "--key", text[:1])
		if code != 0 {
			t.Fatalf("publish over %v: exit %d\n%s\n%s", settings, code, out, stderr)
		}
	}
	w := startWorker(t, env)
	ce.waitCommitted(t, time.Minute)
	ce.check(t)
	_ = w.cmd.Process.Kill()
	<-w.done
	if out, stderr, code := runCmd(t, env, "", "replay", "--dry-run"); code != 0 || !strings.Contains(out, "would replay 0 record(s)") {
		t.Fatalf("replay over %v: exit %d\n%s\n%s", settings, code, out, stderr)
	}
}

func TestKafkaTLSAndSASL(t *testing.T) {
	needBinary(t)
	p := newPKI(t)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{p.serverTLS}, MinVersion: tls.VersionTLS12}
	mutual := &tls.Config{Certificates: []tls.Certificate{p.serverTLS}, MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.pool}
	pwFile := filepath.Join(p.dir, "password")
	if err := os.WriteFile(pwFile, []byte("s3cret-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("TLS", func(t *testing.T) {
		kc := secureCluster(t, kafkaconn.Security{TLS: &kafkaconn.TLSConfig{CAFile: p.ca}}, kfake.TLS(serverTLS))
		deliverOver(t, kc, map[string]string{"KAFKA_TLS_CA_FILE": p.ca})
	})
	t.Run("mutual TLS", func(t *testing.T) {
		sec := kafkaconn.Security{TLS: &kafkaconn.TLSConfig{CAFile: p.ca, CertFile: p.clientCert, KeyFile: p.clientKey}}
		kc := secureCluster(t, sec, kfake.TLS(mutual))
		deliverOver(t, kc, map[string]string{"KAFKA_TLS_CA_FILE": p.ca, "KAFKA_TLS_CERT_FILE": p.clientCert, "KAFKA_TLS_KEY_FILE": p.clientKey})
	})
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech+" over TLS", func(t *testing.T) {
			sec := kafkaconn.Security{TLS: &kafkaconn.TLSConfig{CAFile: p.ca},
				SASL: &kafkaconn.SASLConfig{Mechanism: mech, Username: "alice", Password: "s3cret-password"}}
			kc := secureCluster(t, sec, kfake.TLS(serverTLS), kfake.EnableSASL(), kfake.Superuser(mech, "alice", "s3cret-password"))
			deliverOver(t, kc, map[string]string{"KAFKA_TLS_CA_FILE": p.ca, "KAFKA_SASL_MECHANISM": mech,
				"KAFKA_SASL_USERNAME": "alice", "KAFKA_SASL_PASSWORD_FILE": pwFile})
		})
	}

	// Bad credentials: exit 2 within 10s, naming the setting, never
	// printing a secret.
	scram := secureCluster(t, kafkaconn.Security{TLS: &kafkaconn.TLSConfig{CAFile: p.ca},
		SASL: &kafkaconn.SASLConfig{Mechanism: "SCRAM-SHA-512", Username: "alice", Password: "s3cret-password"}},
		kfake.TLS(serverTLS), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "alice", "s3cret-password"))
	mtls := secureCluster(t, kafkaconn.Security{TLS: &kafkaconn.TLSConfig{CAFile: p.ca, CertFile: p.clientCert, KeyFile: p.clientKey}},
		kfake.TLS(mutual))
	for _, tt := range []struct {
		name string
		kc   *consumertest.Cluster
		set  map[string]string
		want string
	}{
		{"wrong password", scram, map[string]string{"KAFKA_TLS_CA_FILE": p.ca, "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
			"KAFKA_SASL_USERNAME": "alice", "KAFKA_SASL_PASSWORD": "wrong-password-value"}, "KAFKA_SASL_PASSWORD"},
		{"wrong CA", scram, map[string]string{"KAFKA_TLS_CA_FILE": p.otherCA, "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
			"KAFKA_SASL_USERNAME": "alice", "KAFKA_SASL_PASSWORD": "s3cret-password"}, "KAFKA_TLS_CA_FILE"},
		{"missing client certificate", mtls, map[string]string{"KAFKA_TLS_CA_FILE": p.ca}, "KAFKA_TLS_CERT_FILE"},
		{"plaintext to a TLS broker", mtls, map[string]string{}, "KAFKA_TLS"},
		{"unknown mechanism", scram, map[string]string{"KAFKA_TLS_CA_FILE": p.ca, "KAFKA_SASL_MECHANISM": "KERBEROS"}, "KAFKA_SASL_MECHANISM"},
		{"unreadable password file", scram, map[string]string{"KAFKA_TLS_CA_FILE": p.ca, "KAFKA_SASL_MECHANISM": "PLAIN",
			"KAFKA_SASL_USERNAME": "alice", "KAFKA_SASL_PASSWORD_FILE": filepath.Join(p.dir, "nope")}, "KAFKA_SASL_PASSWORD_FILE"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := baseEnv(tt.kc.Brokers, "t", "t.dlq", "http://127.0.0.1:1")
			for k, v := range tt.set {
				env[k] = v
			}
			for _, cmd := range [][]string{{"run"}, {"publish", "--text", "x"}, {"replay", "--dry-run"}} {
				start := time.Now()
				_, stderr, code := runCmd(t, env, "", cmd...)
				if cmd[0] == "run" {
					t.Logf("%s", stderr)
				}
				if code != 2 || !strings.Contains(stderr, tt.want) {
					t.Errorf("%s: exit %d, stderr %q; want 2 naming %s", cmd[0], code, stderr, tt.want)
				}
				if d := time.Since(start); d > 10*time.Second {
					t.Errorf("%s: took %v to fail", cmd[0], d)
				}
				for _, secret := range []string{"s3cret-password", "wrong-password-value", key} {
					if strings.Contains(stderr, secret) {
						t.Errorf("%s: stderr leaks a secret: %q", cmd[0], stderr)
					}
				}
			}
		})
	}
}

// TestSecretsNeverShown: with every credential set, a failing start and a
// failing send print none of them.
func TestSecretsNeverShown(t *testing.T) {
	needBinary(t)
	secrets := map[string]string{
		"KAFKA_SASL_PASSWORD": "kafka-password-9f2c", "KAFKA_SASL_OAUTH_CLIENT_SECRET": "oauth-secret-7d1e",
		"TIM_SECRET_KEY": "tim-secret-key-4b8a",
	}
	// A failing start: the broker is plaintext, the worker asks for SASL.
	kc := consumertest.Start(t)
	env := baseEnv(kc.Brokers, "t", "t.dlq", "http://127.0.0.1:1")
	for k, v := range secrets {
		env[k] = v
	}
	env["KAFKA_SASL_MECHANISM"], env["KAFKA_SASL_USERNAME"] = "PLAIN", "alice"
	_, stderr, code := runCmd(t, env, "", "run")
	if code == 0 {
		t.Fatalf("run against a broker without SASL succeeded")
	}
	// A failing send: the API refuses the signature (a wrong key).
	emu := sendertest.NewServer(sendertest.Options{AppID: 1400000001, Admin: admin, SecretKey: "the-right-key"})
	t.Cleanup(emu.Close)
	topic, dlq := kc.Topic(t, "leak", 1), kc.Topic(t, "leak-dlq", 1)
	if err := kc.Produce(context.Background(), topic, kafka.Message{Key: []byte("k"),
		Value: []byte(`{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"x"}}]}`)}); err != nil {
		t.Fatal(err)
	}
	env2 := baseEnv(kc.Brokers, topic, dlq, emu.URL)
	env2["TIM_SECRET_KEY"] = secrets["TIM_SECRET_KEY"]
	env2["LOG_LEVEL"] = "debug"
	w := startWorker(t, env2)
	deadline := time.Now().Add(30 * time.Second)
	for emu.Stats().Calls < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	_ = w.cmd.Process.Kill()
	<-w.done
	out := stderr + w.logs.String()
	if !strings.Contains(w.logs.String(), "70003") && !strings.Contains(w.logs.String(), "pause") {
		t.Errorf("the failing send did not show in the logs:\n%s", w.logs.String())
	}
	for name, v := range secrets {
		if strings.Contains(out, v) {
			t.Errorf("%s's value appears in the output", name)
		}
	}
}

// TestSASLOverPlaintext: credentials that would cross the network in
// clear (PLAIN, OAUTHBEARER) refuse to start without TLS, naming
// KAFKA_TLS; KAFKA_SASL_PLAINTEXT=on allows it with a warning; SCRAM
// without TLS starts with a warning.
func TestSASLOverPlaintext(t *testing.T) {
	needBinary(t)
	base := baseEnv([]string{"127.0.0.1:1"}, "t", "t.dlq", "http://127.0.0.1:1")
	base["KAFKA_SASL_USERNAME"], base["KAFKA_SASL_PASSWORD"] = "alice", "plain-password-31"
	for _, c := range []struct {
		env      map[string]string
		code     int
		contains string
	}{
		{map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN"}, 2, "KAFKA_TLS"},
		{map[string]string{"KAFKA_SASL_MECHANISM": "OAUTHBEARER", "KAFKA_SASL_OAUTH_TOKEN_FILE": "/dev/null"}, 2, "KAFKA_TLS"},
		{map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_PLAINTEXT": "on"}, -1, "credentials cross the network in clear"},
		{map[string]string{"KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}, -1, "SCRAM sends no password"},
	} {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for k, v := range c.env {
			env[k] = v
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		var stderr bytes.Buffer
		cmd := command(ctx, env, "run")
		cmd.Stderr = &stderr
		err := cmd.Run()
		cancel()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if (c.code >= 0 && code != c.code) || !strings.Contains(stderr.String(), c.contains) {
			t.Errorf("%v: exit %d, stderr %.400q; want %d and %q", c.env, code, stderr.String(), c.code, c.contains)
		}
		if strings.Contains(stderr.String(), "plain-password-31") {
			t.Errorf("%v: the password is in the output", c.env)
		}
	}
}

// TestKeyRotation: the app's key is rotated while events flow (the
// console's new key, written to TIM_SECRET_KEY_FILE the way the kubelet
// updates a Secret: a new file renamed over the old): the same process
// signs with the new key, every event is delivered once, and neither key
// appears in its logs at debug.
func TestKeyRotation(t *testing.T) {
	needBinary(t)
	ce := newCrashEnv(t, 1, 5, sendertest.Options{}, map[string]string{"LOG_LEVEL": "debug"})
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	writeKey := func(k string) {
		tmp := filepath.Join(dir, "key.new")
		if err := os.WriteFile(tmp, []byte(k+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, keyFile); err != nil {
			t.Fatal(err)
		}
	}
	writeKey(key)
	delete(ce.env, "TIM_SECRET_KEY")
	ce.env["TIM_SECRET_KEY_FILE"] = keyFile
	w := startWorker(t, ce.env)
	ce.waitCommitted(t, time.Minute)

	const newKey = "rotated-secret-key-5e9d01"
	ce.emu.SetSecretKey(newKey)
	writeKey(newKey)
	var more []kafka.Message
	for i := range 5 {
		text := fmt.Sprintf("after-%d", i)
		more = append(more, kafka.Message{Key: []byte("r"), Value: textEvent(t, text, nil)})
		ce.want = append(ce.want, text)
	}
	if err := ce.kc.Produce(context.Background(), ce.topic, more...); err != nil {
		t.Fatal(err)
	}
	ce.waitCommitted(t, time.Minute)
	alive(t, w)
	ce.check(t)
	dl, _ := ce.kc.ReadAll(context.Background(), ce.env["KAFKA_DLQ_TOPIC"])
	if len(dl) != 0 {
		t.Errorf("%d dead letters, want none", len(dl))
	}
	for _, k := range []string{key, newKey} {
		if strings.Contains(w.logs.String(), k) {
			t.Errorf("a key (%.6s...) appears in the logs", k)
		}
	}
}

// TestSecretsEverySurface: with the app's key, a Kafka password and a
// registry password set, a worker that delivers, dead-letters and writes
// receipts, logs at debug with console spans, then is paused by a refused
// signature shows none of them, nor any UserSig it sent, on any surface:
// its logs and spans, /readyz, /metrics, receipts, dead-letter records and
// `status --json`.
func TestSecretsEverySurface(t *testing.T) {
	needBinary(t)
	reg := consumertest.NewRegistry(t)
	reg.User, reg.Password = "reg-user", "registry-password-61c3"
	ce := newCrashEnv(t, 1, 3, sendertest.Options{}, map[string]string{"LOG_LEVEL": "debug", "OTEL_TRACES_EXPORTER": "console",
		"KAFKA_SCHEMA_REGISTRY_URL": reg.URL, "KAFKA_SCHEMA_REGISTRY_USERNAME": "reg-user",
		"KAFKA_SCHEMA_REGISTRY_PASSWORD": reg.Password, "KAFKA_SASL_OAUTH_CLIENT_SECRET": "unused-oauth-secret-88aa"})
	receipts := ce.kc.Topic(t, "receipts", 1)
	ce.env["KAFKA_RECEIPT_TOPIC"] = receipts
	if err := ce.kc.Produce(context.Background(), ce.topic, kafka.Message{Key: []byte("bad"), Value: []byte(`{"MsgBody":1}`)}); err != nil {
		t.Fatal(err)
	}
	// The OAuth secret alone (no mechanism) is refused at start; drop it
	// for the run, keep its value for the search.
	delete(ce.env, "KAFKA_SASL_OAUTH_CLIENT_SECRET")
	w := startWorker(t, ce.env)
	addr := waitHTTPAddr(t, w)
	ce.waitCommitted(t, time.Minute)
	// Now the key is rotated on the server only: every call is refused
	// and the worker pauses, naming the code in /readyz.
	ce.emu.SetSecretKey("a-key-the-worker-does-not-have")
	if err := ce.kc.Produce(context.Background(), ce.topic, kafka.Message{Key: []byte("k"), Value: textEvent(t, "held", nil)}); err != nil {
		t.Fatal(err)
	}
	var readyz string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if code, body := status(t, "http://"+addr+"/readyz"); code == 503 && strings.Contains(body, "paused") {
			readyz = body
			break
		}
	}
	if readyz == "" {
		t.Fatal("the worker did not pause on the refused signature")
	}
	surfaces := map[string]string{"/readyz": readyz, "/metrics": get(t, "http://"+addr+"/metrics")}
	js, _, _ := runCmd(t, ce.env, "", "status", "--json")
	surfaces["status --json"] = js
	for _, topic := range []string{receipts, ce.env["KAFKA_DLQ_TOPIC"]} {
		ms, err := ce.kc.ReadAll(context.Background(), topic)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, m := range ms {
			b.Write(m.Key)
			b.Write(m.Value)
			for _, h := range m.Headers {
				b.WriteString(h.Key)
				b.Write(h.Value)
			}
		}
		surfaces[topic] = b.String()
	}
	_ = w.cmd.Process.Kill()
	<-w.done
	surfaces["logs and spans"] = w.logs.String()
	if !strings.Contains(surfaces["logs and spans"], `"SpanContext"`) {
		t.Error("no span was exported to the logs")
	}
	secrets := append([]string{key, reg.Password, "unused-oauth-secret-88aa"}, ce.emu.Signatures()...)
	for name, text := range surfaces {
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("%s shows a secret (%.8s...)", name, s)
			}
		}
	}
}

// TestRegistryURLRefusals: a registry URL carrying credentials is refused
// naming the _FILE setting to use instead, without printing the password;
// basic auth over http:// is refused except to loopback.
func TestRegistryURLRefusals(t *testing.T) {
	needBinary(t)
	env := baseEnv([]string{"127.0.0.1:1"}, "t", "t.dlq", "http://127.0.0.1:1")
	for _, c := range []struct {
		extra map[string]string
		want  string
	}{
		{map[string]string{"KAFKA_SCHEMA_REGISTRY_URL": "https://key:url-password-77f1@registry.example.com"}, "KAFKA_SCHEMA_REGISTRY_PASSWORD_FILE"},
		{map[string]string{"KAFKA_SCHEMA_REGISTRY_URL": "http://registry.example.com", "KAFKA_SCHEMA_REGISTRY_USERNAME": "key",
			"KAFKA_SCHEMA_REGISTRY_PASSWORD": "url-password-77f1"}, "basic auth would send the password in clear"},
	} {
		e := map[string]string{}
		for k, v := range env {
			e[k] = v
		}
		for k, v := range c.extra {
			e[k] = v
		}
		_, stderr, code := runCmd(t, e, "", "run")
		if code != 2 || !strings.Contains(stderr, "KAFKA_SCHEMA_REGISTRY_URL") || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, %q; want 2 naming KAFKA_SCHEMA_REGISTRY_URL and %q", c.extra, code, stderr, c.want)
		}
		if strings.Contains(stderr, "url-password-77f1") {
			t.Errorf("%v: the password is printed", c.extra)
		}
	}
}
