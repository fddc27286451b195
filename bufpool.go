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
// be touched after putPayload or putGather.

// smallMessageLimit: payloads up to this size are copied out of their
// pooled buffer by Receive (the buffer is reused); larger ones are handed
// to the caller as they are (no copy; the pool replaces the buffer).
const smallMessageLimit = 8 << 10

var payloadPool bytebufferpool.Pool

// Large payload buffers (above smallMessageLimit) live in per-size-class
// free lists that, unlike sync.Pool (which bytebufferpool uses), survive a
// garbage collection: a 200 KiB round trip through ReceiveAppend measured
// 6 allocations and 411 KB per op when GC kept emptying the pool, 0 with
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

var largeFree [largeClassMax + 1]chan *bytebufferpool.ByteBuffer

func init() {
	for c := largeClassMin; c <= largeClassMax; c++ {
		largeFree[c] = make(chan *bytebufferpool.ByteBuffer, largeClassDepth)
	}
}

// sizeClass is the smallest power of two >= n.
func sizeClass(n int) int { return bits.Len(uint(n - 1)) }

// getPayload returns a buffer of n bytes: a pooled one when one is large
// enough, else a new one of at most maxUnbackedAlloc bytes that the reader
// grows as data arrives.
func getPayload(n int) *bytebufferpool.ByteBuffer {
	if n <= smallMessageLimit {
		b := payloadPool.Get()
		if cap(b.B) < n {
			b.B = make([]byte, n, smallMessageLimit)
		}
		b.B = b.B[:n]
		return b
	}
	if c := sizeClass(n); c <= largeClassMax {
		select {
		case b := <-largeFree[c]:
			if cap(b.B) >= n {
				b.B = b.B[:n]
				return b
			}
			// Too small for this one: let it go rather than hoard it.
		default:
		}
	}
	// Exact size: Receive hands large buffers to the caller, who should not
	// carry unused capacity.
	return &bytebufferpool.ByteBuffer{B: make([]byte, min(n, maxUnbackedAlloc))}
}

// putPayload returns b for reuse; b must not be touched afterwards.
func putPayload(b *bytebufferpool.ByteBuffer) {
	if cap(b.B) <= smallMessageLimit {
		payloadPool.Put(b)
		return
	}
	c := sizeClass(cap(b.B)) // served again for sizes near its own
	if c < largeClassMin || c > largeClassMax {
		return
	}
	select {
	case largeFree[c] <- b:
	default:
	}
}

// Gather buffers coalesce small frames for one writev, and whole batches
// into few Writes where writev is not available. They all have capacity
// gatherChunk, so appending never reallocates. A bytebufferpool.Pool was
// used here first: it calibrates to the usual (small) size and drops larger
// buffers, so a stream of sends regrew a 64 KiB buffer by doubling on every
// flush (SendOnly1KB: 4.4 KB allocated per message after a round-trip
// workload, PERFORMANCE.md).
var gatherPool = sync.Pool{New: func() any { return &byteBuffer{B: make([]byte, 0, gatherChunk)} }}

// getGather returns an empty buffer of capacity gatherChunk.
func getGather() *byteBuffer { return gatherPool.Get().(*byteBuffer) }

// putGather returns b for reuse; b must not be touched afterwards.
func putGather(b *byteBuffer) {
	if cap(b.B) != gatherChunk {
		return // grown past its class: let it go
	}
	b.B = b.B[:0]
	gatherPool.Put(b)
}

type byteBuffer = bytebufferpool.ByteBuffer
