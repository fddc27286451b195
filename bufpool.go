// SPDX-License-Identifier: MIT

package tcpconn

import (
	"math/bits"
	"sync"

	"github.com/valyala/bytebufferpool"
)

// Buffers for the read and write paths. bytebufferpool calibrates itself to
// the sizes in use and drops rare huge buffers instead of pinning them, which
// is why it is used rather than a plain sync.Pool of []byte.
//
// Ownership: a buffer obtained here belongs to exactly one holder (the read
// loop, then the queue of one logical connection, then Receive) and must not
// be touched after putPayload or a chunkList put.

// smallMessageLimit: payloads up to this size go into pooled buffers,
// which ReceiveAppend copies from (the buffer is reused), unless their
// receiver calls Receive: then into a new slice of their size, handed
// over (dest, payloadFor). Larger ones are handed to Receive's caller as
// they are (no copy; the pool replaces the buffer).
const (
	smallClassMax     = 13 // 8 KiB
	smallMessageLimit = 1 << smallClassMax
)

// payloadPools holds small payload buffers, one bytebufferpool.Pool per
// power-of-two size class (64 B to smallMessageLimit), each buffer's
// capacity exactly its class. One pool for all sizes calibrated itself to
// the usual size and then drops every buffer above it: after a run of
// 100-byte messages, each 1 KiB message is allocated anew on both sides
// until the pool recalibrates ~42,000 messages later (RTT1KB after RTT100B
// in one process: 7 KB allocated per round trip, 16.7 KB with buffers of
// capacity smallMessageLimit). A pool per class only sees its own size.
const smallClassMin = 6 // 64 B

// Each is allocated on its own: a Pool uses 64-bit atomics, and only the
// first word of an allocation is 64-bit aligned on 32-bit platforms (an
// array of Pools crashed the 386 tests).
var payloadPools [smallClassMax + 1]*bytebufferpool.Pool

func init() {
	for c := range payloadPools {
		payloadPools[c] = new(bytebufferpool.Pool)
	}
}

// smallClass is the size class of a small payload of n bytes.
func smallClass(n int) int { return max(smallClassMin, sizeClass(max(n, 1))) }

// Large payload buffers (above smallMessageLimit) live in per-size-class
// free lists that, unlike sync.Pool (which bytebufferpool uses), survive a
// garbage collection: a 200 KiB round trip through ReceiveAppend makes
// 6 allocations and 411 KB per op when GC keeps emptying a pool, 0 with
// these. A buffer is filed under the power of two at or above its capacity
// and taken for a message of that class if it is large enough. Bounded:
// largeClassDepth buffers per class up to largeClassMax, so at most about
// 2 * largeClassDepth << largeClassMax bytes are kept; larger buffers are
// left to the GC.
const (
	largeClassMin   = 14 // 16 KiB
	largeClassMax   = 22 // 4 MiB
	largeClassDepth = 4
)

var largeFree [largeClassMax + 1]*freeList[[]byte]

func init() {
	for c := largeClassMin; c <= largeClassMax; c++ {
		largeFree[c] = newFreeList[[]byte](largeClassDepth)
	}
}

// sizeClass is the exponent of the smallest power of two >= n.
func sizeClass(n int) int { return bits.Len(uint(n - 1)) }

// getPayload returns a buffer of n bytes. A small one comes from payloadPools
// with its wrapper (pooled); a large one from the free lists or, when none
// is large enough, is a new slice of at most maxUnbackedAlloc bytes that
// the reader grows as data arrives (pooled is nil: Receive hands such a
// slice to the caller, and a wrapper would be a second allocation).
func getPayload(n int) (data []byte, pooled *byteBuffer) {
	if n <= smallMessageLimit {
		c := smallClass(n)
		b := payloadPools[c].Get()
		if cap(b.B) < n {
			b.B = make([]byte, n, 1<<c)
		}
		b.B = b.B[:n]
		return b.B, b
	}
	if b, ok := takeLarge(n); ok {
		return b, nil
	}
	// Exact size: Receive hands large buffers to the caller, who should not
	// carry unused capacity.
	return make([]byte, min(n, maxUnbackedAlloc)), nil
}

// takeLarge returns a free large buffer of n bytes, if one is kept for n's
// class; one too small for n is let go rather than hoarded.
func takeLarge(n int) ([]byte, bool) {
	if c := sizeClass(n); c >= largeClassMin && c <= largeClassMax {
		if b, ok := largeFree[c].tryGet(); ok && cap(b) >= n {
			return b[:n], true
		}
	}
	return nil, false
}

// putPayload returns a payload buffer for reuse (pooled, or data when it is
// large); it must not be touched afterwards.
func putPayload(data []byte, pooled *byteBuffer) {
	if pooled != nil {
		if c := smallClass(cap(pooled.B)); c < len(payloadPools) {
			payloadPools[c].Put(pooled)
		}
		return
	}
	c := sizeClass(cap(data)) // served again for sizes near its own
	if c < largeClassMin || c > largeClassMax {
		return
	}
	largeFree[c].put(data[:0])
}

// freeList is a bounded free list that, unlike sync.Pool, survives garbage
// collections. Workloads that allocate a lot (Receive of large messages: a
// GC every few round trips) empty sync.Pools on every cycle and re-allocate
// what they held (RTT1MB: 3 allocations per side per round trip instead of
// the one slice Receive returns). A stack under a mutex, not a buffered
// channel: a round trip takes and returns a read and a gather buffer on
// each side, and a channel operation costs about three times an
// uncontended lock (1 KiB round trips about 2 % faster, PERFORMANCE.md); the
// last buffer returned, still in cache, is the next one taken.
type freeList[T any] struct {
	mu    sync.Mutex
	items []T // capacity: the bound
}

func newFreeList[T any](depth int) *freeList[T] {
	return &freeList[T]{items: make([]T, 0, depth)}
}

func (f *freeList[T]) tryGet() (v T, ok bool) {
	f.mu.Lock()
	if n := len(f.items) - 1; n >= 0 {
		v, ok = f.items[n], true
		var zero T
		f.items[n] = zero // do not pin what was handed out
		f.items = f.items[:n]
	}
	f.mu.Unlock()
	return v, ok
}

// put keeps v if there is room; v must not be touched afterwards.
func (f *freeList[T]) put(v T) {
	f.mu.Lock()
	if len(f.items) < cap(f.items) {
		f.items = append(f.items, v)
	}
	f.mu.Unlock()
}

// Gather buffers coalesce small frames for one writev, and whole batches
// into few Writes where writev is not available. They all have capacity
// gatherChunk, so appending never reallocates. Not a bytebufferpool.Pool:
// it calibrates to the usual (small) size and drops larger buffers, so a
// stream of sends would regrow a 64 KiB buffer by doubling on every flush
// (SendOnly1KB: 4.4 KB allocated per message after a round-trip workload;
// PERFORMANCE.md, "Design choices and their measured cost"). Bounded:
// gatherFreeDepth buffers are kept.
const gatherFreeDepth = 16

// chunkList is a free list of buffers of capacity gatherChunk.
type chunkList struct{ free *freeList[*byteBuffer] }

// get returns an empty buffer of capacity gatherChunk.
func (f chunkList) get() *byteBuffer {
	if b, ok := f.free.tryGet(); ok {
		return b
	}
	return &byteBuffer{B: make([]byte, 0, gatherChunk)}
}

// put keeps b for reuse; b must not be touched afterwards.
func (f chunkList) put(b *byteBuffer) {
	if cap(b.B) != gatherChunk {
		return // grown past its class: let it go
	}
	b.B = b.B[:0]
	f.free.put(b)
}

// Read buffers (frameReader) are the same 64 KiB class in a list of their
// own: a link takes one only while bytes wait to be parsed, and shared with
// the gather buffers, which a streaming sender holds by the dozen, the
// list would run dry (RecvOnly1KB: 124 B allocated per message).
var (
	gatherFree = chunkList{newFreeList[*byteBuffer](gatherFreeDepth)}
	readFree   = chunkList{newFreeList[*byteBuffer](gatherFreeDepth)}
)

type byteBuffer = bytebufferpool.ByteBuffer
