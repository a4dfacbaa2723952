// Package wire owns the formats that timbroadcast shares with producers,
// operators, receivers and other tools: the broadcast event a producer
// writes to Kafka, the record headers timbroadcast reads and writes, the
// in-flight record kept in committed-offset metadata, and the envelope that
// merged custom elements travel in. The worker (package consumer), the
// publish and replay commands and the API emulator all use this package;
// none of them writes a format of its own.
//
// It does not talk to Kafka or to the API: it decodes, validates and
// builds bytes and headers.
//
// # Compatibility
//
// Everything below is a contract. Adding an optional header or field is
// compatible; renaming, removing or changing the meaning of one is a
// breaking change that needs a new version tag and a migration note in the
// README. Golden files in testdata/ pin each format (go test -update
// rewrites them; review the diff as an API change).
//
// Event (version 1). The record value is a JSON object with the API's own
// field names: MsgBody (required), From_Account, CloudCustomData and,
// optionally, Random (an unsigned 32-bit integer; without it the Random is
// derived by package dedupe). Any other top-level field is an error, so a
// typo is caught instead of silently dropped. The record key is the
// event's identity: reuse it to re-publish the same event.
//
// Headers read from the source topic:
//
//	timbroadcast-expires-at   RFC 3339 time after which the event is not sent
//	                          (dead-lettered with reason "expired")
//
// Headers added to a dead-letter record (which otherwise carries the
// original key, value and headers):
//
//	timbroadcast-dlq-reason     machine-readable reason (see Reason*: invalid_json,
//	                            invalid_event, body_too_long, expired, api_rejected,
//	                            content_blocked, unknown_error, retry_exhausted,
//	                            outcome_unknown, map_failed, schema_not_found,
//	                            decode_failed, too_large)
//	timbroadcast-dlq-class      "reject"
//	timbroadcast-dlq-code       API ErrorCode, 0 when the API was not called
//	timbroadcast-dlq-info       human-readable description (at most 2,048 bytes)
//	timbroadcast-dlq-field      offending field or header, when known
//	timbroadcast-dlq-attempts   API requests made for the record
//	timbroadcast-dlq-failed-at  RFC 3339 (nanoseconds, UTC) time of the failure
//	timbroadcast-dlq-random     the Random sent or that would have been sent
//	timbroadcast-source-topic, -partition, -offset, -timestamp
//	                            where the record came from
//
// Header added by `timbroadcast replay` to a re-published record:
//
//	timbroadcast-replayed-from  <dead-letter topic>/<partition>/<offset>
//
// In-flight record (version "tb1"), the metadata of a committed offset:
//
//	tb1 <last offset> <Random>
//
// committed with the first offset of a call before the call is made: the
// records from the committed offset to <last offset> form one call whose
// Random is <Random>. Whoever owns the partition next rebuilds that call
// byte for byte, so the server's dedupe discards a resend.
//
// A delivered call whose receipts are not yet written (receipt topic
// configured) is recorded as
//
//	tb1 <last offset> <Random> delivered <MsgSeq> <attempts> <first> <call> <final>
//
// (times in Unix milliseconds): the next owner writes the receipts from it
// and commits, without calling the API again. Versions before receipts read
// this form as "nothing in flight" and resend the call (deduped within five
// minutes).
//
// The in-flight record carries nothing more: the time of a call's first
// attempt whose outcome is unknown goes into the delivered log (below), so
// a release that reads only "tb1 <last> <Random>" keeps reading every
// record this one writes exactly as it did.
//
// Delivered log (entry version 1; Watermark): a compacted topic of one
// partition whose records are keyed
//
//	tb1/<SDKAppID>/<source topic>/<partition>
//
// and hold the JSON of a Watermark, for example
//
//	{"v":1,"app":"1400000001","topic":"events","topic_id":"AAECAwQFBgcICQoLDA0ODw",
//	 "partition":3,"next":120,"at":1764111600123,"by":"timbroadcast"}
//
// Every record of the partition before "next" has had its final outcome
// (it was delivered, or recorded by an earlier delivery); whoever reads
// the record again (a new group, offsets reset or expired) commits it
// without sending. Readers apply the entries of a key in log order
// (Watermark.Apply): an entry raises next, one with "reset" ("forget",
// "log_truncated") sets it, one of another "topic_id" replaces the entry
// (the topic was created again). "pending" ({"first","last","random",
// "unknown_since"}) is a call at next whose first attempt with an unknown
// outcome started at unknown_since (Unix milliseconds): the next sender
// resends it only within the server's dedupe window of that time. A reader
// ignores fields it does not know; "v" is raised only when an older reader
// would misread "next", and a reader meeting a "v" it does not know uses
// nothing of that entry.
//
// A dead letter cut to fit its topic also carries
//
//	timbroadcast-dlq-truncated        "true": the value was cut to 16 KiB, or
//	                                  dropped with the producer's headers
//	timbroadcast-dlq-original-size    the original value's length in bytes
//	timbroadcast-dlq-original-sha256  its SHA-256, to find it in the source topic
//
// Receipt (schema "timbroadcast/receipt/v1"): a record of the receipt topic
// per final outcome of an event, keyed like the event, whose value is the
// JSON of a Receipt and whose headers are timbroadcast-receipt-schema and
// the event's trace headers (traceparent, tracestate and baggage, or those
// of the propagation OTEL_PROPAGATORS names). A receipt may repeat
// after a crash; (source.topic, source.partition, source.offset) is its
// identity. Its fields:
//
//	schema              "timbroadcast/receipt/v1"
//	outcome             "delivered", "dead_lettered", "filtered" (the
//	                    mapping, TIM_MAP, output nothing for the record), or
//	                    "already_delivered" (the delivered log says it was
//	                    delivered before: committed, not sent again)
//	random              the event's own Random (0 for a record that never decoded)
//	call_random         the Random of the call that carried it: the event's own
//	                    when it went alone, the merged call's otherwise
//	msg_seq             the API's MsgSeq (delivered)
//	attempts            API requests made for the event's call
//	call_events         events that shared the call (1 alone; 0 without a call)
//	produced_at         the record's timestamp
//	first_attempt_at    the call's first request (by the replica that finished it)
//	call_at             the request that delivered (or was rejected)
//	final_at            the API's OK, or the dead-letter write's acknowledgement
//	produce_to_call_ms  call_at minus produced_at
//	source              {topic, partition, offset} of the event: its identity
//	dead_letter         dead letters only: {topic, reason, code, info, field},
//	                    as in the dead-letter headers
//
// Merge envelope v1 ("timbroadcast/merged/v1", native merge mode): a
// TIMCustomElem whose Ext is exactly EnvelopeExt and whose Data is the JSON
// of an Envelope, listing the custom elements of several events in order,
// each with its record key:
//
//	{"MsgType":"TIMCustomElem","MsgContent":{
//	   "Data":"{\"v\":\"timbroadcast/merged/v1\",\"events\":[{\"key\":\"rain-7\",\"Data\":\"...\"},{\"key\":\"rain-8\",\"Data\":\"...\",\"Desc\":\"...\"}]}",
//	   "Desc":"timbroadcast merged custom elements",
//	   "Ext":"timbroadcast/merged/v1"}}
//
// Merge envelope v2 ("timbroadcast/merged/v2", envelope merge mode): any
// sequence of events of one From_Account as one custom element listing
// every event with its key, CloudCustomData and own elements:
//
//	{"MsgType":"TIMCustomElem","MsgContent":{
//	   "Data":"{\"v\":\"timbroadcast/merged/v2\",\"events\":[{\"key\":\"notice-1\",\"CloudCustomData\":\"room=1\",\"MsgBody\":[...]}, ...]}",
//	   "Desc":"timbroadcast merged events",
//	   "Ext":"timbroadcast/merged/v2"}}
//
// Unpack reads both. A receiver in JavaScript (Chat Web SDK, the payload
// of a TIM.TYPES.MSG_CUSTOM message) unpacks them so, each result one
// original event:
//
//	function events(payload) {
//	  const env = payload.extension.startsWith('timbroadcast/merged/') ? JSON.parse(payload.data) : null;
//	  if (!env) return [{ elements: [{ type: 'TIMCustomElem', data: payload.data, description: payload.description, extension: payload.extension }] }];
//	  if (env.v === 'timbroadcast/merged/v1')            // custom elements only
//	    return env.events.map(e => ({ key: e.key, elements: [{ type: 'TIMCustomElem', data: e.Data, description: e.Desc || '', extension: e.Ext || '' }] }));
//	  return env.events.map(e => ({ key: e.key, cloudCustomData: e.CloudCustomData || '', elements: e.MsgBody }));  // v2
//	}
//
// Formats other releases read. Three formats are read by other releases
// of the worker during a rolling upgrade or after one, each with a version
// and a rule for what a reader does with a version or field it does not
// know, each pinned by goldens:
//
//	in-flight record    tag "tb1" (above); a reader that does not know a
//	                    tag takes the metadata as nothing in flight;
//	                    testdata/in-flight*.golden
//	delivered log       "v" 1 (above); unknown fields are ignored, an entry
//	                    of an unknown "v" is not used;
//	                    testdata/delivered-*.golden
//	claims record       "v" 2 since 0.11.0 (1 before; none before 0.9.0:
//	                    read as 1), package schedule's claims log: a claim
//	                    names its app (SDKAppID; none: the reader's
//	                    TIM_SDKAPPID) and each app's chain is granted from
//	                    its own claims; its time is read on the broker's
//	                    clock (the topic's LogAppendTime stamp; the
//	                    writer's "ts" counts only within a quarter period
//	                    after the stamp and 10 s before it); an operator's
//	                    hold and release (timbroadcast pause / resume)
//	                    carry pause / resume too, for version-1 readers.
//	                    Unknown fields are ignored, a record of a later
//	                    version is applied by its version-1 fields (its
//	                    writer keeps them true), with a warning;
//	                    consumer/schedule/testdata/grants.golden.json pins
//	                    the bytes and the grants every member computes,
//	                    skewed writers and two apps included
//
// TestRollingUpgrade (cmd/timbroadcast) runs the previous release and this
// one in one group, both ways.
//
// Dead-letter topic: <source topic>.dlq unless configured (DeadLetterTopic).
package wire
