// SPDX-License-Identifier: MIT

//go:build unix

package tcpconn

import "syscall"

// setRcvBuf sets SO_RCVBUF on a socket before it connects (from a Dialer's
// Control); the fd type is the per-OS part.
func setRcvBuf(fd uintptr, n int) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
}
