// Package schedule decides when each call of a worker leaves: the pause
// gate and the call schedule a group of workers shares through the claims
// log. It knows no event and no record; the consumer package asks it for
// turns.
//
// A caller takes a turn for a partition (Schedule.Take, urgent or not):
// the gate must be open, or the caller is the paused gate's one probe; then
// a slot of the app's rate. It makes its call once Turn.Wait returns (retries inside
// the turn wait with Turn.RetryWait), and ends the turn exactly once:
//
//   - Sent: the API answered something other than a pause (a probe's
//     answer opens the gate for every member);
//   - Paused: the API answered a pause-class error (the gate closes for
//     every member, one probe at a time on a backoff);
//   - Released: no answer (nothing sent, cut short, a network failure).
//
// The claims log serves every app of a worker (Log: one reader, one
// writer, records of several apps in one produce); each app's Schedule
// keeps its own chain of grants, granted from its own claims only. The
// schedule's time is the broker's: the claims topic is stamped by the
// broker (message.timestamp.type=LogAppendTime), and each member reads the
// broker's clock off its own, corrected by what its appends' answers said
// (clock.go), so no member's clock, and no record's own time, moves
// another member's grants by more than a quarter period. An operator's
// hold (Pause, Resume: timbroadcast pause / resume) is a record of the log
// too: every member's gate closes, without a probe, until it is released
// or its time is up.
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
//	log.go       Log: the claims log shared by the apps of a worker (start-up
//	             scan for each app's latest snapshot, the reader, the
//	             batching writer)
//	granter.go   every app's grant loop on one goroutine and one timer
//	clock.go     the broker's clock read off this member's
//	hold.go      an operator's hold: Pause, Resume, Current
//	kafkalog.go  the claims log on its single-partition topic (EnsureLog,
//	             switched to the broker's clock when it may)
//
// Every member computes the same grants from the same records, so what a
// member must compute alike is kept apart (claims.go) and tested against
// recorded sequences (TestGrantOracle).
package schedule
