package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer/consumertest"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// giftProgram broadcasts big gifts as text and drops everything else; a
// gift whose amount is not a number breaks it (map_failed).
const giftProgram = `select(.type == "gift" and .amount >= 100) | "\(.user) sent \(.amount + 0) in \(.room)"`

// domainEnv is a topic of domain JSON events: n gifts (every other one
// small, so dropped) and likes (dropped), and one gift whose amount is a
// string. It returns the texts the mapping must deliver.
func domainEnv(t *testing.T, n int, extra map[string]string) (*crashEnv, []string) {
	t.Helper()
	ce := newCrashEnv(t, 3, 0, sendertest.Options{}, extra)
	var msgs []kafka.Message
	var want []string
	for i := range n {
		key := fmt.Sprintf("u%d", i%6)
		ev := map[string]any{"type": "gift", "user": fmt.Sprintf("%s-%d", key, i), "amount": 50 + (i%2)*500, "room": "r9"}
		if i%5 == 4 {
			ev = map[string]any{"type": "like", "user": key}
		} else if i%2 == 1 {
			want = append(want, fmt.Sprintf("%s sent %d in r9", ev["user"], ev["amount"]))
		}
		v, _ := json.Marshal(ev)
		msgs = append(msgs, kafka.Message{Key: []byte(key), Value: v})
	}
	msgs = append(msgs, kafka.Message{Key: []byte("u0"), Value: []byte(`{"type":"gift","user":"bad","amount":"500","room":"r9"}`)})
	if err := ce.kc.Produce(context.Background(), ce.topic, msgs...); err != nil {
		t.Fatal(err)
	}
	ce.want = want
	return ce, want
}

// deliveredTextsOf returns the texts of every delivered element.
func deliveredTextsOf(emu *sendertest.Server) []string {
	var out []string
	for _, d := range emu.Delivered() {
		for _, el := range d.Elements() {
			var c sender.TextElem
			_ = json.Unmarshal(el.MsgContent, &c)
			out = append(out, c.Text)
		}
	}
	return out
}

// checkTexts asserts got holds each of want exactly once and nothing else.
func checkTexts(t *testing.T, got, want []string) {
	t.Helper()
	count := map[string]int{}
	for _, g := range got {
		count[g]++
	}
	for _, w := range want {
		if count[w] != 1 {
			t.Errorf("%q delivered %d times, want once", w, count[w])
		}
		delete(count, w)
	}
	for g, n := range count {
		t.Errorf("%q delivered %d times, want never", g, n)
	}
}

// TestMappingEndToEnd: domain events mapped by TIM_MAP in the real binary:
// the dropped ones committed and given a "filtered" receipt, the broken one
// dead-lettered map_failed with jq's error, the rest delivered once with
// the mapped text.
func TestMappingEndToEnd(t *testing.T) {
	needBinary(t)
	ce, want := domainEnv(t, 60, map[string]string{"TIM_MAP": giftProgram})
	receipts := ce.kc.Topic(t, "receipts", 1)
	ce.env["KAFKA_RECEIPT_TOPIC"] = receipts
	w := startWorker(t, ce.env)
	addr := waitHTTPAddr(t, w)
	ce.waitCommitted(t, time.Minute)
	checkTexts(t, deliveredTextsOf(ce.emu), want)
	dl, err := ce.kc.ReadAll(context.Background(), ce.env["KAFKA_DLQ_TOPIC"])
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 1 || wire.Header(dl[0], wire.HeaderDLQReason) != wire.ReasonMapFailed ||
		!strings.Contains(wire.Header(dl[0], wire.HeaderDLQInfo), "jq:") || !strings.Contains(string(dl[0].Value), `"user":"bad"`) {
		t.Fatalf("dead letters %+v, want the broken gift as map_failed with jq's error and its original value", dl)
	}
	rs, err := ce.kc.ReadAll(context.Background(), receipts)
	if err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]int{}
	for _, r := range rs {
		rc, err := wire.DecodeReceipt(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		outcomes[rc.Outcome]++
	}
	filtered := 61 - len(want) - 1
	if outcomes[wire.OutcomeFiltered] != filtered || outcomes[wire.OutcomeDelivered] != len(want) || outcomes[wire.OutcomeDeadLettered] != 1 {
		t.Errorf("receipts by outcome %v, want %d filtered, %d delivered, 1 dead-lettered", outcomes, filtered, len(want))
	}
	if got := metricValue(t, addr, `timbroadcast_records_skipped_total{reason="filtered"}`); got != float64(filtered) {
		t.Errorf("skipped{filtered} = %v, want %d", got, filtered)
	}
}

// TestMappingCrash: SIGKILLs mid-stream with a mapping on: every restart
// maps each record to the same bytes and Random, so nothing is shown twice.
func TestMappingCrash(t *testing.T) {
	needBinary(t)
	ce, want := domainEnv(t, 150, map[string]string{"TIM_MAP": giftProgram, "TIM_RATE": "100"})
	ce.emu.SetFaults(sendertest.Faults{InternalErrorRate: 0.1})
	killMidStream(t, ce, 5, 8, rand.New(rand.NewPCG(7, 22)))
	w := startWorker(t, ce.env)
	ce.waitCommitted(t, time.Minute)
	checkTexts(t, deliveredTextsOf(ce.emu), want)
	_ = w
}

// TestMappingSettings: a program that cannot run, or that is not a pure
// function of the record, exits 2 at start naming TIM_MAP.
func TestMappingSettings(t *testing.T) {
	needBinary(t)
	env := baseEnv([]string{"127.0.0.1:1"}, "t", "t.dlq", "http://127.0.0.1:1")
	for prog, want := range map[string]string{
		`.a |`:            "syntax",
		`{t: now}`:        "uses now",
		`$ENV.SECRET`:     "uses $ENV",
		`env.HOME`:        "uses env",
		`"\($nokey)"`:     "variable not defined",
		`[inputs] | last`: "input",
	} {
		env["TIM_MAP"] = prog
		_, stderr, code := runCmd(t, env, "", "run")
		if code != 2 || !strings.Contains(stderr, "TIM_MAP") || !strings.Contains(stderr, want) {
			t.Errorf("TIM_MAP=%s: exit %d, %q; want 2 naming TIM_MAP and %q", prog, code, stderr, want)
		}
	}
}

// TestMapCommand: `timbroadcast map` shows what each record would become
// and exits 1 when one would be dead-lettered.
func TestMapCommand(t *testing.T) {
	needBinary(t)
	in := strings.Join([]string{
		`{"key":"g1","event":{"type":"gift","user":"ann","amount":500,"room":"r1"}}`,
		`{"type":"like","user":"bob"}`,
		`{"key":"g2","event":{"type":"gift","user":"cy","amount":"lots","room":"r1"}}`,
	}, "\n")
	out, stderr, code := runCmd(t, map[string]string{"TIM_MAP": giftProgram}, in, "map", "--file", "-")
	if code != 1 {
		t.Errorf("exit %d, want 1 (one record would be dead-lettered); stderr %s", code, stderr)
	}
	for _, want := range []string{`record 1 (key g1): {"Random":`, `"Text":"ann sent 500 in r1"`,
		"record 2: skipped", "record 3 (key g2): dead-lettered: map_failed: jq:", "3 record(s): 1 mapped, 1 skipped, 1 dead-lettered"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if out, _, code := runCmd(t, map[string]string{"TIM_MAP": giftProgram}, in[:strings.Index(in, "\n")], "map", "--file", "-"); code != 0 {
		t.Errorf("all mapped: exit %d, want 0\n%s", code, out)
	}
}

// TestUnknownVariables: a variable of timbroadcast's families that the
// command does not know is reported with the closest setting; with
// --strict-env it is an error.
func TestUnknownVariables(t *testing.T) {
	needBinary(t)
	env := map[string]string{"TIM_MAP": giftProgram, "TIM_MAP_FILES": "x", "KAFKA_SCHEMA_REGISTRY_USER": "me", "OTHER": "1"}
	_, stderr, code := runCmd(t, env, `{"type":"like"}`, "map", "--file", "-")
	if code != 0 || !strings.Contains(stderr, "TIM_MAP_FILES is not a setting; did you mean TIM_MAP_FILE?") ||
		!strings.Contains(stderr, "did you mean KAFKA_SCHEMA_REGISTRY_USERNAME?") || strings.Contains(stderr, "OTHER") {
		t.Errorf("exit %d, stderr %s; want warnings naming the closest settings", code, stderr)
	}
	_, stderr, code = runCmd(t, env, `{"type":"like"}`, "map", "--file", "-", "--strict-env")
	if code != 2 || !strings.Contains(stderr, "TIM_MAP_FILES") {
		t.Errorf("--strict-env: exit %d, %s; want 2", code, stderr)
	}
}

// TestSchemaRegistryEndToEnd: Avro, Protobuf and JSON Schema records behind
// an in-process registry over HTTP, mapped and delivered; an unknown
// schema id dead-lettered schema_not_found; a registry that is down holds
// the partition, then it resumes; each schema fetched once.
func TestSchemaRegistryEndToEnd(t *testing.T) {
	needBinary(t)
	reg := consumertest.NewRegistry(t)
	reg.User, reg.Password = "key", "registry-secret"
	const avroSchema = `{"type":"record","name":"Gift","namespace":"shop","fields":[{"name":"user","type":"string"},
	 {"name":"amount","type":"long"},{"name":"note","type":["null","string"]}]}`
	reg.Add(1, "AVRO", "gifts-value", avroSchema)
	reg.Add(2, "PROTOBUF", "likes-value", `syntax = "proto3"; package shop; message Like { string user = 1; int64 count = 2; }`)
	reg.Add(3, "JSON", "notes-value", `{"type":"object"}`)
	ce := newCrashEnv(t, 1, 0, sendertest.Options{}, map[string]string{
		"KAFKA_SCHEMA_REGISTRY_URL": "http://127.0.0.1:1," + reg.URL, "KAFKA_SCHEMA_REGISTRY_USERNAME": "key",
		"KAFKA_SCHEMA_REGISTRY_PASSWORD": "registry-secret", "TIM_STUCK_AFTER": "300ms",
		"TIM_MAP": `if .note then "gift from \(.user): \(.note.string)" elif .count then "\(.user) liked \(.count) times" else .text end`,
	})
	hdr := func(id int, index []int, payload []byte) []byte {
		return consumertest.RegistryValue(t, id, index, payload)
	}
	gift, err := avro.Marshal(avro.MustParse(avroSchema), map[string]any{"user": "ann", "amount": int64(5), "note": "hi"})
	if err != nil {
		t.Fatal(err)
	}
	like := []byte{0x0a, 0x03, 'b', 'o', 'b', 0x10, 0x07} // user "bob", count 7
	produce := func(vs ...[]byte) {
		var msgs []kafka.Message
		for i, v := range vs {
			msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprint(i)), Value: v})
		}
		if err := ce.kc.Produce(context.Background(), ce.topic, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	produce(hdr(1, nil, gift), hdr(2, []int{0}, like), hdr(3, nil, []byte(`{"text":"a json schema note"}`)), hdr(42, nil, []byte("?")))
	w := startWorker(t, ce.env)
	addr := waitHTTPAddr(t, w)
	ce.waitCommitted(t, time.Minute)
	checkTexts(t, deliveredTextsOf(ce.emu), []string{"gift from ann: hi", "bob liked 7 times", "a json schema note"})
	dl, _ := ce.kc.ReadAll(context.Background(), ce.env["KAFKA_DLQ_TOPIC"])
	if len(dl) != 1 || wire.Header(dl[0], wire.HeaderDLQReason) != wire.ReasonSchemaNotFound {
		t.Errorf("dead letters %v, want the record of schema 42 as schema_not_found", dl)
	}

	// The registry goes down before a record of a new schema: the
	// partition holds (stuck), nothing is dead-lettered; then it resumes.
	reg.Add(4, "AVRO", "", avroSchema)
	reg.Down(true)
	gift2, _ := avro.Marshal(avro.MustParse(avroSchema), map[string]any{"user": "dan", "amount": int64(9), "note": "again"})
	produce(hdr(4, nil, gift2))
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := status(t, "http://"+addr+"/readyz")
		if code == 503 && strings.Contains(body, "schema registry") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %q, want 503 naming the schema registry", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	reg.Down(false)
	ce.waitCommitted(t, time.Minute)
	checkTexts(t, deliveredTextsOf(ce.emu), []string{"gift from ann: hi", "bob liked 7 times", "a json schema note", "gift from dan: again"})
	for id := 1; id <= 4; id++ {
		if n := reg.Fetches(id); n != 1 {
			t.Errorf("schema %d fetched %d times, want once", id, n)
		}
	}
	if strings.Contains(w.logs.String(), "registry-secret") {
		t.Error("the registry password appears in the logs")
	}
}
