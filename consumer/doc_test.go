package consumer_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDocMapsEveryFile: the package doc (doc.go) names every file of the
// package and no other, and the record's path through the files it walks
// stays the four it promises: a file added or removed is added to or
// removed from the map that readers follow.
func TestDocMapsEveryFile(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	named := regexp.MustCompile(`(?m)^//\t(\w+\.go) `).FindAllStringSubmatch(string(doc), -1)
	var listed []string
	for _, m := range named {
		listed = append(listed, m[1])
	}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		if n := e.Name(); strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go") && n != "doc.go" {
			files = append(files, n)
		}
	}
	slices.Sort(files)
	sorted := slices.Sorted(slices.Values(listed))
	if !slices.Equal(sorted, files) {
		t.Errorf("doc.go maps %v; the package's files are %v", sorted, files)
	}
	if path := listed[:min(4, len(listed))]; !slices.Equal(path, []string{"partition.go", "stream.go", "settle.go", "commit.go"}) {
		t.Errorf("doc.go's record path is %v, want partition.go, stream.go, settle.go, commit.go", path)
	}
}
