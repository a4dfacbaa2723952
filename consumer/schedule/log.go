package schedule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jonboulle/clockwork"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/sleep"
)

// ClaimsLog is the claims log's storage as the schedule uses it:
// NewKafkaLog's, or a test's in memory.
type ClaimsLog interface {
	// bounds returns the offset of the first record kept and the end
	// offset (the next record's).
	bounds(ctx context.Context) (first, end int64, err error)
	// scan returns the records in [from, to), without waiting for more.
	scan(ctx context.Context, from, to int64) ([]rawRecord, error)
	// read returns the records from offset from on, waiting a while for
	// some, and the offset to read next.
	read(ctx context.Context, from int64) ([]rawRecord, int64, error)
	// append appends values in order, acknowledged by all in-sync
	// replicas, and returns the broker's stamp of them (zero when the log
	// is not stamped by the broker) and its resolution.
	append(ctx context.Context, values [][]byte, ts time.Time) (stamp time.Time, resolution time.Duration, err error)
}

// rawRecord is one record of the claims log as stored.
type rawRecord struct {
	offset int64
	value  []byte
	// stamp is the broker's time of the record (zero: the log is not
	// stamped by the broker, its time is the writer's).
	stamp time.Time
	// restart says the log was cut from under the reader (retention):
	// reading goes on at offset.
	restart bool
}

// LogConfig configures a Log.
type LogConfig struct {
	// Store is the claims log's storage (NewKafkaLog).
	Store ClaimsLog
	// DefaultApp is the app of records that name none (written by
	// releases before 0.11.0): the worker's TIM_SDKAPPID.
	DefaultApp uint64
	// Clock is this member's clock; nil is the real one.
	Clock clockwork.Clock
	// Logger logs the claims log's troubles; nil logs nothing.
	Logger *zap.Logger
}

// Log is a worker's claims log: one reader and one writer for the
// schedules of every app the worker serves (New with Config.Log). Each
// app's claims form a chain of their own, granted from that app's claims
// only, so apps sharing the log never slow each other. Run it once every
// app's schedule is made.
type Log struct {
	store      ClaimsLog
	clock      *brokerClock
	local      clockwork.Clock
	log        *zap.Logger
	id         string
	defaultApp uint64

	mu   sync.Mutex
	apps map[uint64]*pacer
	// dirty are the apps with records to write.
	dirty   map[uint64]bool
	wrote   chan struct{}
	started bool
	// rounds counts the writer's rounds (a batch appended, or nothing to
	// append); roundDone is closed at the end of each (Flush).
	rounds    uint64
	roundDone chan struct{}
	// granter runs every app's grant loop (Run runs it).
	granter *granter

	// joining are the apps added while the log runs, for the reader to
	// start (their chains read from the log); cutRead ends the reader's
	// wait for records so that it does at once.
	joining map[uint64]*pacer
	cutRead context.CancelFunc
	// logErr is why the claims log cannot be used now (nil: it can).
	logErr error
	// newerSeen says a record of a newer claims version was met (warned
	// once); unstampedSeen that the broker does not stamp the log.
	newerSeen, unstampedSeen bool
	// readSeen is the offset of the last record the reader applied.
	readSeen atomic.Int64
}

// NewLog returns the claims log cfg describes.
func NewLog(cfg LogConfig) *Log {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	local := cfg.Clock
	if local == nil {
		local = clockwork.NewRealClock()
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	l := &Log{store: cfg.Store, clock: newBrokerClock(local), local: local, log: log, id: hex.EncodeToString(b),
		defaultApp: cfg.DefaultApp, apps: map[uint64]*pacer{}, dirty: map[uint64]bool{}, wrote: make(chan struct{}, 1),
		joining: map[uint64]*pacer{}, roundDone: make(chan struct{}), granter: newGranter(local)}
	l.readSeen.Store(-1)
	return l
}

// add registers an app's slots. Added while the log runs (an app added to
// the apps file), the app joins once the reader has read its chain from
// the log (its latest snapshot and the records after it), as at start:
// until then its calls wait.
func (l *Log) add(app uint64, p *pacer) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, dup := l.apps[app]; dup {
		return errors.New("schedule: an app added twice to one claims log")
	}
	l.apps[app] = p
	if l.started {
		l.joining[app] = p
		if l.cutRead != nil {
			l.cutRead()
		}
	}
	return nil
}

// join starts the apps added while the log runs, on the reader's
// goroutine: each one's chain as the log holds it now (records the reader
// meets again after are ignored by the chain, which has seen them). It
// returns the apps it could not read yet (retried at the next turn).
func (l *Log) join(ctx context.Context, apps map[uint64]*pacer, caughtUp bool) error {
	l.mu.Lock()
	joining := l.joining
	l.joining = map[uint64]*pacer{}
	l.mu.Unlock()
	var failed error
	for app, p := range joining {
		c, err := l.current(ctx, app, p)
		if err != nil {
			l.mu.Lock()
			l.joining[app] = p
			l.mu.Unlock()
			failed = err
			continue
		}
		apps[app] = p
		p.started(c)
		if caughtUp {
			p.caughtUp()
		}
		l.log.Info("an app added while running joined the claims log", zap.Uint64("sdkappid", app))
	}
	return failed
}

// appOf is the app a record belongs to.
func (l *Log) appOf(r claimRecord) uint64 {
	if r.App == 0 {
		return l.defaultApp
	}
	return r.App
}

// Run reads and writes the claims log for every app until ctx ends.
func (l *Log) Run(ctx context.Context) {
	l.mu.Lock()
	l.started = true
	l.mu.Unlock()
	var loops sync.WaitGroup
	loops.Go(func() { l.readLoop(ctx) })
	loops.Go(func() { l.writeLoop(ctx) })
	loops.Go(func() { l.granter.run(ctx) })
	loops.Wait()
}

// roundEnded ends a round of the writer.
func (l *Log) roundEnded() {
	l.mu.Lock()
	l.rounds++
	close(l.roundDone)
	l.roundDone = make(chan struct{})
	l.mu.Unlock()
}

// Flush waits until the records every app asked for before it are
// appended (or tried once: a log refusing them keeps them for later), or
// ctx ends. A member calls it before its partitions go to others (a
// rebalance, a shutdown): a lone member records its calls after they
// leave (a Took record), and a member that takes its partitions over
// places its first call after them only when they are in the log before
// its own claims.
func (l *Log) Flush(ctx context.Context) {
	l.mu.Lock()
	started, target := l.started, l.rounds+2 // a round under way may have taken its batch already
	l.mu.Unlock()
	if !started {
		return
	}
	for {
		l.mu.Lock()
		done, ch := l.rounds >= target, l.roundDone
		l.mu.Unlock()
		if done {
			return
		}
		wake(l.wrote)
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// wakeWriter says app has records to write.
func (l *Log) wakeWriter(app uint64) {
	l.mu.Lock()
	l.dirty[app] = true
	l.mu.Unlock()
	wake(l.wrote)
}

// setLogErr records whether the claims log works, logging changes.
func (l *Log) setLogErr(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil && l.logErr != nil {
		l.log.Info("the claims log works again")
	}
	l.logErr = err
}

// Err is why the claims log cannot be used now; nil when it can.
func (l *Log) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.logErr
}

// bootChunk is the first backward step of the start-up scan (records);
// each next step is bootGrowth times longer, up to bootScanMax records in
// all (the claims log keeps ten minutes).
const (
	bootChunk   = 16
	bootGrowth  = 8
	bootScanMax = 1 << 20
)

// bootstrap finds, for each app, its latest record (scanning back from
// the end), and returns each app's chain state (the snapshot of that
// record) and the offset to read on from.
func (l *Log) bootstrap(ctx context.Context, apps map[uint64]*pacer) (map[uint64]*chain, int64, int64, error) {
	first, end, err := l.store.bounds(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	chains := map[uint64]*chain{}
	need := map[uint64]bool{}
	for app := range apps {
		need[app] = true
	}
	hi, step := end, int64(bootChunk)
	for len(need) > 0 && hi > first && end-hi < bootScanMax {
		lo := max(first, hi-step)
		recs, err := l.store.scan(ctx, lo, hi)
		if err != nil {
			return nil, 0, 0, err
		}
		for i := len(recs) - 1; i >= 0; i-- {
			m := recs[i]
			r, err := l.decode(m)
			if err != nil {
				continue
			}
			app := l.appOf(r)
			if !need[app] {
				continue
			}
			delete(need, app)
			p := apps[app]
			st := r.State
			if st.Seen+1 < first {
				st.Seen = first - 1 // records after the snapshot deleted by retention: start from what is left
			}
			st.Seen = min(st.Seen, m.offset-1)
			chains[app] = fromSnapshot(p.period, p.horizon(), st, stampNanos(m.stamp))
		}
		hi, step = lo, step*bootGrowth
	}
	from := end
	for app, p := range apps {
		c, ok := chains[app]
		if !ok {
			// No record of it kept: nothing of it to follow.
			chains[app] = newChain(p.period, p.horizon(), chainState{Seen: end - 1})
			continue
		}
		from = min(from, c.Seen+1)
	}
	return chains, max(from, first), end, nil
}

// current is the chain of app as the log holds it now: bootstrap, then
// the records after its snapshot applied (Operator: pause, resume, status).
func (l *Log) current(ctx context.Context, app uint64, p *pacer) (*chain, error) {
	chains, from, end, err := l.bootstrap(ctx, map[uint64]*pacer{app: p})
	if err != nil {
		return nil, err
	}
	c := chains[app]
	if from < end {
		recs, err := l.store.scan(ctx, from, end)
		if err != nil {
			return nil, err
		}
		for _, m := range recs {
			if r, err := l.decode(m); err == nil && l.appOf(r) == app {
				c.apply(m.offset, r, stampNanos(m.stamp))
			}
		}
	}
	c.Seen = max(c.Seen, end-1)
	return c, nil
}

// stampNanos is a broker stamp in Unix ns (0: none).
func stampNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// decode decodes a stored record within bounds: judged from the broker's
// stamp when there is one, else from this member's clock.
func (l *Log) decode(m rawRecord) (claimRecord, error) {
	ref, stamped := l.ref(m)
	return decodeClaim(m.value, ref, stamped)
}

// ref is the time m is checked against: the broker's stamp, else this
// member's clock (stamped false).
func (l *Log) ref(m rawRecord) (time.Time, bool) {
	if m.stamp.IsZero() {
		return l.local.Now(), false
	}
	return m.stamp, true
}

// readLoop follows the claims log until ctx ends, applying each record to
// its app's chain.
func (l *Log) readLoop(ctx context.Context) {
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(100*time.Millisecond), backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0))
	fail := func(err error, what string) bool {
		l.setLogErr(err)
		d := bo.NextBackOff()
		l.log.Warn(what, zap.Error(err), zap.Duration("in", d))
		return sleep.For(ctx, d) == nil
	}
	l.mu.Lock()
	apps := make(map[uint64]*pacer, len(l.apps))
	for k, v := range l.apps {
		apps[k] = v
	}
	l.mu.Unlock()
	var next, bootEnd int64
	for {
		chains, from, end, err := l.bootstrap(ctx, apps)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			for app, c := range chains {
				apps[app].started(c)
			}
			next, bootEnd = from, end
			break
		}
		if !fail(err, "cannot read the claims log; retrying") {
			return
		}
	}
	var cr claimReader
	caughtUp := false
	catchUp := func() {
		if caughtUp {
			return
		}
		caughtUp = true
		for _, p := range apps {
			p.caughtUp()
		}
	}
	if next >= bootEnd {
		catchUp()
	}
	for {
		l.mu.Lock()
		joining := len(l.joining) > 0
		l.mu.Unlock()
		if joining {
			if err := l.join(ctx, apps, caughtUp); err != nil {
				if !fail(err, "cannot read the claims log for an app added while running; retrying") {
					return
				}
				continue
			}
		}
		readCtx, cut := context.WithCancel(ctx)
		l.mu.Lock()
		l.cutRead = cut
		if len(l.joining) > 0 {
			cut() // added meanwhile
		}
		l.mu.Unlock()
		recs, n, err := l.store.read(readCtx, next)
		l.mu.Lock()
		l.cutRead = nil
		l.mu.Unlock()
		cut()
		if ctx.Err() != nil {
			return
		}
		if err != nil && readCtx.Err() != nil {
			continue // cut short for an app joining
		}
		if err != nil {
			if !fail(err, "cannot read the claims log; calls wait") {
				return
			}
			continue
		}
		bo.Reset()
		received := l.local.Now()
		next = n
		touched := map[*pacer]bool{}
		for _, m := range recs {
			if m.restart {
				l.log.Warn("the claims log was cut before this member read it (retention): reading on from its start", zap.Int64("offset", m.offset))
				continue
			}
			if !m.stamp.IsZero() {
				l.clock.read(received, m.stamp)
			} else if !l.unstampedSeen {
				l.unstampedSeen = true
				l.log.Warn("the claims log's records carry their writers' clocks, not the broker's (message.timestamp.type=CreateTime): "+
					"a member whose clock is off moves every member's calls. Switch the topic to the broker's clock: "+
					"kafka-configs --bootstrap-server <brokers> --alter --entity-type topics --entity-name <KAFKA_SLOT_TOPIC> "+
					"--add-config message.timestamp.type=LogAppendTime", zap.Int64("offset", m.offset))
			}
			ref, stamped := l.ref(m)
			r, err := cr.decode(m.value, ref, stamped)
			if err != nil {
				l.log.Warn("skipping a record of the claims log that is not a claim", zap.Int64("offset", m.offset), zap.Error(err))
				l.readSeen.Store(m.offset)
				continue
			}
			if r.V > claimsVersion && !l.newerSeen {
				l.newerSeen = true
				l.log.Warn("the claims log holds records of a newer release: applied by the fields this release knows "+
					"(rolling upgrade in progress? upgrade this member too)", zap.Int("version", r.V), zap.Int("known", claimsVersion),
					zap.String("by", cutOutside(r.By, 64)))
			}
			if p := apps[l.appOf(r)]; p != nil && p.apply(m.offset, r, stampNanos(m.stamp)) {
				touched[p] = true
			}
			l.readSeen.Store(m.offset)
		}
		if len(recs) > 0 {
			l.setLogErr(nil)
		}
		for p := range touched {
			p.poke()
		}
		if next >= bootEnd {
			catchUp()
		}
	}
}

// writeLoop appends the records every app's slots ask for until ctx ends,
// in one request for all of them, retrying with a backoff while the log
// refuses them.
func (l *Log) writeLoop(ctx context.Context) {
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(100*time.Millisecond), backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0))
	// Kept from round to round (emptied of their pointers after each).
	var ps []*pacer
	var batch []outgoing
	var values [][]byte
	for {
		clear(ps)
		clear(batch)
		clear(values)
		ps, batch, values = ps[:0], batch[:0], values[:0]
		l.mu.Lock()
		for app := range l.dirty {
			if p := l.apps[app]; p != nil {
				ps = append(ps, p)
			}
		}
		clear(l.dirty)
		l.mu.Unlock()
		now := l.clock.Now()
		for _, p := range ps {
			batch = p.appendOutgoing(batch, now, l.readSeen.Load())
		}
		if len(batch) == 0 {
			l.roundEnded()
			select {
			case <-ctx.Done():
				return
			case <-l.wrote:
			}
			continue
		}
		for _, o := range batch {
			values = append(values, encodeClaim(o.rec))
		}
		sent := l.local.Now()
		stamp, res, err := l.store.append(ctx, values, now)
		if err == nil {
			l.clock.appended(sent, l.local.Now(), stamp, res)
		}
		for _, o := range batch {
			o.p.written(o, err)
		}
		if err != nil {
			l.mu.Lock()
			for _, p := range ps {
				l.dirty[p.app] = true // written again after the backoff
			}
			l.mu.Unlock()
		}
		l.roundEnded()
		if err == nil {
			l.setLogErr(nil)
			bo.Reset()
			continue
		}
		l.setLogErr(err)
		if ctx.Err() != nil {
			return
		}
		d := bo.NextBackOff()
		l.log.Warn("cannot write to the claims log; calls wait", zap.Error(err), zap.Duration("in", d))
		if sleep.For(ctx, d) != nil {
			return
		}
	}
}

// outgoing is a record an app's slots asked to write.
type outgoing struct {
	p     *pacer
	rec   claimRecord
	claim *claim // the claim it makes, if any
	// took is the lone member's call it records (this member's clock).
	took time.Time
}
