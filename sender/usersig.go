package sender

import (
	"fmt"
	"sync"
	"time"

	"github.com/tencentyun/tls-sig-api-v2-golang/tencentyun"
)

// signer generates the admin's UserSig and caches it until 80% of its
// lifetime has passed, or until invalidate is called after the server
// refused it.
type signer struct {
	appID    int
	admin    string
	key      string
	keyFn    func() (string, error) // nil: key never changes
	lifetime time.Duration
	now      func() time.Time

	mu      sync.Mutex
	keyAt   time.Time // when keyFn was last asked
	oldKey  string    // the key before the last rotation
	sig     string
	prev    string // the signature last dropped by invalidate
	renewAt time.Time
	gen     uint64 // incremented on every renewal
}

// keyRecheck is how often a signer asks keyFn for the key while its
// signature is good (a key file's stat, on every call of an app before):
// a rotation takes effect within it, or at once when the server refuses
// the signature (invalidate).
const keyRecheck = 2 * time.Second

func newSigner(appID int, admin, key string, keyFn func() (string, error), lifetime time.Duration) *signer {
	return &signer{appID: appID, admin: admin, key: key, keyFn: keyFn, lifetime: lifetime, now: time.Now}
}

// keys are the keys the signer knows, for redaction: the current one and
// the one before a rotation.
func (s *signer) keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return []string{s.key, s.oldKey}
}

// get returns a valid signature and its generation number.
func (s *signer) get() (string, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.keyFn != nil && (s.sig == "" || !now.Before(s.keyAt.Add(keyRecheck))) {
		s.keyAt = now
		key, err := s.keyFn()
		if err != nil {
			return "", 0, fmt.Errorf("read the secret key: %w", err)
		}
		if key != s.key {
			// Rotated: the next signature is made with the new key.
			s.oldKey, s.key, s.sig, s.prev = s.key, key, "", ""
		}
	}
	if s.sig == "" || !now.Before(s.renewAt) {
		secs := int(s.lifetime / time.Second)
		if secs < 1 {
			secs = 1
		}
		sig, err := tencentyun.GenUserSig(s.appID, s.key, s.admin, secs)
		if err == nil && sig == s.prev {
			// Signatures carry whole seconds: one made in the same second as
			// the refused one is identical. A different expiry makes it new.
			sig, err = tencentyun.GenUserSig(s.appID, s.key, s.admin, secs+1)
		}
		if err != nil {
			// The library's errors never include the key.
			return "", 0, fmt.Errorf("generate UserSig: %w", err)
		}
		s.sig = sig
		s.renewAt = now.Add(time.Duration(float64(secs) * 0.8 * float64(time.Second)))
		s.gen++
	}
	return s.sig, s.gen, nil
}

// invalidate drops the cached signature if it is still generation gen, so
// the next get makes a new one.
func (s *signer) invalidate(gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen == gen && s.sig != "" {
		s.prev, s.sig = s.sig, ""
	}
}
