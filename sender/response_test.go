package sender

import (
	"reflect"
	"testing"
)

// FuzzFastResponse: where the fast reader reads an answer, it reads
// exactly what encoding/json reads (decodeResponse); the API's own answers
// are read fast.
func FuzzFastResponse(f *testing.F) {
	for _, s := range []string{`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgSeq":1283}`,
		`{"ActionStatus":"FAIL","ErrorCode":10023,"ErrorInfo":"请求频率超限"}`,
		` { "ErrorCode" : -9223372036854775808 , "MsgSeq":18446744073709551615 } `,
		`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgSeq":7,"RequestId":"0a1b2c3d4e5f"}`,
		`{"RequestId":"x","n":-1.5e+3,"t":true,"f":false,"z":null,"ErrorCode":70001}`} {
		var r Response
		if !fastResponse([]byte(s), &r) {
			f.Fatalf("an answer of the API's shape not read fast: %s", s)
		}
		f.Add([]byte(s))
	}
	for _, s := range []string{`{"ActionStatus":"FAIL","ErrorInfo":"no code"}`, `{"ErrorCode":1e3}`, `{"ErrorCode":- 5}`, `{"errorcode":5,"ErrorCode":1}`,
		`{"ActionStatus":"OK","ActionStatus":"FAIL"}`, `{"ErrorCode":-0}`, `{"ErrorCode":01}`, `{"ActionStatus":"\u004fK"}`, `{"ErrorCode":null}`,
		`{"ErrorCode":1}x`, `{"ErrorCode":1,"errorCODE":2}`, `{"ErrorCode":1,"ſ":{}}`, `{"ErrorCode":1,"x":[1]}`, `{"ErrorCode":1,"x":01}`, `{"ErrorInfo":"\xff","ErrorCode":2}`, `{}`, `null`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast Response
		if !fastResponse(b, &fast) {
			return
		}
		slow, err := decodeResponse(b)
		if err != nil {
			t.Fatalf("read fast as %+v, refused by encoding/json (%v): %q", fast, err, b)
		}
		if fast.ErrorCode == 0 && fast.ActionStatus != "" && fast.ActionStatus != "OK" {
			fast.ErrorCode = -1
		}
		if !reflect.DeepEqual(&fast, slow) {
			t.Fatalf("read fast as %+v, by encoding/json as %+v: %q", fast, *slow, b)
		}
	})
}

// BenchmarkDecodeResponse: the API's answer to a call, read fast and by
// encoding/json.
//
//	go test -run '^$' -bench DecodeResponse -benchmem ./sender
func BenchmarkDecodeResponse(b *testing.B) {
	answer := []byte(`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgSeq":1283,"RequestId":"0a1b2c3d4e5f"}`)
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if _, err := DecodeResponse(answer); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeResponse(answer); err != nil {
				b.Fatal(err)
			}
		}
	})
}
