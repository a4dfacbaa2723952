package main_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// previousRelease is the commit of the release before this one (0.12.5 in
// CHANGELOG.md): the release test runs it and this build in one group.
const previousRelease = "3c03258"

// previousBinary builds the previous release from the repository's own
// history (git archive of previousRelease, go build), or skips saying why
// it cannot: no git, or a history without that commit (a shallow clone).
func previousBinary(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("the previous release is built from the repository's history, and git is not installed")
	}
	if out, err := exec.Command("git", "-C", root, "cat-file", "-e", previousRelease+"^{commit}").CombinedOutput(); err != nil {
		t.Skipf("the repository's history does not hold the previous release %s (a shallow clone?): %s", previousRelease,
			strings.TrimSpace(string(out)))
	}
	archive, err := exec.Command("git", "-C", root, "archive", "--format=tar", previousRelease).Output()
	if err != nil {
		t.Fatalf("git archive %s: %v", previousRelease, err)
	}
	dir := t.TempDir()
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(path, 0o755)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(path, b, 0o644)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "timbroadcast-"+previousRelease)
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/timbroadcast")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the previous release %s: %v\n%s", previousRelease, err, out)
	}
	return bin
}

// TestRollingUpgrade runs the previous release and this one in one group,
// under a backlog at 5 calls/s against a limiter that refuses any two
// calls closer than 200 ms, and replaces the replicas one at a time: two
// of the previous release become two of this one (an upgrade), and back
// (a rollback). Nothing is lost or shown twice, order holds, the calls
// keep to the rate with hardly any 10023, and the backlog keeps moving
// through the restarts.
func TestRollingUpgrade(t *testing.T) {
	needBinary(t)
	prev := previousBinary(t)
	for _, tc := range []struct{ name, from, to string }{
		{"upgrade", prev, binary},
		{"rollback", binary, prev},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const events, rate = 60, 5.0
			ce := replicaEnvWith(t, 4, events, sendertest.Options{Rate: rate, Limiter: sendertest.LimiterSpacing}, 12,
				map[string]string{"TIM_RATE": fmt.Sprint(rate)})
			start := time.Now()
			replicas := []*worker{startWorkerOf(t, tc.from, ce.env), startWorkerOf(t, tc.from, ce.env)}
			for i := range replicas {
				// One replica at a time: once a third more of the backlog
				// is delivered, it is stopped (drained) and replaced.
				waitFor(t, 60*time.Second, "the backlog moving", func() bool {
					return ce.emu.Stats().Delivered >= (i+1)*events/3
				})
				if err := replicas[i].cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				if err := <-replicas[i].done; err != nil {
					t.Errorf("replica %d (%s) exit after SIGTERM: %v\n%s", i, tc.from, err, replicas[i].logs.String())
				}
				replicas[i] = startWorkerOf(t, tc.to, ce.env)
			}
			ce.waitCommitted(t, 90*time.Second)
			span := time.Since(start)
			for _, w := range replicas {
				w.stop(t)
			}
			ce.check(t)
			st := ce.emu.Stats()
			accepted := float64(st.ByCode[0]) / span.Seconds()
			t.Logf("%s: %d events in %v (%.2f accepted/s of %g), %d calls, %d answered 10023",
				tc.name, events, span.Round(time.Millisecond), accepted, rate, st.Calls, st.ByCode[10023])
			if st.ByCode[10023] > st.Calls/10 {
				t.Errorf("%d of %d calls answered 10023, want at most a tenth (none on a quiet host)", st.ByCode[10023], st.Calls)
			}
			if accepted < rate/3 {
				t.Errorf("%.2f calls/s over the upgrade, want the backlog to keep moving (at least a third of %g)", accepted, rate)
			}
		})
	}
}
