// SPDX-License-Identifier: MIT

//go:build !amd64 || purego

package tcpconn

// Portable big-endian accessors, used off amd64 and with -tags purego so the
// portable path is tested on amd64 too.

func loadU32(b []byte) uint32 {
	_ = b[3]
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func storeU32(b []byte, v uint32) {
	_ = b[3]
	b[0] = byte(v >> 24)
	b[1] = byte(v >> 16)
	b[2] = byte(v >> 8)
	b[3] = byte(v)
}
