// SPDX-License-Identifier: MIT

//go:build !unix && !windows

package tcpconn

// setRcvBuf: no socket option API here (plan9, js, wasip1); the socket
// keeps its default receive buffer.
func setRcvBuf(fd uintptr, n int) error { return nil }
