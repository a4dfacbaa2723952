package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeApps writes an apps file (and the key files it names, under
// keys/) in a temporary directory and returns its path.
func writeApps(t *testing.T, body string, keys map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, k := range keys {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(k), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	body = strings.ReplaceAll(body, "KEYS/", dir+"/")
	path := filepath.Join(dir, "apps.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const goodApps = `apps:
  - name: live-sg
    sdkappid: 1400000001
    admin: administrator
    secret_key_file: KEYS/live-sg
    region: singapore
    rate: 5
    topics: [broadcasts.live-sg]
  - name: staging
    sdkappid: 1400000002
    admin: administrator
    secret_key_file: KEYS/staging
    endpoint: http://127.0.0.1:8080
default_app: staging
`

// The apps file: a good one loads with its defaults; every kind of
// mistake is named with its app, line and field, all of them at once.
func TestAppsFile(t *testing.T) {
	keys := map[string]string{"live-sg": "key-a\n", "staging": "key-b"}
	f, err := loadAppsFile(writeApps(t, goodApps, keys))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Apps) != 2 || f.Apps[0].rate() != 5 || f.Apps[1].rate() != 1 || f.Apps[0].line != 2 || f.Apps[1].line != 9 ||
		f.Apps[0].endpoints()[0] != "https://adminapisgp.im.qcloud.com" || f.DefaultApp != "staging" {
		t.Errorf("loaded %+v", f)
	}
	tests := []struct {
		name, body string
		want       []string
	}{
		{"unknown field", strings.Replace(goodApps, "    rate: 5\n", "    rate: 5\n    burst: 3\n", 1), []string{"app live-sg, line 8: field burst not found of an app"}},
		{"wrong type", strings.Replace(goodApps, "sdkappid: 1400000002", "sdkappid: staging", 1), []string{"app staging, line 10"}},
		{"duplicate name", strings.Replace(goodApps, "name: staging", "name: live-sg", 1), []string{`app live-sg, line 9, name: "live-sg" is also the name of app #1`}},
		{"duplicate sdkappid", strings.Replace(goodApps, "1400000002", "1400000001", 1), []string{"app staging, line 9, sdkappid: 1400000001 is also the SDKAppID of app live-sg"}},
		{"bad name", strings.Replace(goodApps, "name: staging", "name: Staging_EU", 1), []string{`name: "Staging_EU" must be 1 to 32 of a-z, 0-9 and -`}},
		{"missing fields", "apps:\n  - name: x\n", []string{"app x, line 2, sdkappid: is required", "admin: is required", "secret_key_file: is required", "region: or endpoint is required"}},
		{"key file missing", strings.Replace(goodApps, "KEYS/staging", "KEYS/nothing", 1), []string{"app staging, line 9, secret_key_file: cannot be read"}},
		{"region and endpoint", strings.Replace(goodApps, "    region: singapore\n", "    region: singapore\n    endpoint: https://x.example\n", 1), []string{"app live-sg, line 2, region: and endpoint are both set"}},
		{"unknown region", strings.Replace(goodApps, "region: singapore", "region: mars", 1), []string{"app live-sg, line 2, region:"}},
		{"plain http off loopback", strings.Replace(goodApps, "http://127.0.0.1:8080", "http://api.example:8080", 1), []string{"app staging, line 9, endpoint:"}},
		{"zero rate", strings.Replace(goodApps, "rate: 5", "rate: 0", 1), []string{"rate: 0 must be a positive number"}},
		{"topic of two apps", strings.Replace(goodApps, "    endpoint:", "    topics: [broadcasts.live-sg]\n    endpoint:", 1), []string{"app staging, line 9, topics: broadcasts.live-sg also belongs to app live-sg"}},
		{"default names no app", strings.Replace(goodApps, "default_app: staging", "default_app: prod", 1), []string{`default_app: "prod" names no app of the file`}},
		{"no apps", "apps: []\n", []string{"apps: no app"}},
		{"not yaml", "apps: [\n", []string{"not YAML"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeApps(t, tt.body, keys)
			_, err := loadAppsFile(path)
			if err == nil {
				t.Fatal("loaded")
			}
			if !strings.HasPrefix(err.Error(), "TIM_APPS_FILE "+path+": ") {
				t.Errorf("%q does not name the file first", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not say %q", err, w)
				}
			}
		})
	}
}

// apps check: a table of the apps with a signed UserSig each, exit 0; a
// file with a wrong app lists every problem and exits 1; no file is a
// settings error (exit 2).
func TestAppsCheck(t *testing.T) {
	keys := map[string]string{"live-sg": "key-a", "staging": "key-b"}
	path := writeApps(t, goodApps, keys)
	var stdout, stderr bytes.Buffer
	if code := runMain([]string{"apps", "check"}, envOf(map[string]string{"TIM_APPS_FILE": path}), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, w := range []string{"live-sg", "1400000001", "singapore https://adminapisgp.im.qcloud.com", "5/s", "broadcasts.live-sg",
		"staging", "http://127.0.0.1:8080", "1/s", "default app: staging", "no problem found"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if strings.Count(out, " ok\n") != 2 {
		t.Errorf("want two UserSigs signed:\n%s", out)
	}
	bad := writeApps(t, strings.Replace(strings.Replace(goodApps, "KEYS/staging", "KEYS/gone", 1), "1400000002", "1400000001", 1), keys)
	stdout.Reset()
	stderr.Reset()
	if code := runMain([]string{"apps", "check", "--file", bad}, envOf(nil), &stdout, &stderr); code != 1 {
		t.Fatalf("a wrong app: exit %d, want 1: %s", code, stdout.String())
	}
	for _, w := range []string{"secret_key_file: cannot be read", "sdkappid: 1400000001 is also the SDKAppID of app live-sg", "problem(s)"} {
		if !strings.Contains(stdout.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, stdout.String())
		}
	}
	if !strings.Contains(stdout.String(), "live-sg   1400000001") && !strings.Contains(stdout.String(), "live-sg  1400000001") {
		t.Errorf("the good app is not listed:\n%s", stdout.String())
	}
	stderr.Reset()
	if code := runMain([]string{"apps", "check"}, envOf(nil), &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "TIM_APPS_FILE") {
		t.Errorf("no file: exit %d, %q; want 2 naming TIM_APPS_FILE", code, stderr.String())
	}
	if code := runMain([]string{"apps"}, envOf(nil), &stdout, &stderr); code != 2 {
		t.Errorf("apps without a subcommand: exit %d, want 2", code)
	}
}

// FuzzAppsFile: any bytes as an apps file load or fail with problems
// that name the file, never a panic; a key file's path from the file
// reads at most maxKeyFileBytes.
func FuzzAppsFile(f *testing.F) {
	f.Add([]byte(goodApps))
	f.Add([]byte("apps:\n  - name: a\n    sdkappid: -1\n    rate: .nan\n    topics: [\"\", x, x]\n"))
	f.Add([]byte("apps: {a: 1}\ndefault_app: [1]\n"))
	f.Add([]byte("apps:\n  - secret_key_file: /dev/zero\n    name: z\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		af, err := parseAppsFile("fuzz.yaml", b)
		if err == nil && (af == nil || len(af.Apps) == 0) {
			t.Fatal("loaded a file with no app")
		}
		if err != nil && !strings.HasPrefix(err.Error(), "TIM_APPS_FILE fuzz.yaml: ") {
			t.Errorf("an error that does not name the file: %q", err)
		}
	})
}

// run serves one app in this release: TIM_APPS_FILE is refused at start
// (exit 2, naming it), not ignored.
func TestRunAppsFileWithSDKAppID(t *testing.T) {
	env := map[string]string{"KAFKA_BROKERS": "127.0.0.1:9092", "KAFKA_TOPIC": "t", "TIM_SDKAPPID": "1400000001",
		"TIM_ADMIN": "administrator", "TIM_SECRET_KEY": "k", "TIM_ENDPOINT": "http://127.0.0.1:1", "TIM_APPS_FILE": "/etc/apps.yaml"}
	var stdout, stderr bytes.Buffer
	if code := runMain([]string{"run"}, envOf(env), &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "TIM_APPS_FILE") {
		t.Errorf("run with TIM_APPS_FILE: exit %d, %q; want 2 naming it", code, stderr.String())
	}
}

// TestRunAppsFileIsASetting: TIM_APPS_FILE is one of run's and pause's
// settings (--apps-file too), so --strict-env does not refuse it as
// unknown.
func TestRunAppsFileIsASetting(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	apps := filepath.Join(dir, "apps.yaml")
	if err := os.WriteFile(key, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(apps, []byte("apps:\n  - name: a\n    sdkappid: 1400000001\n    admin: administrator\n    secret_key_file: "+key+
		"\n    endpoint: http://127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KAFKA_BROKERS": "127.0.0.1:1", "KAFKA_TOPIC": "t", "TIM_APPS_FILE": apps}
	for _, args := range [][]string{{"run", "--strict-env"}, {"pause", "--app", "a", "--strict-env"}} {
		var stdout, stderr bytes.Buffer
		code := runMain(args, envOf(env), &stdout, &stderr)
		if code == 2 || strings.Contains(stderr.String(), "not a setting") {
			t.Errorf("%v with TIM_APPS_FILE: exit %d, %q; want it taken as a setting (the broker's refusal, exit 1)", args, code, stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := runMain([]string{"run", "--apps-file", filepath.Join(dir, "missing.yaml")}, envOf(map[string]string{"KAFKA_BROKERS": "127.0.0.1:1",
		"KAFKA_TOPIC": "t"}), &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "missing.yaml") {
		t.Errorf("run --apps-file of a missing file: exit %d, %q; want 2 naming it", code, stderr.String())
	}
}
