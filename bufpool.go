// SPDX-License-Identifier: MIT

package tcpconn

import "github.com/valyala/bytebufferpool"

// Buffers for the read and write paths. bytebufferpool calibrates itself to
// the sizes in use and drops rare huge buffers instead of pinning them, which
// is why it is used rather than a plain sync.Pool of []byte.
//
// Ownership: a buffer obtained here belongs to exactly one holder (the read
// loop, then the queue of one logical connection, then Receive) and must not
// be touched after putBuffer.

// smallMessageLimit: payloads up to this size are copied out of their
// pooled buffer by Receive (the buffer is reused); larger ones are handed
// to the caller as they are (no copy; the pool replaces the buffer).
const smallMessageLimit = 8 << 10

var payloadPool, gatherPool bytebufferpool.Pool

// getPayload returns a buffer of n bytes: a pooled one when it is large
// enough, else a new one of at most maxUnbackedAlloc bytes that the reader
// grows as data arrives.
func getPayload(n int) *bytebufferpool.ByteBuffer {
	b := payloadPool.Get()
	if cap(b.B) < n {
		b.B = make([]byte, min(n, maxUnbackedAlloc))
		return b
	}
	b.B = b.B[:n]
	return b
}

func putPayload(b *bytebufferpool.ByteBuffer) { payloadPool.Put(b) }

// getGather returns an empty buffer used to coalesce a batch of frames into
// one Write on connections that are not *net.TCPConn (TLS, proxies), where
// net.Buffers would fall back to one Write per slice.
func getGather() *bytebufferpool.ByteBuffer { return gatherPool.Get() }

func putGather(b *bytebufferpool.ByteBuffer) { gatherPool.Put(b) }

type byteBuffer = bytebufferpool.ByteBuffer
