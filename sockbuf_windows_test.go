// SPDX-License-Identifier: MIT

package tcpconn

import "syscall"

// setRcvBuf sets SO_RCVBUF on a socket before it connects (from a Dialer's
// Control); on Windows the fd is a syscall.Handle.
func setRcvBuf(fd uintptr, n int) error {
	return syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
}
