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

// TestFrameReaderNoWait: in noWait mode a read that finds the socket empty
// returns errWouldBlock at once and loses nothing: Peek consumes nothing,
// and ReadFull returns what it filled, then goes on from there.
func TestFrameReaderNoWait(t *testing.T) {
	w, r := tcpPair(t)
	fr := newFrameReader(r, r)
	if !fr.canNoWait() {
		t.Fatal("reads on a TCP socket on Linux cannot be made not to wait")
	}
	fr.noWait = true
	r.SetReadDeadline(time.Now().Add(2 * time.Second)) // a read that waited would end in a timeout
	if _, err := fr.Peek(8); err != errWouldBlock {
		t.Fatalf("Peek on an empty socket = %v, want errWouldBlock", err)
	}
	const first, size = 40 << 10, 100 << 10
	want := pattern(8+size, 3)
	if _, err := w.Write(want[:8+first]); err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, size)
	got := 0
	// read returns whether ReadFull filled dst; until then it must say
	// errWouldBlock, having taken what had arrived.
	read := func() bool {
		n, err := fr.ReadFull(dst[got:])
		got += n
		if err != nil && err != errWouldBlock {
			t.Fatalf("ReadFull = %d, %v; want errWouldBlock until the payload is in", n, err)
		}
		return err == nil
	}
	if !pollFor(testTimeout, func() bool { _, err := fr.Peek(8); return err == nil }) {
		t.Fatal("the header never arrived")
	}
	fr.Discard(8)
	if !pollFor(testTimeout, func() bool { read(); return got == first }) {
		t.Fatalf("read %d bytes of the %d sent", got, first)
	}
	if _, err := w.Write(want[8+first:]); err != nil {
		t.Fatal(err)
	}
	if !pollFor(testTimeout, read) {
		t.Fatalf("read %d bytes of the %d-byte payload", got, size)
	}
	if !bytes.Equal(dst, want[8:]) {
		t.Fatal("the bytes read differ from the bytes sent")
	}
}
