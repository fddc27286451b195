// SPDX-License-Identifier: MIT

//go:build !linux

package tcpconn

import (
	"net"
	"testing"
)

// userTimeout: TCP_USER_TIMEOUT is Linux-only (sockopt_other.go does not
// set it), so there is nothing to read back; the calling test skips.
func userTimeout(t testing.TB, _ net.Conn) int {
	t.Helper()
	t.Skip("TCP_USER_TIMEOUT is Linux-only")
	return 0
}
