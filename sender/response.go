package sender

import (
	"encoding/json"
	"fmt"
)

// Response is the API's answer.
type Response struct {
	ActionStatus string `json:"ActionStatus"`
	ErrorCode    int    `json:"ErrorCode"`
	ErrorInfo    string `json:"ErrorInfo"`
	MsgSeq       uint64 `json:"MsgSeq,omitempty"`
	// Attempts is the number of HTTP requests the send took (not part of
	// the API's answer).
	Attempts int `json:"-"`
}

// DecodeResponse parses an API answer. It fails on anything that is not a
// JSON object carrying ActionStatus or ErrorCode.
func DecodeResponse(b []byte) (*Response, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || raw == nil {
		return nil, fmt.Errorf("answer is not a JSON object: %.80q", b)
	}
	_, hasStatus := raw["ActionStatus"]
	_, hasCode := raw["ErrorCode"]
	if !hasStatus && !hasCode {
		return nil, fmt.Errorf("answer has neither ActionStatus nor ErrorCode: %.80q", b)
	}
	var r Response
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode answer: %w", err)
	}
	if r.ErrorCode == 0 && r.ActionStatus != "" && r.ActionStatus != "OK" {
		// FAIL without a code: treat as an unknown failure, not a success.
		r.ErrorCode = -1
	}
	return &r, nil
}
