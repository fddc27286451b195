// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"testing"
	"time"
)

// TestReadFullPrefetch: with everything already in the socket, a payload
// read with readv leaves at most prefetchSize bytes after it buffered when
// much of it was still to read (the next payload then goes to its message
// directly), and a whole buffer's worth when little was (small frames
// behind it keep coming a buffer at a time: with 1 KiB prefetches a stream
// of 1 KiB messages cost a system call each).
func TestReadFullPrefetch(t *testing.T) {
	for _, tc := range []struct {
		name       string
		payload    int // after an 8-byte header
		wantBuffer int // bytes buffered after ReadFull
	}{
		{"much left to read", 256 << 10, prefetchSize},
		{"little left to read", readBufferSize + 1000, 20 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, r := tcpPair(t)
			if err := r.SetReadBuffer(1 << 20); err != nil { // room for all of it
				t.Fatal(err)
			}
			const after = 20 << 10
			want := pattern(8+tc.payload+after, 9)
			go w.Write(want)
			if !pollFor(testTimeout, func() bool { n, _ := unreadBytes(r); return n == len(want) }) {
				t.Fatal("the bytes sent never all reached the socket")
			}
			fr := newFrameReader(r, r)
			if _, err := fr.Peek(8); err != nil {
				t.Fatal(err)
			}
			fr.Discard(8)
			dst := make([]byte, tc.payload)
			r.SetReadDeadline(time.Now().Add(testTimeout))
			if n, err := fr.ReadFull(dst); n != len(dst) || err != nil || !bytes.Equal(dst, want[8:8+tc.payload]) {
				t.Fatalf("ReadFull = %d, %v; want the %d-byte payload", n, err, len(dst))
			}
			if fr.Buffered() != tc.wantBuffer {
				t.Errorf("%d bytes buffered after the payload, want %d", fr.Buffered(), tc.wantBuffer)
			}
		})
	}
}
