package wire_test

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// publicFixtures is the project's public fixture folder (event examples
// and golden request bodies, linked from the README): design.md fixes it
// at the top of the repository, because producers and other
// implementations use it too.
var publicFixtures = filepath.Join("..", "..", "testdata")

// golden compares got with the golden file at path, or rewrites it with
// -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s changed: a wire format changed (see the package's Compatibility section)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}
