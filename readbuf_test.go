// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
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

// tcpPair returns both ends of a loopback TCP connection, closed at cleanup.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln := listenTCP(t)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn), acceptOne(t, ln).(*net.TCPConn)
}

// TestFrameReaderReadFull: a payload read past the buffer (on Linux with
// readv) comes out whole and leaves what follows it buffered, at most
// prefetchSize of it when the payload was read from the socket; the frame
// after it parses as usual.
func TestFrameReaderReadFull(t *testing.T) {
	for _, tc := range []struct {
		name           string
		payload, after int
	}{
		{"a payload inside the first read", 100, 50},
		{"a 64 KiB payload", 64 << 10, 3000},
		{"a payload of several reads", 300 << 10, 20},
		{"nothing after it yet", 200 << 10, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, r := tcpPair(t)
			want := pattern(8+tc.payload+tc.after, 3)
			go w.Write(want)
			fr := newFrameReader(r, r)
			if _, err := fr.Peek(8); err != nil {
				t.Fatal(err)
			}
			fr.Discard(8)
			dst := make([]byte, tc.payload)
			if n, err := fr.ReadFull(dst); n != len(dst) || err != nil || !bytes.Equal(dst, want[8:8+tc.payload]) {
				t.Fatalf("ReadFull = %d, %v; want %d bytes of the payload", n, err, len(dst))
			}
			if canReadv && tc.payload > readBufferSize && fr.Buffered() > prefetchSize {
				t.Errorf("%d bytes buffered past a payload read from the socket, want at most %d", fr.Buffered(), prefetchSize)
			}
			if tc.after > 0 {
				b, err := fr.Peek(tc.after)
				if err != nil || !bytes.Equal(b, want[8+tc.payload:]) {
					t.Fatalf("Peek(%d) after the payload = %d bytes, %v", tc.after, len(b), err)
				}
				fr.Discard(tc.after)
			}
		})
	}
}

// TestFrameReaderReadFullCutShort: a deadline in the middle of a payload
// returns what arrived and a timeout, and a second ReadFull goes on from
// there; a peer that closes in the middle is io.ErrUnexpectedEOF.
func TestFrameReaderReadFullCutShort(t *testing.T) {
	w, r := tcpPair(t)
	want := pattern(256<<10, 5)
	fr := newFrameReader(r, r)
	dst := make([]byte, len(want))
	if _, err := w.Write(want[:100<<10]); err != nil {
		t.Fatal(err)
	}
	var got int
	for got < 100<<10 { // bytes may arrive in pieces: read until the timeout
		r.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := fr.ReadFull(dst[got:])
		got += n
		if err == nil || !isTimeout(err) {
			t.Fatalf("ReadFull before the rest was sent = %d, %v; want a timeout", n, err)
		}
	}
	if got != 100<<10 {
		t.Fatalf("read %d bytes, %d were sent", got, 100<<10)
	}
	r.SetReadDeadline(time.Time{})
	if _, err := w.Write(want[100<<10 : 200<<10]); err != nil {
		t.Fatal(err)
	}
	w.Close()
	n, err := fr.ReadFull(dst[got:])
	if got+n != 200<<10 || err != io.ErrUnexpectedEOF {
		t.Fatalf("ReadFull after a close mid-payload = %d (%d in all), %v; want %d in all, io.ErrUnexpectedEOF", n, got+n, err, 200<<10)
	}
	if !bytes.Equal(dst[:got+n], want[:got+n]) {
		t.Fatal("the bytes read differ from the bytes sent")
	}
}
