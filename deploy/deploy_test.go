// Package deploy holds what runs timbroadcast elsewhere: a container image
// (Dockerfile), a compose file with a real Kafka, and Kubernetes manifests
// (k8s/). Its test checks that they parse and hold what they promise.
package deploy_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/timbroadcast/timbroadcast/sender"
)

// settings the worker reads from the environment (cmd/timbroadcast).
var known = map[string]bool{}

func init() {
	for _, k := range strings.Fields(`KAFKA_BROKERS KAFKA_TOPIC KAFKA_GROUP_ID KAFKA_DLQ_TOPIC KAFKA_START_OFFSET
		KAFKA_FETCH_MAX_WAIT KAFKA_SESSION_TIMEOUT KAFKA_HEARTBEAT_INTERVAL KAFKA_REBALANCE_TIMEOUT KAFKA_JOIN_BACKOFF
		TIM_SDKAPPID TIM_ADMIN TIM_SECRET_KEY TIM_SECRET_KEY_FILE TIM_REGION TIM_ENDPOINT TIM_RATE TIM_ATTEMPT_TIMEOUT
		TIM_RETRY_INITIAL TIM_RETRY_MAX TIM_SIG_LIFETIME REVOKE_GRACE DRAIN_TIMEOUT PAUSE_INITIAL PAUSE_MAX HTTP_ADDR
		LOG_LEVEL EMULATOR_ADDR EMULATOR_RATE EMULATOR_DEDUPE_WINDOW EMULATOR_INTERNAL_ERROR_RATE
		EMULATOR_BAD_GATEWAY_RATE EMULATOR_DROP_RATE EMULATOR_LATENCY TIM_MERGE TIM_MERGE_MAX_BYTES REPLAY_GROUP_ID
		TIM_STUCK_AFTER TIM_RETRY_MAX_ELAPSED KAFKA_PARTITION_WATCH_INTERVAL KAFKA_COMMIT_INTERVAL EMULATOR_ANSWER EMULATOR_LIMITER EMULATOR_ACCOUNTS
		KAFKA_RECEIPT_TOPIC OTEL_EXPORTER_OTLP_ENDPOINT OTEL_SERVICE_NAME KAFKA_PARTITIONER OTEL_PROPAGATORS KAFKA_GROUP_INSTANCE_ID
		TIM_MAP TIM_MAP_FILE KAFKA_SCHEMA_REGISTRY_URL KAFKA_SCHEMA_REGISTRY_USERNAME KAFKA_SCHEMA_REGISTRY_PASSWORD_FILE`) {
		known[k] = true
	}
}

func decodeAll(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
	return docs
}

func get(m any, path ...string) any {
	for _, p := range path {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[p]
	}
	return m
}

func TestCompose(t *testing.T) {
	docs := decodeAll(t, "compose.yaml")
	if len(docs) != 1 {
		t.Fatalf("compose.yaml holds %d documents", len(docs))
	}
	services, _ := docs[0]["services"].(map[string]any)
	for _, s := range []string{"kafka", "topics", "emulator", "worker", "demo"} {
		if services[s] == nil {
			t.Errorf("service %s missing", s)
		}
	}
	if img, _ := get(services, "kafka", "image").(string); !strings.HasPrefix(img, "apache/kafka:") {
		t.Errorf("kafka image %q, want apache/kafka", img)
	}
	if get(services, "kafka", "environment", "KAFKA_PROCESS_ROLES") != "broker,controller" {
		t.Error("kafka is not a KRaft broker+controller")
	}
	env, _ := get(services, "worker", "environment").(map[string]any)
	for k := range env {
		if k != "<<" && !known[k] {
			t.Errorf("worker sets %s, which timbroadcast does not read", k)
		}
	}
	if ep, _ := env["TIM_ENDPOINT"].(string); ep != "" {
		if err := sender.CheckEndpoint(ep); err != nil {
			t.Errorf("worker's TIM_ENDPOINT: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(".", "compose-secret-key.txt")); err != nil {
		t.Errorf("compose secret file: %v", err)
	}
	// With a Docker client that has compose, let it validate the file too
	// (no daemon needed).
	if exec.Command("docker", "compose", "version").Run() == nil {
		out, err := exec.Command("docker", "compose", "-f", "compose.yaml", "config", "-q").CombinedOutput()
		if err != nil {
			t.Errorf("docker compose config: %v\n%s", err, out)
		}
	} else {
		t.Log("docker compose not installed: checked by YAML parse only")
	}
}

func TestKubernetes(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	kinds := map[string]map[string]any{}
	for _, f := range files {
		for _, doc := range decodeAll(t, f) {
			kind, _ := doc["kind"].(string)
			if doc["apiVersion"] == nil || kind == "" {
				t.Errorf("%s: a document without apiVersion or kind", f)
				continue
			}
			if kind != "Kustomization" && get(doc, "metadata", "name") == nil {
				t.Errorf("%s: %s without metadata.name", f, kind)
			}
			kinds[kind] = doc
		}
	}
	for _, k := range []string{"StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "Kustomization"} {
		if kinds[k] == nil {
			t.Errorf("no %s manifest", k)
		}
	}
	sts := kinds["StatefulSet"]
	if get(sts, "spec", "serviceName") != get(kinds["Service"], "metadata", "name") || get(kinds["Service"], "spec", "clusterIP") != "None" {
		t.Error("the StatefulSet's serviceName does not name the headless Service")
	}
	containers, _ := get(sts, "spec", "template", "spec", "containers").([]any)
	if len(containers) != 1 {
		t.Fatalf("the StatefulSet has %d containers", len(containers))
	}
	c := containers[0]
	// Each pod is a static member named by its pod name.
	instance := false
	env, _ := get(c, "env").([]any)
	for _, e := range env {
		if get(e, "name") == "KAFKA_GROUP_INSTANCE_ID" && get(e, "valueFrom", "fieldRef", "fieldPath") == "metadata.name" {
			instance = true
		}
	}
	if !instance {
		t.Error("the StatefulSet does not set KAFKA_GROUP_INSTANCE_ID from the pod name")
	}
	for _, p := range [][]string{{"livenessProbe", "httpGet", "path"}, {"readinessProbe", "httpGet", "path"},
		{"resources", "limits", "memory"}, {"resources", "requests", "cpu"}} {
		if get(c, p...) == nil {
			t.Errorf("the container lacks %s", strings.Join(p, "."))
		}
	}
	if get(c, "livenessProbe", "httpGet", "path") != "/healthz" || get(c, "readinessProbe", "httpGet", "path") != "/readyz" {
		t.Error("probes do not use /healthz and /readyz")
	}
	data, _ := get(kinds["ConfigMap"], "data").(map[string]any)
	for k := range data {
		if !known[k] {
			t.Errorf("configmap sets %s, which timbroadcast does not read", k)
		}
	}
}

// TestDeploySafeToCopy: compose publishes every port on 127.0.0.1 only
// (its Kafka is plaintext and unauthenticated), and the Kubernetes Service
// stays cluster-internal.
func TestDeploySafeToCopy(t *testing.T) {
	docs := decodeAll(t, "compose.yaml")
	services, _ := docs[0]["services"].(map[string]any)
	for name, s := range services {
		ports, _ := get(s, "ports").([]any)
		for _, p := range ports {
			if ps, _ := p.(string); !strings.HasPrefix(ps, "127.0.0.1:") {
				t.Errorf("compose service %s publishes %q on every interface; want 127.0.0.1:...", name, p)
			}
		}
	}
	for _, doc := range decodeAll(t, filepath.Join("k8s", "service.yaml")) {
		if typ, _ := get(doc, "spec", "type").(string); typ == "LoadBalancer" || typ == "NodePort" {
			t.Errorf("the Service is of type %s: the worker's port must stay cluster-internal", typ)
		}
	}
}
