package sender

import (
	"testing"
	"time"
)

// A signer with a key source asks it at most every keyRecheck while its
// signature is good, picks a rotated key up within that time, and asks it
// at once after the server refused the signature.
func TestSignerKeyRecheck(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	key, asked := "key-one", 0
	s := newSigner(1400000000, "admin", key, func() (string, error) { asked++; return key, nil }, time.Hour)
	s.now = func() time.Time { return now }
	sig1, gen1, err := s.get()
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if _, _, err := s.get(); err != nil {
			t.Fatal(err)
		}
	}
	if asked != 1 {
		t.Fatalf("the key asked %d times for 101 signatures within %v, want once", asked, keyRecheck)
	}
	key = "key-two" // rotated
	now = now.Add(keyRecheck / 2)
	if sig, _, _ := s.get(); sig != sig1 || asked != 1 {
		t.Fatalf("asked %d times before the recheck is due; signature changed: %v", asked, sig != sig1)
	}
	now = now.Add(keyRecheck / 2)
	sig2, gen2, _ := s.get()
	if asked != 2 || sig2 == sig1 || gen2 == gen1 || s.key != "key-two" {
		t.Fatalf("after %v: asked %d times, key %q, new signature %v; want the rotated key signing", keyRecheck, asked, s.key, sig2 != sig1)
	}
	// The server refuses the signature: the key is asked again at once.
	key = "key-three"
	s.invalidate(gen2)
	if _, _, _ = s.get(); asked != 3 || s.key != "key-three" {
		t.Fatalf("after a refusal: asked %d times, key %q; want the key asked again", asked, s.key)
	}
}
