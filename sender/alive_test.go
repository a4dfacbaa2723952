package sender

import (
	"net"
	"testing"
	"time"
)

// TestAlive: an idle connection is alive while its peer keeps it open and
// silent, and not once the peer closed it or sent bytes nobody asked for.
func TestAlive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pair := func() (client, server net.Conn) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(); _ = s.Close() })
		return c, s
	}
	// eventually waits for what the peer did to reach this end.
	eventually := func(c net.Conn, want bool) {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Second); alive(c) != want; {
			if time.Now().After(deadline) {
				t.Fatalf("alive = %v, want %v", !want, want)
			}
			time.Sleep(time.Millisecond)
		}
	}

	c, s := pair()
	if !alive(c) {
		t.Fatal("an open, silent connection is not alive")
	}
	_ = s.Close()
	eventually(c, false)

	c, s = pair()
	if _, err := s.Write([]byte("HTTP/1.1 408 Request Timeout\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	eventually(c, false)
	if !alive(struct{ net.Conn }{c}) {
		t.Fatal("a connection that cannot be checked counts as alive")
	}
}
