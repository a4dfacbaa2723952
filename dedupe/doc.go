// Package dedupe derives the message identity (the API's Random) of a
// broadcast event.
//
// # Compatibility contract
//
// The server discards a message whose Random (and, by one reading of the
// documentation, content) equals one it saw in the last five minutes. Every
// attempt for one event must therefore carry the same Random, in every
// process and every version of timbroadcast, and two different events must
// not share one. The derivation below is fixed; changing it is a breaking
// change that needs a new version tag (v2) and a migration note, and the
// golden vectors in testdata/random-vectors.json pin it.
//
// Version 1:
//
//	identity = 'K' ‖ key                          for a record with a key
//	         = 'P' ‖ topic ‖ 0x00 ‖ partition ‖ 0x00 ‖ offset
//	                                              for a record without one
//	                                              (decimal numbers)
//	h        = SHA-256("timbroadcast/random/v1" ‖ 0x00 ‖
//	                   uint32be(len(identity)) ‖ identity ‖ content)
//	Random   = uint32be(h[0:4]), or 1 if that is 0
//
// where content is the request body the worker sends for the event with
// Random set to 0 (compact JSON in the field order From_Account, Random,
// MsgBody, CloudCustomData; MsgContent as the producer wrote it, compacted).
// Both key and content enter the hash, so two events that differ in either
// get different Randoms (up to the 2^-32 chance of a 32-bit collision; see
// README "Delivery guarantees"), whichever reading of the dedupe rule the
// server applies.
package dedupe
