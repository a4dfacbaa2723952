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
//	timbroadcast-dlq-reason     machine-readable reason (see Reason*)
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
// Receipt (schema "timbroadcast/receipt/v1"): a record of the receipt topic
// per final outcome of an event, keyed like the event, whose value is the
// JSON of a Receipt and whose headers are timbroadcast-receipt-schema and
// the event's trace headers (traceparent, tracestate and baggage, or those
// of the propagation OTEL_PROPAGATORS names). A receipt may repeat
// after a crash; (source.topic, source.partition, source.offset) is its
// identity.
//
// Merge envelope (version "timbroadcast/merged/v1"): a TIMCustomElem whose
// Ext is exactly EnvelopeExt and whose Data is the JSON of an Envelope,
// listing the custom elements of several events in order, each with its
// record key.
//
// Dead-letter topic: <source topic>.dlq unless configured (DeadLetterTopic).
package wire
