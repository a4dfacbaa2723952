package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tencentyun/tls-sig-api-v2-golang/tencentyun"
)

// appsCheckCmd is `timbroadcast apps check`: it reads the apps file,
// signs a UserSig with each app's key, and reports each app's endpoint,
// rate and topics, and everything wrong (a key file that cannot be read,
// an SDKAppID twice, an unknown field...), so an operator knows which app
// is wrong before the first event. Exit 1 when anything is.
type appsCheckCmd struct {
	path   string
	stdout io.Writer
	now    func() time.Time
}

func parseApps(p process, args []string) (command, error) {
	if len(args) == 0 || args[0] != "check" {
		return nil, errors.New("apps: a subcommand is required: timbroadcast apps check")
	}
	s := p.settings("apps check")
	file := s.add("file", "TIM_APPS_FILE", "", "the apps file (YAML) to check")
	if err := s.parse(args[1:]); err != nil {
		return nil, err
	}
	path, err := file.required()
	if err != nil {
		return nil, err
	}
	return &appsCheckCmd{path: path, stdout: p.stdout, now: time.Now}, nil
}

// Run checks the file and prints what it found.
func (c *appsCheckCmd) Run(context.Context) error {
	f, err := loadAppsFile(c.path)
	var fe *appsFileError
	if err != nil && !errors.As(err, &fe) {
		return err
	}
	var problems []appsProblem
	if fe != nil {
		problems = fe.Problems
	}
	if f != nil {
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSDKAPPID\tENDPOINT\tRATE\tTOPICS\tUSERSIG")
		for i, a := range f.Apps {
			label := a.Name
			if label == "" {
				label = fmt.Sprintf("#%d", i+1)
			}
			where := a.Region
			if eps := a.endpoints(); len(eps) > 0 && eps[0] != "" {
				if where != "" {
					where += " "
				}
				where += eps[0]
			}
			sig, failed := c.sign(a)
			if failed {
				problems = append(problems, appsProblem{App: label, Line: a.line, Field: "secret_key_file", Msg: sig})
			}
			topics := strings.Join(a.Topics, ",")
			fmt.Fprintf(tw, "%s\t%d\t%s\t%g/s\t%s\t%s\n", label, a.SDKAppID, dash(where), a.rate(), dash(topics), sig)
		}
		_ = tw.Flush()
		def := f.DefaultApp
		if def == "" {
			def = "none (a record naming no app is dead-lettered unknown_app)"
		}
		fmt.Fprintf(c.stdout, "\n%d app(s) in %s; default app: %s\n", len(f.Apps), c.path, def)
	}
	if len(problems) == 0 {
		fmt.Fprintln(c.stdout, "no problem found")
		return nil
	}
	fmt.Fprintf(c.stdout, "\n%d problem(s):\n", len(problems))
	for _, p := range problems {
		fmt.Fprintf(c.stdout, "  %s\n", p.Error())
	}
	return fmt.Errorf("apps check: %d problem(s) in %s", len(problems), c.path)
}

// sign signs a UserSig for the app's admin with its key and verifies it.
// It says "ok", or why it did not sign; failed is a key that was read
// but does not sign (a missing key is a problem of its own already).
func (c *appsCheckCmd) sign(a appSpec) (string, bool) {
	if a.SecretKeyFile == "" || a.SDKAppID <= 0 || a.Admin == "" {
		return "not signed (see the problems)", false
	}
	key, err := readKeyFile(a.SecretKeyFile)
	if err != nil {
		return "not signed: the key file cannot be read", false
	}
	sig, err := tencentyun.GenUserSig(a.SDKAppID, key, a.Admin, 300)
	if err == nil {
		err = tencentyun.VerifyUserSig(uint64(a.SDKAppID), key, a.Admin, sig, c.now())
	}
	if err != nil {
		return "cannot sign a UserSig: " + err.Error(), true
	}
	return "ok", false
}
