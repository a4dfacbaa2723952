//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package sender

import "syscall"

// peekIdle says the socket fd has nothing to read and is not closed: a
// peek that does not wait finds no byte (EAGAIN), not an end (0 bytes)
// nor bytes nobody asked for.
func peekIdle(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
}
