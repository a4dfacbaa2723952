package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/timbroadcast/timbroadcast/sender"
)

// The apps file (TIM_APPS_FILE): the apps one deployment serves, each with
// its own credentials, region and rate. Every other setting stays global.
//
//	apps:
//	  - name: live-sg            # [a-z0-9-], at most 32
//	    sdkappid: 1400000001
//	    admin: administrator
//	    secret_key_file: /run/secrets/live-sg
//	    region: singapore        # or endpoint: https://...
//	    rate: 1                  # calls/s (default 1)
//	    topics: [broadcasts.live-sg]
//	default_app: live-sg

// appsFile is the apps file as written.
type appsFile struct {
	Apps       []appSpec `yaml:"apps"`
	DefaultApp string    `yaml:"default_app"`
}

// appSpec is one app of the apps file.
type appSpec struct {
	Name          string   `yaml:"name"`
	SDKAppID      int      `yaml:"sdkappid"`
	Admin         string   `yaml:"admin"`
	SecretKeyFile string   `yaml:"secret_key_file"`
	Region        string   `yaml:"region"`
	Endpoint      string   `yaml:"endpoint"`
	Rate          *float64 `yaml:"rate"`
	Topics        []string `yaml:"topics"`
	// line is where the app begins in the file.
	line int
}

// appsProblem is what is wrong with the apps file: where (the app, its
// line) and which field.
type appsProblem struct {
	App   string // the app's name, or "#N" when it has none; "" for the file
	Line  int
	Field string
	Msg   string
}

func (p appsProblem) Error() string {
	var where []string
	if p.App != "" {
		where = append(where, "app "+p.App)
	}
	if p.Line > 0 {
		where = append(where, "line "+strconv.Itoa(p.Line))
	}
	if p.Field != "" {
		where = append(where, p.Field)
	}
	if len(where) == 0 {
		return p.Msg
	}
	return strings.Join(where, ", ") + ": " + p.Msg
}

// appsFileError is every problem of an apps file, naming the file.
type appsFileError struct {
	Path     string
	Problems []appsProblem
}

func (e *appsFileError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Error()
	}
	return fmt.Sprintf("TIM_APPS_FILE %s: %s", e.Path, strings.Join(lines, "; "))
}

// appNamePattern is what an app's name may be: it is a metric label and
// a log field.
var appNamePattern = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// maxAppsFileBytes bounds the apps file (a thousand apps take ~250 KB).
const maxAppsFileBytes = 8 << 20

// loadAppsFile reads and checks the apps file at path. It returns the file
// and, when anything is wrong, an *appsFileError listing every problem
// (the file is returned as far as it could be read).
func loadAppsFile(path string) (*appsFile, error) {
	b, err := readAppsFile(path)
	if err != nil {
		return nil, err
	}
	return parseAppsFile(path, b)
}

// readAppsFile returns the apps file's bytes, at most maxAppsFileBytes.
func readAppsFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(b) > maxAppsFileBytes {
		err = fmt.Errorf("%d bytes, more than %d", len(b), maxAppsFileBytes)
	}
	if err != nil {
		return nil, &appsFileError{Path: path, Problems: []appsProblem{{Msg: "cannot be read: " + err.Error()}}}
	}
	return b, nil
}

// parseAppsFile checks the apps file's bytes b (read from path).
func parseAppsFile(path string, b []byte) (*appsFile, error) {
	fail := func(ps ...appsProblem) (*appsFile, error) { return nil, &appsFileError{Path: path, Problems: ps} }
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return fail(appsProblem{Msg: "not YAML: " + err.Error()})
	}
	starts := appLines(&root)
	var f appsFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var ps []appsProblem
	if err := dec.Decode(&f); err != nil {
		// A field of the wrong type or unknown: the rest is decoded, and
		// checked too, so every problem is told at once.
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return fail(appsProblem{Msg: err.Error()})
		}
		for _, e := range te.Errors {
			ps = append(ps, yamlProblem(e, starts))
		}
	}
	for i := range f.Apps {
		if i < len(starts) {
			f.Apps[i].line = starts[i]
		}
	}
	for i, p := range ps { // name the app when the file does
		if n, err := strconv.Atoi(strings.TrimPrefix(p.App, "#")); err == nil && n >= 1 && n <= len(f.Apps) && f.Apps[n-1].Name != "" {
			ps[i].App = f.Apps[n-1].Name
		}
	}
	if ps = append(ps, f.check()...); len(ps) > 0 {
		return &f, &appsFileError{Path: path, Problems: ps}
	}
	return &f, nil
}

// appLines returns the line where each app of the file begins.
func appLines(root *yaml.Node) []int {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "apps" && m.Content[i+1].Kind == yaml.SequenceNode {
			var out []int
			for _, n := range m.Content[i+1].Content {
				out = append(out, n.Line)
			}
			return out
		}
	}
	return nil
}

var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// yamlProblem turns a decoding error of yaml ("line 7: field x not found
// in type main.appSpec") into a problem naming the app it is in.
func yamlProblem(e string, starts []int) appsProblem {
	m := yamlLine.FindStringSubmatch(e)
	if m == nil {
		return appsProblem{Msg: e}
	}
	line, _ := strconv.Atoi(m[1])
	msg := strings.NewReplacer("in type main.appSpec", "of an app", "in type main.appsFile", "of the file").Replace(m[2])
	p := appsProblem{Line: line, Msg: msg}
	for i, s := range starts {
		if s <= line {
			p.App = "#" + strconv.Itoa(i+1)
		}
	}
	return p
}

// check lists what is wrong with the apps, reading their key files.
func (f *appsFile) check() []appsProblem {
	var ps []appsProblem
	if len(f.Apps) == 0 {
		return []appsProblem{{Field: "apps", Msg: "no app: list at least one"}}
	}
	names := map[string]int{}
	ids := map[int]string{}
	topics := map[string]string{}
	for i := range f.Apps {
		a := &f.Apps[i]
		label := a.Name
		if label == "" {
			label = "#" + strconv.Itoa(i+1)
		}
		add := func(field, format string, args ...any) {
			ps = append(ps, appsProblem{App: label, Line: a.line, Field: field, Msg: fmt.Sprintf(format, args...)})
		}
		switch {
		case a.Name == "":
			add("name", "is required")
		case !appNamePattern.MatchString(a.Name):
			add("name", "%q must be 1 to 32 of a-z, 0-9 and -", a.Name)
		case names[a.Name] > 0:
			add("name", "%q is also the name of app #%d", a.Name, names[a.Name])
		default:
			names[a.Name] = i + 1
		}
		switch {
		case a.SDKAppID <= 0:
			add("sdkappid", "is required: the app's SDKAppID (a positive number)")
		case ids[a.SDKAppID] != "":
			add("sdkappid", "%d is also the SDKAppID of app %s", a.SDKAppID, ids[a.SDKAppID])
		default:
			ids[a.SDKAppID] = label
		}
		if strings.TrimSpace(a.Admin) == "" {
			add("admin", "is required: an admin account of the app")
		}
		if a.SecretKeyFile == "" {
			add("secret_key_file", "is required: the file holding the app's secret key")
		} else if _, err := readKeyFile(a.SecretKeyFile); err != nil {
			add("secret_key_file", "%v", err)
		}
		switch {
		case a.Region != "" && a.Endpoint != "":
			add("region", "and endpoint are both set; set one")
		case a.Region != "":
			if _, err := sender.RegionEndpoints(a.Region); err != nil {
				add("region", "%v", err)
			}
		case a.Endpoint != "":
			for _, ep := range strings.Split(a.Endpoint, ",") {
				if err := sender.CheckEndpoint(strings.TrimSpace(ep)); err != nil {
					add("endpoint", "%v", err)
				}
			}
		default:
			add("region", "or endpoint is required: the region of the app (%s) or a base URL", strings.Join(sender.RegionNames(), ", "))
		}
		if a.Rate != nil && !(*a.Rate > 0) {
			add("rate", "%v must be a positive number of calls a second", *a.Rate)
		}
		for _, t := range a.Topics {
			switch {
			case strings.TrimSpace(t) == "":
				add("topics", "an empty topic name")
			case topics[t] != "" && topics[t] != label:
				add("topics", "%s also belongs to app %s: a topic belongs to one app", t, topics[t])
			default:
				topics[t] = label
			}
		}
	}
	if f.DefaultApp != "" && names[f.DefaultApp] == 0 {
		ps = append(ps, appsProblem{Field: "default_app", Msg: fmt.Sprintf("%q names no app of the file", f.DefaultApp)})
	}
	return ps
}

// maxKeyFileBytes bounds a key file (keys are 32 to 64 characters).
const maxKeyFileBytes = 64 << 10

// readKeyFile reads an app's secret key (white space around it trimmed):
// at most maxKeyFileBytes, so a path to a device or a log cannot hold the
// check.
func readKeyFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("cannot be read: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	switch {
	case err != nil:
		return "", fmt.Errorf("cannot be read: %w", err)
	case len(b) > maxKeyFileBytes:
		return "", fmt.Errorf("%s is more than %d bytes: not a key", path, maxKeyFileBytes)
	case len(bytes.TrimSpace(b)) == 0:
		return "", fmt.Errorf("%s is empty", path)
	}
	return string(bytes.TrimSpace(b)), nil
}

// rate is the app's calls a second (default 1).
func (a appSpec) rate() float64 {
	if a.Rate == nil {
		return 1
	}
	return *a.Rate
}

// endpoints are the app's API base URLs, primary first.
func (a appSpec) endpoints() []string {
	if a.Region != "" {
		eps, _ := sender.RegionEndpoints(a.Region)
		return eps
	}
	var out []string
	for _, ep := range strings.Split(a.Endpoint, ",") {
		out = append(out, strings.TrimSpace(ep))
	}
	return out
}
