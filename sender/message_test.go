package sender_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/timbroadcast/timbroadcast/sender"
)

func el(msgType, content string) sender.Element {
	return sender.Element{MsgType: msgType, MsgContent: json.RawMessage(content)}
}

func TestValidate(t *testing.T) {
	big := strings.Repeat("x", sender.MaxBodyBytes)
	tests := []struct {
		name      string
		msg       sender.Message
		wantField string // "" = valid
		wantCode  int
	}{
		{"text", sender.Message{MsgBody: []sender.Element{sender.Text("hi")}}, "", 0},
		{"all types", sender.Message{MsgBody: []sender.Element{
			el("TIMTextElem", `{"Text":"a"}`),
			el("TIMLocationElem", `{"Desc":"d","Latitude":1.5,"Longitude":-2}`),
			el("TIMFaceElem", `{"Index":1,"Data":"x"}`),
			el("TIMCustomElem", `{"Data":"x","Desc":"d","Ext":"e","Sound":"s"}`),
			el("TIMSoundElem", `{"Url":"u","UUID":"id","Size":1,"Second":2,"Download_Flag":2}`),
			el("TIMImageElem", `{"UUID":"id","ImageFormat":1,"ImageInfoArray":[{"Type":1,"Size":1,"Width":1,"Height":1,"URL":"u"}]}`),
			el("TIMFileElem", `{"Url":"u","FileSize":1,"FileName":"f","Download_Flag":2}`),
			el("TIMVideoFileElem", `{"VideoUrl":"u","VideoSize":1,"VideoSecond":1,"VideoFormat":"mp4","VideoDownloadFlag":2,"ThumbUrl":"t","ThumbSize":1,"ThumbWidth":1,"ThumbHeight":1,"ThumbFormat":"JPG","ThumbDownloadFlag":2}`),
		}}, "", 0},
		{"empty body", sender.Message{}, "MsgBody", 10004},
		{"unknown type", sender.Message{MsgBody: []sender.Element{el("TIMPollElem", `{}`)}}, "MsgBody[0].MsgType", 10004},
		{"missing type", sender.Message{MsgBody: []sender.Element{el("", `{}`)}}, "MsgBody[0].MsgType", 10004},
		{"missing content", sender.Message{MsgBody: []sender.Element{{MsgType: "TIMTextElem"}}}, "MsgBody[0].MsgContent", 10004},
		{"content not object", sender.Message{MsgBody: []sender.Element{el("TIMTextElem", `"x"`)}}, "MsgBody[0].MsgContent", 10004},
		{"missing text", sender.Message{MsgBody: []sender.Element{el("TIMTextElem", `{}`)}}, "MsgBody[0].MsgContent.Text", 10004},
		{"text wrong kind", sender.Message{MsgBody: []sender.Element{el("TIMTextElem", `{"Text":3}`)}}, "MsgBody[0].MsgContent.Text", 10004},
		{"typo field", sender.Message{MsgBody: []sender.Element{el("TIMTextElem", `{"Text":"a","text":"b"}`)}}, "MsgBody[0].MsgContent.text", 10004},
		{"missing latitude", sender.Message{MsgBody: []sender.Element{el("TIMLocationElem", `{"Desc":"d","Longitude":1}`)}}, "MsgBody[0].MsgContent.Latitude", 10004},
		{"empty image array", sender.Message{MsgBody: []sender.Element{el("TIMImageElem", `{"UUID":"id","ImageFormat":1,"ImageInfoArray":[]}`)}}, "MsgBody[0].MsgContent.ImageInfoArray", 10004},
		{"image info missing URL", sender.Message{MsgBody: []sender.Element{el("TIMImageElem", `{"UUID":"id","ImageFormat":1,"ImageInfoArray":[{"Type":1,"Size":1,"Width":1,"Height":1}]}`)}}, "MsgBody[0].MsgContent.ImageInfoArray[0].URL", 10004},
		{"two custom", sender.Message{MsgBody: []sender.Element{sender.Custom("a"), sender.Text("t"), sender.Custom("b")}}, "MsgBody", 10004},
		{"sound Download_Flag 1", sender.Message{MsgBody: []sender.Element{el("TIMSoundElem", `{"Url":"u","Size":1,"Second":2,"Download_Flag":1}`)}}, "MsgBody[0].MsgContent.Download_Flag", 10004},
		{"file Download_Flag 3", sender.Message{MsgBody: []sender.Element{el("TIMFileElem", `{"Url":"u","FileSize":1,"FileName":"f","Download_Flag":3}`)}}, "MsgBody[0].MsgContent.Download_Flag", 10004},
		{"video VideoDownloadFlag 0", sender.Message{MsgBody: []sender.Element{el("TIMVideoFileElem", `{"VideoUrl":"u","VideoSize":1,"VideoSecond":1,"VideoFormat":"mp4","VideoDownloadFlag":0,"ThumbUrl":"t","ThumbSize":1,"ThumbWidth":1,"ThumbHeight":1,"ThumbFormat":"JPG","ThumbDownloadFlag":2}`)}}, "MsgBody[0].MsgContent.VideoDownloadFlag", 10004},
		{"video ThumbDownloadFlag 2.0", sender.Message{MsgBody: []sender.Element{el("TIMVideoFileElem", `{"VideoUrl":"u","VideoSize":1,"VideoSecond":1,"VideoFormat":"mp4","VideoDownloadFlag":2,"ThumbUrl":"t","ThumbSize":1,"ThumbWidth":1,"ThumbHeight":1,"ThumbFormat":"JPG","ThumbDownloadFlag":2.5}`)}}, "MsgBody[0].MsgContent.ThumbDownloadFlag", 10004},
		{"image format 5", sender.Message{MsgBody: []sender.Element{el("TIMImageElem", `{"UUID":"id","ImageFormat":5,"ImageInfoArray":[{"Type":1,"Size":1,"Width":1,"Height":1,"URL":"u"}]}`)}}, "MsgBody[0].MsgContent.ImageFormat", 10004},
		{"image info type 4", sender.Message{MsgBody: []sender.Element{el("TIMImageElem", `{"UUID":"id","ImageFormat":255,"ImageInfoArray":[{"Type":4,"Size":1,"Width":1,"Height":1,"URL":"u"}]}`)}}, "MsgBody[0].MsgContent.ImageInfoArray[0].Type", 10004},
		{"negative size", sender.Message{MsgBody: []sender.Element{el("TIMFileElem", `{"Url":"u","FileSize":-1,"FileName":"f","Download_Flag":2}`)}}, "MsgBody[0].MsgContent.FileSize", 10004},
		{"latitude out of range", sender.Message{MsgBody: []sender.Element{el("TIMLocationElem", `{"Desc":"d","Latitude":91,"Longitude":1}`)}}, "MsgBody[0].MsgContent.Latitude", 10004},
		{"too long", sender.Message{MsgBody: []sender.Element{sender.Text(big)}}, "MsgBody", 80002},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.msg.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var se *sender.Error
			if !errors.As(err, &se) {
				t.Fatalf("Validate() = %v, want *sender.Error", err)
			}
			if se.Field != tt.wantField || se.Code != tt.wantCode || se.Class != sender.ClassReject {
				t.Fatalf("got field %q code %d class %v (%v), want %q %d reject", se.Field, se.Code, se.Class, se, tt.wantField, tt.wantCode)
			}
			if !strings.Contains(se.Error(), tt.wantField) && tt.wantField != "MsgBody" {
				t.Errorf("error %q does not name %q", se.Error(), tt.wantField)
			}
		})
	}
}

func TestEncodeKeepsBytes(t *testing.T) {
	m := sender.Message{Random: 9, MsgBody: []sender.Element{el("TIMTextElem", `{ "Text" : "<b>&amp;</b>" }`)}}
	got, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"Random":9,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"<b>&amp;</b>"}}]}`
	if string(got) != want {
		t.Fatalf("Encode() = %s, want %s", got, want)
	}
}

func TestDecodeResponse(t *testing.T) {
	tests := []struct {
		in       string
		wantCode int
		wantSeq  uint64
		wantErr  bool
	}{
		{`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgSeq":1283}`, 0, 1283, false},
		{`{"ActionStatus":"FAIL","ErrorCode":10023,"ErrorInfo":"limit"}`, 10023, 0, false},
		{`{"ActionStatus":"FAIL","ErrorInfo":"no code"}`, -1, 0, false},
		{`<html>502</html>`, 0, 0, true},
		{`{}`, 0, 0, true},
		{`null`, 0, 0, true},
		{`{"ErrorCode":"x"}`, 0, 0, true},
	}
	for _, tt := range tests {
		r, err := sender.DecodeResponse([]byte(tt.in))
		if tt.wantErr {
			if err == nil {
				t.Errorf("DecodeResponse(%s) = %+v, want error", tt.in, r)
			}
			continue
		}
		if err != nil || r.ErrorCode != tt.wantCode || r.MsgSeq != tt.wantSeq {
			t.Errorf("DecodeResponse(%s) = %+v, %v; want code %d seq %d", tt.in, r, err, tt.wantCode, tt.wantSeq)
		}
	}
}

func FuzzDecodeResponse(f *testing.F) {
	for _, s := range []string{`{"ActionStatus":"OK","ErrorCode":0,"MsgSeq":1}`, `{"ErrorCode":10002}`, `[]`, `{"MsgSeq":-1}`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := sender.DecodeResponse(b)
		if err == nil && r == nil {
			t.Fatal("nil response without error")
		}
		if err == nil && r.ErrorCode == 0 && r.ActionStatus != "" && r.ActionStatus != "OK" {
			t.Fatalf("status %q decoded as success", r.ActionStatus)
		}
	})
}

func FuzzValidate(f *testing.F) {
	f.Add(`{"Random":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"a"}}]}`)
	f.Add(`{"MsgBody":[{"MsgType":"TIMImageElem","MsgContent":{"UUID":"a","ImageFormat":1,"ImageInfoArray":[{"Type":1}]}}]}`)
	f.Add(`{"MsgBody":[{"MsgType":"TIMCustomElem","MsgContent":{"Data":"a"}},{"MsgType":"TIMCustomElem","MsgContent":{"Data":"b"}}]}`)
	f.Fuzz(func(t *testing.T, s string) {
		var m sender.Message
		if json.Unmarshal([]byte(s), &m) != nil {
			return
		}
		body, err := m.Encode()
		if err != nil {
			var se *sender.Error
			if !errors.As(err, &se) || se.Class != sender.ClassReject || se.Field == "" {
				t.Fatalf("validation error %v is not a reject naming a field", err)
			}
			return
		}
		if len(body) > sender.MaxBodyBytes {
			t.Fatalf("accepted a %d-byte body", len(body))
		}
		// What passes validation must round-trip to the same bytes.
		var again sender.Message
		if err := json.Unmarshal(body, &again); err != nil {
			t.Fatalf("encoded body does not decode: %v", err)
		}
		body2, err := again.Encode()
		if err != nil || string(body2) != string(body) {
			t.Fatalf("re-encode = %s, %v; want %s", body2, err, body)
		}
	})
}
