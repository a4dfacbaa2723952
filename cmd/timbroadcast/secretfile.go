package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// secretFile is a secret kept in a file that may change while the process
// runs: a Kubernetes Secret updated in place (the kubelet swaps a symlink),
// a compose secret replaced. Every get compares the file's modification
// time, size and identity with what was read last (a stat: cheap at any
// call rate) and reads it again when they differ. A new value is announced
// (onNew: the scrubber learns it) before anyone uses it.
type secretFile struct {
	path  string
	onNew func(value string)

	mu    sync.Mutex
	value string
	mod   time.Time
	size  int64
	file  os.FileInfo
}

// newSecretFile reads path once: a missing or empty file is an error at
// start.
func newSecretFile(path string, onNew func(string)) (*secretFile, error) {
	f := &secretFile{path: path, onNew: onNew}
	if _, err := f.get(); err != nil {
		return nil, err
	}
	return f, nil
}

// get returns the file's current value (trailing white space trimmed). A
// file that cannot be read now keeps the last value (a rotation in
// progress); nothing read yet is an error.
func (f *secretFile) get() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := os.Stat(f.path)
	if err == nil && f.file != nil && st.ModTime().Equal(f.mod) && st.Size() == f.size && os.SameFile(st, f.file) {
		return f.value, nil
	}
	var b []byte
	if err == nil {
		b, err = os.ReadFile(f.path)
	}
	v := strings.TrimSpace(string(b))
	if err == nil && v == "" {
		err = fmt.Errorf("%s is empty", f.path)
	}
	if err != nil {
		if f.value != "" {
			return f.value, nil
		}
		return "", err
	}
	if v != f.value && f.onNew != nil {
		f.onNew(v)
	}
	f.value, f.mod, f.size, f.file = v, st.ModTime(), st.Size(), st
	return v, nil
}
