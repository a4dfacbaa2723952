package sendertest_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

const (
	appID = 1400000001
	admin = "administrator"
	key   = "sendertest-key"
)

func newServer(t *testing.T, opts sendertest.Options) *sendertest.Server {
	t.Helper()
	opts.AppID, opts.Admin, opts.SecretKey = appID, admin, key
	s := sendertest.NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

// send sends body once (no retries) and returns the answer.
func send(t *testing.T, url string, body []byte) *sender.Response {
	t.Helper()
	return sendTo(t, url, appID, key, body)
}

// sendTo sends body once for app id signed with key k.
func sendTo(t *testing.T, url string, id int, k string, body []byte) *sender.Response {
	t.Helper()
	c, err := sender.New(sender.Config{AppID: id, Admin: admin, SecretKey: k, Endpoints: []string{url},
		Rate: sender.Unlimited, UnknownRetries: 1, MaxElapsed: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.SendBody(context.Background(), body)
	var se *sender.Error
	switch {
	case err == nil:
		return resp
	case errors.As(err, &se) && se.Code != 0:
		return &sender.Response{ErrorCode: se.Code, ErrorInfo: se.Info}
	}
	t.Fatalf("send: %v", err)
	return nil
}

// TestRulesAgreeWithClient: the emulator's rules (written from the
// documentation) and the client's validation (sender) judge the same
// bodies alike. A disagreement is a bug in one of them.
func TestRulesAgreeWithClient(t *testing.T) {
	emu := newServer(t, sendertest.Options{})
	bodies := []string{
		`{"Random":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"a"}}]}`,
		`{"Random":2,"MsgBody":[{"MsgType":"TIMSoundElem","MsgContent":{"Url":"u","Size":1,"Second":2,"Download_Flag":2}}]}`,
		`{"Random":3,"MsgBody":[{"MsgType":"TIMSoundElem","MsgContent":{"Url":"u","Size":1,"Second":2,"Download_Flag":1}}]}`,
		`{"Random":4,"MsgBody":[{"MsgType":"TIMFileElem","MsgContent":{"Url":"u","FileSize":1,"FileName":"f","Download_Flag":0}}]}`,
		`{"Random":5,"MsgBody":[{"MsgType":"TIMVideoFileElem","MsgContent":{"VideoUrl":"u","VideoSize":1,"VideoSecond":1,"VideoFormat":"mp4","VideoDownloadFlag":2,"ThumbUrl":"t","ThumbSize":1,"ThumbWidth":1,"ThumbHeight":1,"ThumbFormat":"JPG","ThumbDownloadFlag":1}}]}`,
		`{"Random":6,"MsgBody":[{"MsgType":"TIMImageElem","MsgContent":{"UUID":"i","ImageFormat":7,"ImageInfoArray":[{"Type":1,"Size":1,"Width":1,"Height":1,"URL":"u"}]}}]}`,
		`{"Random":7,"MsgBody":[{"MsgType":"TIMImageElem","MsgContent":{"UUID":"i","ImageFormat":3,"ImageInfoArray":[{"Type":9,"Size":1,"Width":1,"Height":1,"URL":"u"}]}}]}`,
		`{"Random":8,"MsgBody":[{"MsgType":"TIMCustomElem","MsgContent":{"Data":"a"}},{"MsgType":"TIMCustomElem","MsgContent":{"Data":"b"}}]}`,
		`{"Random":9,"MsgBody":[{"MsgType":"TIMPollElem","MsgContent":{}}]}`,
		`{"Random":10,"MsgBody":[]}`,
		`{"Random":11,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"a","Extra":1}}]}`,
		`{"Random":12,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":5}}]}`,
		`{"Random":13,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"` + strings.Repeat("x", 12000) + `"}}]}`,
		`{"Random":14,"MsgBody":[{"MsgType":"TIMLocationElem","MsgContent":{"Desc":"d","Latitude":1,"Longitude":2}}]}`,
	}
	for _, b := range bodies {
		var m sender.Message
		if err := json.Unmarshal([]byte(b), &m); err != nil {
			t.Fatal(err)
		}
		clientErr := m.Validate()
		resp := send(t, emu.URL, []byte(b))
		if (clientErr == nil) != (resp.ErrorCode == 0) {
			t.Errorf("disagreement on %.120s: client %v, emulator %d %q", b, clientErr, resp.ErrorCode, resp.ErrorInfo)
		}
	}
}

func TestAnswersAndRequestID(t *testing.T) {
	emu := newServer(t, sendertest.Options{Faults: sendertest.Faults{Answers: map[int]float64{70009: 1}}})
	body := `{"Random":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"a"}}]}`
	for range 3 {
		if resp := send(t, emu.URL, []byte(body)); resp.ErrorCode != 70009 {
			t.Fatalf("answer %d, want 70009 every time", resp.ErrorCode)
		}
	}
	emu.SetFaults(sendertest.Faults{})
	if resp := send(t, emu.URL, []byte(body)); resp.ErrorCode != 0 {
		t.Fatalf("answer %d after the fault cleared", resp.ErrorCode)
	}
	// A raw answer carries a RequestId.
	res, err := http.Post(emu.URL+"/v4/group_open_http_svc/send_broadcast_msg", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var a map[string]any
	if err := json.Unmarshal(raw, &a); err != nil || a["RequestId"] == "" || a["RequestId"] == nil {
		t.Errorf("answer %s has no RequestId", raw)
	}
}

func TestUnknownAccount(t *testing.T) {
	emu := newServer(t, sendertest.Options{Accounts: []string{"host_001"}})
	for from, want := range map[string]int{"host_001": 0, admin: 0, "": 0, "nobody": 10019} {
		b := `{"From_Account":"` + from + `","Random":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"` + from + `"}}]}`
		if resp := send(t, emu.URL, []byte(b)); resp.ErrorCode != want {
			t.Errorf("From_Account %q: answer %d, want %d", from, resp.ErrorCode, want)
		}
	}
}

// sendAs sends body once for app id with key k and returns the answer
// code (0: OK).
func sendAs(t *testing.T, url string, id int, k string, body string) int {
	t.Helper()
	return sendTo(t, url, id, k, []byte(body)).ErrorCode
}

// One endpoint hosting two apps: each checks its own key, keeps its own
// dedupe, limiter, faults and deliveries; an app it does not host is
// answered 70020; the control API is per app.
func TestAppsBehindOneEndpoint(t *testing.T) {
	a := sendertest.NewApps(
		sendertest.Options{AppID: 1400000001, Admin: admin, SecretKey: "key-a", Rate: 1, Limiter: sendertest.LimiterSpacing},
		sendertest.Options{AppID: 1400000002, Admin: admin, SecretKey: "key-b"})
	t.Cleanup(a.Close)
	body := `{"Random":7,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`
	if code := sendAs(t, a.URL, 1400000001, "key-a", body); code != 0 {
		t.Fatalf("app a: %d", code)
	}
	if code := sendAs(t, a.URL, 1400000001, "key-a", `{"Random":8,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"x"}}]}`); code != 10023 {
		t.Errorf("app a's second call at once: %d, want 10023 (its own 1/s limit)", code)
	}
	// The same Random and bytes for the other app are its own message:
	// delivered, not deduped, and not limited by a's rate.
	if code := sendAs(t, a.URL, 1400000002, "key-b", body); code != 0 {
		t.Fatalf("app b: %d", code)
	}
	if code := sendAs(t, a.URL, 1400000002, "key-a", body); code == 0 {
		t.Error("app b accepted app a's key")
	}
	if code := sendAs(t, a.URL, 1400000009, "key-a", body); code != 70020 {
		t.Errorf("an app not hosted: %d, want 70020", code)
	}
	a.App(1400000002).SetFaults(sendertest.Faults{FeatureOff: true})
	if code := sendAs(t, a.URL, 1400000002, "key-b", `{"Random":9,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"y"}}]}`); code != 10007 {
		t.Errorf("app b switched off: %d, want 10007", code)
	}
	if da, db := len(a.App(1400000001).Delivered()), len(a.App(1400000002).Delivered()); da != 1 || db != 1 {
		t.Errorf("delivered %d and %d, want one each", da, db)
	}
	resp, err := http.Get(a.URL + "/emulator/1400000002/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st sendertest.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Delivered != 1 || st.ByCode[10007] != 1 {
		t.Errorf("app b's stats over HTTP: %+v, %v", st, err)
	}
	if ids := a.IDs(); len(ids) != 2 || ids[0] != 1400000001 {
		t.Errorf("IDs %v", ids)
	}
}
