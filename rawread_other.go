// SPDX-License-Identifier: MIT

//go:build !unix

package tcpconn

import (
	"net"
	"syscall"
)

// rawConnOf: where a socket cannot be read through its descriptor here
// (Windows, Wasm), an idle link waits in Read with a small buffer instead
// (frameReader).
func rawConnOf(*net.TCPConn) syscall.RawConn { return nil }

func sysRead(uintptr, []byte) (int, error, bool) { panic("tcpconn: sysRead without a raw socket") }
