// SPDX-License-Identifier: MIT

//go:build !linux

package tcpconn

// canReadv: elsewhere frameReader.ReadFull reads a payload with
// io.ReadFull and the next header with a read of its own (x/sys has no
// readv for every Unix, and Windows has no raw socket here).
const canReadv = false

func sysReadv(uintptr, []byte, []byte) (int, error, bool) { panic("tcpconn: sysReadv without readv") }
