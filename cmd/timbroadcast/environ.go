package main

import (
	"fmt"
	"sort"
	"strings"

	"go.uber.org/zap"
)

// Unknown variables are reported: a TIM_MAP given to a version without
// mappings, or a TIM_MERGE_MAX_BYTE missing its S, would otherwise be
// ignored in silence.

// prefixes are the variable families timbroadcast owns or reads.
var prefixes = []string{"TIM_", "KAFKA_", "OTEL_"}

// otelKnown are the OpenTelemetry variables the SDK, the OTLP exporters
// and the propagators read themselves; OTEL_EXPORTER_OTLP_* and the
// batch-processor and limits families are known by prefix.
var otelKnown = map[string]bool{
	"OTEL_SDK_DISABLED": true, "OTEL_SERVICE_NAME": true, "OTEL_RESOURCE_ATTRIBUTES": true, "OTEL_LOG_LEVEL": true,
	"OTEL_PROPAGATORS": true, "OTEL_TRACES_SAMPLER": true, "OTEL_TRACES_SAMPLER_ARG": true, "OTEL_TRACES_EXPORTER": true,
	"OTEL_METRICS_EXPORTER": true, "OTEL_LOGS_EXPORTER": true,
}

var otelPrefixes = []string{"OTEL_EXPORTER_OTLP_", "OTEL_BSP_", "OTEL_ATTRIBUTE_", "OTEL_SPAN_", "OTEL_EVENT_", "OTEL_LINK_"}

// checkEnviron warns about every variable in environ of timbroadcast's
// families that the command's settings do not know, naming the closest
// known one; with --strict-env it returns an error instead. A command
// that reads no variables (demo) is not checked.
func checkEnviron(command string, declared []*settings, environ []string, log *zap.Logger) error {
	if len(declared) == 0 {
		return nil
	}
	known := map[string]bool{"LOG_LEVEL": true}
	strict := false
	for _, s := range declared {
		for _, st := range s.all {
			if st.env != "" {
				known[st.env] = true
			}
		}
		strict = strict || *s.strict
		if s.tracing {
			for k := range otelKnown {
				known[k] = true
			}
		}
	}
	var unknown []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if known[name] || !ours(name) || (known["OTEL_PROPAGATORS"] && otelFamily(name)) {
			continue
		}
		unknown = append(unknown, name)
	}
	sort.Strings(unknown)
	var msgs []string
	for _, name := range unknown {
		msg := name + " is not a setting"
		if best := closest(name, known); best != "" {
			msg += fmt.Sprintf("; did you mean %s?", best)
		}
		msgs = append(msgs, msg)
		if !strict {
			log.Warn(msg, zap.String("command", command), zap.String("note", "ignored; --strict-env makes it an error"))
		}
	}
	if strict && len(msgs) > 0 {
		return fmt.Errorf("%s (%s --strict-env)", strings.Join(msgs, "; "), command)
	}
	return nil
}

func ours(name string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func otelFamily(name string) bool {
	for _, p := range otelPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// closest returns the known name nearest to name, or "": of the names
// that begin with it or that it begins with (a cut or extended name), the
// one at the smallest edit distance; else the nearest other one, at most a
// third of name's length away.
func closest(name string, known map[string]bool) string {
	best, bestScore := "", -1
	for k := range known {
		score := distance(name, k)
		if !strings.HasPrefix(k, name) && !strings.HasPrefix(name, k) {
			if score > len(name)/3 {
				continue
			}
			score += 1000 // after every cut or extended name
		}
		if best == "" || score < bestScore || score == bestScore && k < best {
			best, bestScore = k, score
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
