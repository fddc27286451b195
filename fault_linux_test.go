// SPDX-License-Identifier: MIT

package tcpconn

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// userTimeout reads TCP_USER_TIMEOUT (ms) back from a link's socket.
func userTimeout(t testing.TB, conn net.Conn) int {
	t.Helper()
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		t.Fatalf("%T is not a *net.TCPConn", conn)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	if err := raw.Control(func(fd uintptr) {
		v, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return v
}
