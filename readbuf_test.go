// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"io"
	"testing"
)

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// TestFrameReaderWithoutRawSocket: over a reader that is not a TCP socket
// (TLS, net.Pipe), frames of any size and any read pattern come out whole,
// an idle reader holds only its small buffer, and a pooled one is given
// back once everything buffered is consumed.
func TestFrameReaderWithoutRawSocket(t *testing.T) {
	for _, tc := range []struct {
		name  string
		chunk int // bytes per Read
		peeks []int
	}{
		{"small frames, whole reads", 1 << 20, []int{5, 100, 1}},
		{"a header past the small buffer", 1 << 20, []int{smallReadSize + 300}},
		{"byte by byte", 1, []int{3, 260, 7}},
		{"reads of the small buffer's size", smallReadSize, []int{smallReadSize - 1, 2, smallReadSize + 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			total := 0
			for _, n := range tc.peeks {
				total += n
			}
			want := pattern(total, 7)
			fr := newFrameReader(&chunkReader{bytes.NewReader(want), tc.chunk}, nil)
			off := 0
			for _, n := range tc.peeks {
				b, err := fr.Peek(n)
				if err != nil || !bytes.Equal(b, want[off:off+n]) {
					t.Fatalf("Peek(%d) at %d = %d bytes, %v; want the next %d bytes", n, off, len(b), err, n)
				}
				fr.Discard(n)
				off += n
			}
			if fr.Buffered() != 0 {
				t.Fatalf("%d bytes left buffered", fr.Buffered())
			}
			if _, err := fr.Peek(1); err != io.EOF {
				t.Fatalf("Peek past the end: %v, want EOF", err)
			}
			if fr.pooled != nil {
				t.Fatal("an idle reader still holds a pooled buffer")
			}
		})
	}
}
