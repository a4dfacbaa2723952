package main_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// TestVersion: the binary names its release in `version`, at start, in
// /metrics and to the group (`status`), and that release is the
// changelog's newest section.
func TestVersion(t *testing.T) {
	needBinary(t)
	out, _, code := runCmd(t, nil, "", "version")
	m := regexp.MustCompile(`^timbroadcast (\S+) \(go`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("version: exit %d, %q", code, out)
	}
	v := m[1]
	changelog, err := os.ReadFile("../../CHANGELOG.md")
	if err != nil {
		t.Fatal(err)
	}
	if first := regexp.MustCompile(`(?m)^## (\S+)`).FindSubmatch(changelog); first == nil || string(first[1]) != v {
		t.Errorf("CHANGELOG.md's newest section is %q, the binary says %s", first, v)
	}

	ce := newCrashEnv(t, 1, 1, sendertest.Options{}, nil)
	w := startWorker(t, ce.env)
	addr := waitHTTPAddr(t, w)
	ce.waitCommitted(t, 30*time.Second)
	if got := metricValue(t, addr, `timbroadcast_build_info{goversion="`+runtimeVersion(t)+`",version="`+v+`"}`); got != 1 {
		t.Errorf("timbroadcast_build_info for %s = %v, want 1", v, got)
	}
	if !strings.Contains(w.logs.String(), `"version":"`+v+`"`) {
		t.Errorf("the start log does not name the version:\n%.2000s", w.logs.String())
	}
	status, errOut, code := runCmd(t, ce.env, "", "status")
	if code != 0 || !strings.Contains(status, "VERSION") || !strings.Contains(status, " "+v+" ") {
		t.Errorf("status (exit %d) does not show the member's version %s:\n%s\n%s", code, v, status, errOut)
	}
	w.stop(t)
}

// runtimeVersion is the Go release the binary was built with (the one
// running the tests builds it).
func runtimeVersion(t *testing.T) string {
	out, _, _ := runCmd(t, nil, "", "version")
	m := regexp.MustCompile(`\((go\S+) `).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no Go release in %q", out)
	}
	return m[1]
}
