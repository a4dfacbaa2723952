package main

import (
	"bytes"
	"io"
	"net/url"
	"sync"
)

// scrubWriter replaces secret values (the app's key, Kafka passwords,
// client secrets, tokens) before anything reaches the terminal or the
// logs: credentials appear nowhere but on the wire.
type scrubWriter struct {
	mu      sync.Mutex
	w       io.Writer
	secrets [][]byte
}

// add registers more secret values; short ones are ignored (they would
// scrub ordinary words).
func (s *scrubWriter) add(values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range values {
		if len(v) < 4 {
			continue
		}
		s.secrets = append(s.secrets, []byte(v))
		if e := url.QueryEscape(v); e != v {
			s.secrets = append(s.secrets, []byte(e))
		}
	}
}

func (s *scrubWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.w.Write(s.scrubLocked(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *scrubWriter) scrubLocked(p []byte) []byte {
	out := p
	for _, sec := range s.secrets {
		if bytes.Contains(out, sec) {
			out = bytes.ReplaceAll(out, sec, []byte("[REDACTED]"))
		}
	}
	return out
}

// text is t with every secret the writer knows replaced: for what is
// served rather than written (/readyz).
func (s *scrubWriter) text(t string) string {
	if s == nil {
		return t
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.scrubLocked([]byte(t)))
}

// secretHolder is a command that knows its credentials.
type secretHolder interface {
	secrets() []string
}

// secretEnv are the settings whose values are secrets.
var secretEnv = []string{"TIM_SECRET_KEY", "KAFKA_SASL_PASSWORD", "KAFKA_SASL_OAUTH_CLIENT_SECRET"}
