// SPDX-License-Identifier: MIT

//go:build unix

package tcpconn

import (
	"io"
	"net"
	"os"
	"syscall"
)

// rawConnOf lets an idle link wait for a plain TCP socket to be readable
// without holding a read buffer (frameReader).
func rawConnOf(c *net.TCPConn) syscall.RawConn {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// sysRead reads the non-blocking socket fd into p; wait reports that there
// is nothing to read yet.
func sysRead(fd uintptr, p []byte) (n int, err error, wait bool) {
	for {
		n, err = syscall.Read(int(fd), p)
		if err != syscall.EINTR {
			return readOutcome("read", n, err)
		}
	}
}

// readOutcome turns a non-blocking read's result into sysRead's: EAGAIN is
// wait, a read of 0 bytes is the end of the stream.
func readOutcome(op string, n int, err error) (int, error, bool) {
	switch {
	case err == syscall.EAGAIN:
		return 0, nil, true
	case err != nil:
		return 0, os.NewSyscallError(op, err), false
	case n == 0:
		return 0, io.EOF, false
	}
	return n, nil, false
}
