// SPDX-License-Identifier: MIT

//go:build amd64 && !purego

package tcpconn

import "encoding/binary"

// Thin on purpose. On amd64 the compiler turns encoding/binary's big-endian
// accessors into one MOVBE/BSWAP load or store, and it does the same for the
// portable shifts in frame_generic.go: BenchmarkHeader shows no
// difference beyond noise (PERFORMANCE.md), so there is no hand-written fast
// path to keep. The file stays so the purego build tag keeps testing the
// portable accessors on amd64.

func loadU32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

func storeU32(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }
