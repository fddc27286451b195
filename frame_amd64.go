// SPDX-License-Identifier: MIT

//go:build amd64 && !purego

package tcpconn

import "encoding/binary"

// On amd64 the compiler turns encoding/binary's big-endian accessors into a
// single MOVBE/BSWAP, so the "fast path" is the standard library itself;
// BenchmarkHeader in frame_test.go shows it beating the portable byte-shift
// version in frame_generic.go. Nothing hand-written in assembly was faster.

func loadU32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

func storeU32(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }
