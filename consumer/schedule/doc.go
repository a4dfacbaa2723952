// Package schedule decides when each call of a worker leaves: the pause
// gate and the call schedule a group of workers shares through the claims
// log. It knows no event and no record; the consumer package asks it for
// turns.
//
// A caller takes a turn for a partition (Schedule.Take, urgent or not):
// the gate must be open, or the caller is the paused gate's one probe; then
// a slot of the app's rate. It makes its call at Turn.Leave (retries inside
// the turn wait for Turn.Retry), and ends the turn exactly once:
//
//   - Sent: the API answered something other than a pause (a probe's
//     answer opens the gate for every member);
//   - Paused: the API answered a pause-class error (the gate closes for
//     every member, one probe at a time on a backoff);
//   - Released: no answer (nothing sent, cut short, a network failure).
//
// Files:
//
//	schedule.go  Schedule, Turn, Config: the API, rate, clock, log and
//	             observer injected
//	gate.go      the pause gate, and its records in the claims log
//	pacer.go     the slots: alone, paced by this member's own calls; else
//	             through the claims log's grants
//	claims.go    the claims record (a contract between releases, pinned by
//	             testdata/grants.golden.json) and the chain of grants
//	kafkalog.go  the claims log on its single-partition topic (EnsureLog)
//
// Every member computes the same grants from the same records, so what a
// member must compute alike is kept apart (claims.go) and tested against
// recorded sequences (TestGrantOracle).
package schedule
