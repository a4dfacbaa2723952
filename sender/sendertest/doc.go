// Package sendertest provides an emulator of Tencent Cloud Chat's
// send_broadcast_msg endpoint, for tests and demos, in the manner of
// net/http/httptest: NewServer starts it on a loopback port.
//
// The emulator verifies the query (sdkappid, identifier, UserSig with the
// official library, random, contenttype) and the body with the same rules as
// the real server, enforces the app's rate limit (10023), applies the
// five-minute Random dedupe, assigns MsgSeq, records what it delivered and
// injects faults on request.
package sendertest
