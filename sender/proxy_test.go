package sender

import "testing"

// TestProxied: an endpoint a proxy of the environment applies to takes
// net/http's transport (which tunnels); loopback and NO_PROXY hosts do
// not.
func TestProxied(t *testing.T) {
	const api = "https://adminapisgp.im.qcloud.com"
	t.Setenv("HTTPS_PROXY", "")
	t.Setenv("HTTP_PROXY", "")
	t.Setenv("NO_PROXY", "")
	if proxied([]string{api}) {
		t.Fatal("proxied without a proxy set")
	}
	t.Setenv("HTTPS_PROXY", "http://proxy.internal:3128")
	if !proxied([]string{api}) {
		t.Fatal("HTTPS_PROXY set: want the endpoint proxied")
	}
	if proxied([]string{"http://127.0.0.1:8080"}) {
		t.Fatal("a loopback endpoint is never proxied")
	}
	shared := NewTransport()
	c, err := New(Config{AppID: 1, Admin: "a", SecretKey: "k", Endpoints: []string{api}, Transport: shared})
	if err != nil {
		t.Fatal(err)
	}
	if c.pool != nil || c.http == nil {
		t.Fatal("a proxied endpoint must go through net/http's transport")
	}
	other, err := New(Config{AppID: 2, Admin: "a", SecretKey: "k", Endpoints: []string{api}, Transport: shared})
	if err != nil {
		t.Fatal(err)
	}
	if other.http.Transport != c.http.Transport {
		t.Fatal("two clients of one Transport must share net/http's transport through a proxy")
	}
	t.Setenv("NO_PROXY", ".qcloud.com")
	if proxied([]string{api}) {
		t.Fatal("NO_PROXY names the host: want it direct")
	}
	if c, err = New(Config{AppID: 1, Admin: "a", SecretKey: "k", Endpoints: []string{api}}); err != nil || c.pool == nil {
		t.Fatalf("a direct endpoint must use the pool (%v)", err)
	}
}
