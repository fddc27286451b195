// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"testing"
	"time"
)

// TestReadFullPrefetch: with everything already in the socket, a large
// payload read with readv leaves at most prefetchSize bytes after it
// buffered, and so does the next read that fills the buffer (the next
// payload then goes to its message directly); a small payload that
// straddles reads leaves a whole buffer's worth (small frames behind it
// keep coming a buffer at a time: with 1 KiB prefetches a stream of 1 KiB
// messages cost a system call each).
func TestReadFullPrefetch(t *testing.T) {
	const after = 20 << 10 // bytes in the socket behind the payload
	for _, tc := range []struct {
		name      string
		lead      int   // bytes consumed before the payload's 8-byte header
		payload   int   // its size
		wantFills []int // bytes buffered after ReadFull, then after each refill
	}{
		{"large payload", 0, 256 << 10, []int{prefetchSize, prefetchSize, after - 2*prefetchSize}},
		{"small payload straddling reads", readBufferSize - 8 - 1000, 2000, []int{after}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, r := tcpPair(t)
			if err := r.SetReadBuffer(1 << 20); err != nil { // room for all of it
				t.Fatal(err)
			}
			want := pattern(tc.lead+8+tc.payload+after, 9)
			go w.Write(want)
			if !pollFor(testTimeout, func() bool { n, _ := unreadBytes(r); return n == len(want) }) {
				t.Fatal("the bytes sent never all reached the socket")
			}
			r.SetReadDeadline(time.Now().Add(testTimeout))
			fr := newFrameReader(r, r)
			for _, n := range []int{tc.lead, 8} {
				if _, err := fr.Peek(n); err != nil {
					t.Fatal(err)
				}
				fr.Discard(n)
			}
			payload := want[tc.lead+8:][:tc.payload]
			dst := make([]byte, tc.payload)
			if n, err := fr.ReadFull(dst); n != len(dst) || err != nil || !bytes.Equal(dst, payload) {
				t.Fatalf("ReadFull = %d, %v; want the %d-byte payload", n, err, len(dst))
			}
			for i, wantBuffered := range tc.wantFills {
				if i > 0 {
					fr.Discard(fr.Buffered())
					if _, err := fr.Peek(1); err != nil {
						t.Fatal(err)
					}
				}
				if fr.Buffered() != wantBuffered {
					t.Errorf("read %d: %d bytes buffered, want %d", i, fr.Buffered(), wantBuffered)
				}
			}
		})
	}
}
