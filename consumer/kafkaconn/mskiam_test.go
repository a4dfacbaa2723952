//go:build !nomskiam && !lean

package kafkaconn_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go/sasl"

	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
)

// TestAWSMSKIAMPayload checks the shape of the signed payload (it has not
// run against Amazon MSK here): the JSON fields of MSK's IAM
// authentication, signed with SigV4 for the kafka-cluster:Connect action.
func TestAWSMSKIAMPayload(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
	t.Setenv("AWS_REGION", "eu-west-1")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	d, err := kafkaconn.Security{SASL: &kafkaconn.SASLConfig{Mechanism: "AWS_MSK_IAM"}}.Dialer()
	if err != nil {
		t.Fatal(err)
	}
	if d.SASLMechanism.Name() != "AWS_MSK_IAM" {
		t.Errorf("name %q", d.SASLMechanism.Name())
	}
	ctx := sasl.WithMetadata(context.Background(), &sasl.Metadata{Host: "b-1.demo.kafka.eu-west-1.amazonaws.com", Port: 9098})
	_, ir, err := d.SASLMechanism.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var payload map[string]string
	if err := json.Unmarshal(ir, &payload); err != nil {
		t.Fatalf("payload %s is not a JSON object of strings: %v", ir, err)
	}
	want := map[string]string{"version": "2020_10_22", "host": "b-1.demo.kafka.eu-west-1.amazonaws.com",
		"action": "kafka-cluster:Connect", "x-amz-algorithm": "AWS4-HMAC-SHA256"}
	for k, v := range want {
		if payload[k] != v {
			t.Errorf("%s = %q, want %q", k, payload[k], v)
		}
	}
	for _, k := range []string{"x-amz-credential", "x-amz-date", "x-amz-signedheaders", "x-amz-expires", "x-amz-signature", "user-agent"} {
		if payload[k] == "" {
			t.Errorf("payload lacks %s", k)
		}
	}
	if !strings.HasPrefix(payload["x-amz-credential"], "AKIDEXAMPLE/") || !strings.Contains(payload["x-amz-credential"], "/eu-west-1/kafka-cluster/aws4_request") {
		t.Errorf("credential scope %q", payload["x-amz-credential"])
	}
	if strings.Contains(string(ir), "wJalrXUtnFEMI") {
		t.Error("the payload carries the secret key")
	}
}
