package sendertest

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tencentyun/tls-sig-api-v2-golang/tencentyun"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
)

// Options configures an emulator.
type Options struct {
	// AppID, Admin and SecretKey are the app's credentials; requests must be
	// signed for them.
	AppID     int
	Admin     string
	SecretKey string
	// Rate is the app's limit in calls per second; calls over it are
	// answered 10023. 0 means no limit.
	Rate float64
	// RateBurst is how many calls may come at once with the bucket
	// limiter (a token bucket of this size, refilled at Rate); default
	// Rate rounded, at least 1: "5 calls per second" admits 5 in one
	// second.
	RateBurst int
	// Limiter is the rate-limit model: LimiterBucket (default),
	// LimiterWindow, LimiterSliding or LimiterSpacing.
	Limiter string
	// Accounts, if set, are the app's accounts besides the admin: a
	// From_Account not among them is answered 10019, as the service
	// answers for an account that does not exist. Nil means every account
	// exists.
	Accounts []string
	// DedupeWindow is how long a delivered Random is remembered; default 5m.
	DedupeWindow time.Duration
	// DedupeRandomOnly applies the stricter reading of the dedupe rule: the
	// Random alone decides, whatever the content.
	DedupeRandomOnly bool
	// Faults are injected from the start; see SetFaults.
	Faults Faults
	// Seed makes the fault injection repeatable; 0 picks one.
	Seed uint64
}

// Faults are failures the emulator injects.
type Faults struct {
	// InternalErrorRate answers 10002 to this fraction of calls.
	InternalErrorRate float64 `json:"internal_error_rate"`
	// BadGatewayRate answers HTTP 502 to this fraction of calls.
	BadGatewayRate float64 `json:"bad_gateway_rate"`
	// DropAfterProcessRate processes this fraction of calls (a valid
	// message is delivered) and then drops the connection without an
	// answer.
	DropAfterProcessRate float64 `json:"drop_after_process_rate"`
	// DropContaining processes every call whose body contains one of these
	// strings (a valid message is delivered, once within the dedupe
	// window) and drops the connection without an answer: a proxy that
	// loses the answers of one event for as long as the fault lasts.
	DropContaining []string `json:"drop_containing"`
	// Latency delays every answer.
	Latency time.Duration `json:"latency"`
	// FeatureOff answers 10007 to every call, as when broadcast messaging is
	// switched off in the console.
	FeatureOff bool `json:"feature_off"`
	// Blocked answers 80001 (content moderation) to any call whose body
	// contains one of these strings.
	Blocked []string `json:"blocked"`
	// Answers answers an ErrorCode to a fraction of the calls (code ->
	// fraction in (0, 1]; 1 answers it to every call), after the query and
	// signature checks. Any code can be answered this way.
	Answers map[int]float64 `json:"answers"`
	// Codes answers the next calls with these codes, one each, in order: a
	// positive number is an API ErrorCode, CodeBadGateway an HTTP 502, and
	// CodeDrop processes the call and drops the connection without an
	// answer.
	Codes []int `json:"codes"`
}

// Pseudo codes for Faults.Codes.
const (
	// CodeBadGateway answers HTTP 502.
	CodeBadGateway = -502
	// CodeDrop processes the call, then drops the connection.
	CodeDrop = -1
)

// Delivery is one message the emulator delivered.
type Delivery struct {
	MsgSeq          uint64           `json:"MsgSeq"`
	Random          uint32           `json:"Random"`
	FromAccount     string           `json:"From_Account,omitempty"`
	MsgBody         []sender.Element `json:"MsgBody"`
	CloudCustomData string           `json:"CloudCustomData,omitempty"`
	At              time.Time        `json:"At"`
	// Body is the request body as received.
	Body json.RawMessage `json:"Body"`
}

// Elements returns the delivery's message elements with merge envelopes
// unpacked: one TIMCustomElem per original custom element, in order. It is
// what receivers see once they unpack merged messages.
func (d Delivery) Elements() []sender.Element {
	var out []sender.Element
	for _, el := range d.MsgBody {
		if events, ok, err := wire.Unpack(el); ok && err == nil {
			for _, e := range events {
				out = append(out, e.MsgBody...)
			}
			continue
		}
		out = append(out, el)
	}
	return out
}

// Stats counts the calls the emulator answered.
type Stats struct {
	// Calls is the number of requests received.
	Calls int `json:"calls"`
	// Delivered is the number of messages delivered.
	Delivered int `json:"delivered"`
	// Duplicates is the number of calls answered OK but not delivered
	// again (dedupe).
	Duplicates int `json:"duplicates"`
	// Elements is the number of elements delivered, merge envelopes
	// unpacked: with one element per event, the number of events.
	Elements int `json:"elements"`
	// Bytes is the total size of the delivered request bodies.
	Bytes int `json:"bytes"`
	// MaxBody is the largest delivered request body.
	MaxBody int `json:"max_body"`
	// ByCode counts answers by ErrorCode (0 for OK); HTTP-level faults are
	// counted under the negative HTTP status, dropped connections under -1.
	ByCode map[int]int `json:"by_code"`
}

// Server is a running emulator.
type Server struct {
	// URL is the base URL, e.g. http://127.0.0.1:41234.
	URL string

	opts Options
	hs   *httptest.Server

	mu         sync.Mutex
	rng        *rand.Rand
	faults     Faults
	seq        uint64
	delivered  []Delivery
	seen       map[uint32][]seenEntry
	limiter    limiter // the app's rate limit; nil for none
	stats      Stats
	expiredSig map[string]bool
	sigsSeen   map[string]bool
}

type seenEntry struct {
	content [32]byte
	at      time.Time
	seq     uint64
}

// NewServer starts an emulator on a loopback port. Close it when done.
func NewServer(opts Options) *Server {
	s := NewHandler(opts)
	s.hs = httptest.NewServer(s)
	s.URL = s.hs.URL
	return s
}

// Validate checks the options: a known limiter model, fault rates
// between 0 and 1.
func (o Options) Validate() error {
	if o.Rate < 0 {
		return fmt.Errorf("rate %v is negative", o.Rate)
	}
	if _, err := newLimiter(o.Limiter, 1, 0); err != nil {
		return err
	}
	return o.Faults.validate()
}

func (f Faults) validate() error {
	for code, p := range f.Answers {
		if p <= 0 || p > 1 {
			return fmt.Errorf("answer %d: fraction %v is not in (0, 1]", code, p)
		}
	}
	for _, p := range []float64{f.InternalErrorRate, f.BadGatewayRate, f.DropAfterProcessRate} {
		if p < 0 || p > 1 {
			return fmt.Errorf("fault rate %v is not between 0 and 1", p)
		}
	}
	return nil
}

// NewHandler returns an emulator that is not listening: serve it with an
// http.Server of your own (the emulator command does). It panics on
// options that do not Validate.
func NewHandler(opts Options) *Server {
	if err := opts.Validate(); err != nil {
		panic("sendertest: " + err.Error())
	}
	if opts.DedupeWindow == 0 {
		opts.DedupeWindow = 5 * time.Minute
	}
	seed := opts.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	lim, _ := newLimiter(opts.Limiter, opts.Rate, opts.RateBurst)
	return &Server{
		limiter:    lim,
		opts:       opts,
		rng:        rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		faults:     opts.Faults,
		seen:       map[uint32][]seenEntry{},
		stats:      Stats{ByCode: map[int]int{}},
		expiredSig: map[string]bool{},
		sigsSeen:   map[string]bool{},
	}
}

// Close stops a server started by NewServer.
func (s *Server) Close() {
	if s.hs != nil {
		s.hs.Close()
	}
}

// Signatures returns every UserSig the server has seen, for tests that
// check none of them leaks.
func (s *Server) Signatures() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.sigsSeen))
	for sig := range s.sigsSeen {
		out = append(out, sig)
	}
	return out
}

// SetSecretKey rotates the app's key, as the Chat console does: from now
// on only signatures made with key verify.
func (s *Server) SetSecretKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.SecretKey = key
}

// SetFaults replaces the injected faults.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// ExpireSignatures makes every UserSig seen so far expired: later calls
// signed with one are answered 70001 until the client renews it.
func (s *Server) ExpireSignatures() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sig := range s.sigsSeen {
		s.expiredSig[sig] = true
	}
}

// Delivered returns a copy of the delivered log, in delivery order.
func (s *Server) Delivered() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivery(nil), s.delivered...)
}

// Stats returns a copy of the call counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.ByCode = make(map[int]int, len(s.stats.ByCode))
	for k, v := range s.stats.ByCode {
		st.ByCode[k] = v
	}
	return st
}

// ServeHTTP serves the API path and, under /emulator/, a control API:
// GET /emulator/delivered, GET /emulator/stats, POST /emulator/faults (a
// Faults object), POST /emulator/expire-signatures.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/"+sender.BroadcastPath:
		s.serveBroadcast(w, r)
	case r.URL.Path == "/emulator/delivered" && r.Method == http.MethodGet:
		writeJSON(w, s.Delivered())
	case r.URL.Path == "/emulator/stats" && r.Method == http.MethodGet:
		writeJSON(w, s.Stats())
	case r.URL.Path == "/emulator/expire-signatures" && r.Method == http.MethodPost:
		s.ExpireSignatures()
		writeJSON(w, map[string]bool{"expired": true})
	case r.URL.Path == "/emulator/faults" && r.Method == http.MethodPost:
		var f Faults
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
			http.Error(w, "faults: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := f.validate(); err != nil {
			http.Error(w, "faults: "+err.Error(), http.StatusBadRequest)
			return
		}
		s.SetFaults(f)
		writeJSON(w, f)
	default:
		// The real server answers unknown commands with 10003 over HTTP 200.
		if strings.HasPrefix(r.URL.Path, "/v4/") {
			writeJSON(w, answer(sender.CodeInvalidCommand, "invalid command word"))
			return
		}
		http.NotFound(w, r)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func answer(code int, info string) map[string]any {
	status := "OK"
	if code != 0 {
		status = "FAIL"
	}
	id := make([]byte, 16)
	for i := range id {
		id[i] = "0123456789abcdef"[rand.IntN(16)]
	}
	return map[string]any{"ActionStatus": status, "ErrorCode": code, "ErrorInfo": info, "RequestId": string(id)}
}

func (s *Server) serveBroadcast(w http.ResponseWriter, r *http.Request) {
	// The rate limit counts a call when it arrives, as a front door does,
	// not once its signature and body are checked: a busy emulator (a
	// test process under the race detector) would otherwise bring calls
	// that arrived a period apart nearer than that.
	arrived := time.Now()
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))

	s.mu.Lock()
	s.stats.Calls++
	f := s.faults
	next := 0
	if len(s.faults.Codes) > 0 {
		next = s.faults.Codes[0]
		s.faults.Codes = s.faults.Codes[1:]
	}
	roll := func(p float64) bool { return p > 0 && s.rng.Float64() < p }
	badGateway := next == CodeBadGateway || roll(f.BadGatewayRate)
	internal := roll(f.InternalErrorRate)
	if next <= 0 {
		codes := make([]int, 0, len(f.Answers))
		for c := range f.Answers {
			codes = append(codes, c)
		}
		sort.Ints(codes) // a repeatable roll order for one seed
		for _, c := range codes {
			if roll(f.Answers[c]) {
				next = c
				break
			}
		}
	}
	drop := next == CodeDrop || roll(f.DropAfterProcessRate)
	for _, word := range f.DropContaining {
		drop = drop || (word != "" && bytes.Contains(body, []byte(word)))
	}
	s.mu.Unlock()

	if f.Latency > 0 {
		select {
		case <-time.After(f.Latency):
		case <-r.Context().Done():
			return
		}
	}
	if badGateway {
		s.count(-http.StatusBadGateway)
		http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
		return
	}
	code, info, seq := s.process(r, body, f, next, internal, arrived)
	if drop {
		s.count(-1)
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler) // closes the connection without an answer
	}
	s.count(code)
	a := answer(code, info)
	if code == 0 {
		a["MsgSeq"] = seq
	}
	writeJSON(w, a)
}

func (s *Server) count(code int) {
	s.mu.Lock()
	s.stats.ByCode[code]++
	s.mu.Unlock()
}

// process checks and (on success) delivers one call, returning the answer.
func (s *Server) process(r *http.Request, body []byte, f Faults, next int, internal bool, arrived time.Time) (int, string, uint64) {
	if r.Method != http.MethodPost {
		return 60002, "HTTP method must be POST", 0
	}
	if code, info := s.checkQuery(r); code != 0 {
		return code, info, 0
	}
	if f.FeatureOff {
		return sender.CodeNoPermission, "broadcast messaging of audio-video groups is not enabled for this app", 0
	}
	if next > 0 {
		return next, "injected error", 0
	}
	if internal {
		return sender.CodeInternal, "internal server error (injected)", 0
	}
	msg, code, info := checkBody(body)
	if code != 0 {
		return code, info, 0
	}
	if msg.FromAccount != "" && msg.FromAccount != s.opts.Admin && s.opts.Accounts != nil && !slices.Contains(s.opts.Accounts, msg.FromAccount) {
		return codeAccountNotFound, "From_Account " + msg.FromAccount + " does not exist", 0
	}
	for _, word := range f.Blocked {
		if word != "" && bytes.Contains(body, []byte(word)) {
			return sender.CodeContentBlocked, "content blocked by moderation", 0
		}
	}
	elems, err := decodeElements(msg.MsgBody)
	if err != nil {
		return codeInvalidParameter, err.Error(), 0
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if !s.allowLocked(arrived) {
		return sender.CodeFrequencyLimit, "send frequency limit exceeded", 0
	}
	content := contentHash(body)
	entries := s.seen[msg.Random][:0]
	for _, e := range s.seen[msg.Random] {
		if now.Sub(e.at) < s.opts.DedupeWindow {
			entries = append(entries, e)
		}
	}
	s.seen[msg.Random] = entries
	for _, e := range entries {
		if s.opts.DedupeRandomOnly || e.content == content {
			s.stats.Duplicates++
			return 0, "", e.seq
		}
	}
	s.seq++
	s.seen[msg.Random] = append(entries, seenEntry{content: content, at: now, seq: s.seq})
	d := Delivery{
		MsgSeq: s.seq, Random: msg.Random, FromAccount: msg.FromAccount, MsgBody: elems,
		CloudCustomData: msg.CloudCustomData, At: now, Body: append(json.RawMessage(nil), body...),
	}
	s.delivered = append(s.delivered, d)
	s.stats.Delivered++
	s.stats.Elements += len(d.Elements())
	s.stats.Bytes += len(body)
	s.stats.MaxBody = max(s.stats.MaxBody, len(body))
	return 0, "", s.seq
}

// allowLocked applies the rate limit model.
func (s *Server) allowLocked(now time.Time) bool {
	if s.limiter == nil {
		return true
	}
	return s.limiter.allow(now)
}

// decodeElements returns the elements of a checked body.
func decodeElements(raw []json.RawMessage) ([]sender.Element, error) {
	out := make([]sender.Element, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal(r, &out[i]); err != nil {
			return nil, fmt.Errorf("MsgBody[%d]: %w", i, err)
		}
	}
	return out, nil
}

func (s *Server) checkQuery(r *http.Request) (int, string) {
	q := r.URL.Query()
	for _, name := range []string{"sdkappid", "identifier", "usersig", "random", "contenttype"} {
		if q.Get(name) == "" {
			if name == "usersig" {
				return 70002, "usersig is missing"
			}
			return 60002, "query parameter " + name + " is missing"
		}
	}
	appID, err := strconv.ParseUint(q.Get("sdkappid"), 10, 64)
	if err != nil {
		return 60002, "sdkappid is not a number"
	}
	if _, err := strconv.ParseUint(q.Get("random"), 10, 32); err != nil {
		return 60002, "random is not a 32-bit unsigned number"
	}
	if q.Get("contenttype") != "json" {
		return 60002, "contenttype must be json"
	}
	if appID != uint64(s.opts.AppID) {
		return 70020, "SDKAppID not found"
	}
	sig := q.Get("usersig")
	s.mu.Lock()
	expired := s.expiredSig[sig]
	s.sigsSeen[sig] = true
	key := s.opts.SecretKey
	s.mu.Unlock()
	if expired {
		return sender.CodeSigExpired, "UserSig expired"
	}
	switch err := tencentyun.VerifyUserSig(appID, key, q.Get("identifier"), sig, time.Now()); {
	case err == nil:
	case errors.Is(err, tencentyun.ErrExpired):
		return sender.CodeSigExpired, "UserSig expired"
	case errors.Is(err, tencentyun.ErrIdentifierNotMatch):
		return 70013, "identifier does not match the UserSig"
	case errors.Is(err, tencentyun.ErrSdkAppIDNotMatch):
		return 70014, "SDKAppID does not match the UserSig"
	default:
		return sender.CodeSigInvalid, "UserSig verification failed"
	}
	if q.Get("identifier") != s.opts.Admin {
		return 60010, "identifier is not an app administrator"
	}
	return 0, ""
}

// contentHash identifies a message's content: the body without Random.
func contentHash(body []byte) [32]byte {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(body, &m) // already validated
	delete(m, "Random")
	b, _ := json.Marshal(m) // map keys are sorted: canonical
	return sha256.Sum256(b)
}
