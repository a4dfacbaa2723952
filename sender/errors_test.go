package sender

import (
	"sort"
	"testing"
	"time"
)

// TestErrorTable checks every documented code against tim-api.md's table,
// written out again here on purpose: a code moved to another class shows
// up as a failure naming it.
func TestErrorTable(t *testing.T) {
	type want struct {
		act       action
		rateLimit bool
	}
	retry, limit := want{act: actRetry}, want{act: actRetry, rateLimit: true}
	expected := map[int]want{
		10002: retry, 60013: retry, 60014: retry, 70169: retry, 70500: retry,
		10006: limit, 10023: limit, 60007: limit, 60011: limit, 60018: limit, 60019: limit,
		60008: {act: actRetryBounded},
		70001: {act: actRenewSig}, 70052: {act: actRenewSig},
		70002: {act: actBadSig}, 70003: {act: actBadSig}, 70005: {act: actBadSig}, 60004: {act: actBadSig}, 60005: {act: actBadSig},
	}
	for _, c := range []int{10003, 10007, 10026, 10059, 60006, 60010, 60012, 60016, 60017, 60020, 60021,
		70009, 70013, 70014, 70016, 70020, 70050, 70051, 70403} {
		expected[c] = want{act: actPause}
	}
	for _, c := range []int{10004, 10019, 60002, 60003, 60015, 70402, 80001, 80002} {
		expected[c] = want{act: actReject}
	}
	var codes []int
	for c := range expected {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	for _, c := range codes {
		r := classify(c)
		if r.act != expected[c].act || r.rateLimit != expected[c].rateLimit {
			t.Errorf("code %d: action %d rate limit %v, want %d, %v", c, r.act, r.rateLimit, expected[c].act, expected[c].rateLimit)
		}
		if r.meaning == "" {
			t.Errorf("code %d has no meaning for the logs", c)
		}
		if IsRateLimit(c) != expected[c].rateLimit {
			t.Errorf("IsRateLimit(%d) = %v", c, IsRateLimit(c))
		}
	}
	for c := range errorTable {
		if _, ok := expected[c]; !ok {
			t.Errorf("code %d is in the table but not in the documented list", c)
		}
	}
	if classify(12345).act != actUnknown || classify(70050).minPause != time.Minute {
		t.Error("unknown codes are actUnknown; 70050 waits a minute")
	}
}

func TestErrorReason(t *testing.T) {
	tests := []struct {
		err  Error
		want string
	}{
		{Error{Class: ClassReject, Code: 80002}, ReasonBodyTooLong},
		{Error{Class: ClassReject, Code: 10004, Field: "MsgBody[0].MsgContent.Download_Flag"}, ReasonInvalidEvent},
		{Error{Class: ClassReject, Code: 80001}, ReasonContentBlocked},
		{Error{Class: ClassReject, Code: 12345}, ReasonUnknownError},
		{Error{Class: ClassReject, Code: 10019}, ReasonAPIRejected},
		{Error{Class: ClassPause, Code: 10007}, "pause"},
		{Error{Class: ClassRetry, Code: 10002}, "retry"},
	}
	for _, tt := range tests {
		if got := tt.err.Reason(); got != tt.want {
			t.Errorf("%+v: reason %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestCheckEndpoint(t *testing.T) {
	for _, ok := range []string{"https://adminapisgp.im.qcloud.com", "https://10.0.0.1:8443", "http://127.0.0.1:8080",
		"http://127.9.9.9", "http://localhost:1", "http://[::1]:8080"} {
		if err := CheckEndpoint(ok); err != nil {
			t.Errorf("CheckEndpoint(%q) = %v, want ok", ok, err)
		}
	}
	for _, bad := range []string{"http://0.0.0.0:9", "http://emulator:8080", "http://10.1.2.3", "http://localhost.example.com",
		"127.0.0.1:8080", "ftp://x", "https://x/?a=b", "https://"} {
		if err := CheckEndpoint(bad); err == nil {
			t.Errorf("CheckEndpoint(%q) accepted", bad)
		}
	}
}
