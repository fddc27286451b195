// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// readCounter counts the Reads that brought bytes.
type readCounter struct {
	io.Reader
	withBytes int
}

func (c *readCounter) Read(p []byte) (int, error) {
	n, err := c.Reader.Read(p)
	if n > 0 {
		c.withBytes++
	}
	return n, err
}

// zeroReader returns no bytes and no error, forever.
type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

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

// TestFrameReaderReadFullCountsProgress: every read of a ReadFull that
// brings bytes adds them to progress as they come, so a payload read with
// one ReadFull shows keepalive the peer alive while it arrives; a read cut
// short by a deadline adds nothing; and the errors are io.ReadFull's.
func TestFrameReaderReadFullCountsProgress(t *testing.T) {
	for _, tc := range []struct {
		name    string
		conn    io.Reader
		want    int   // bytes ReadFull returns, all counted
		wantErr error // nil, or what errors.Is must match
		reads   int   // reads that brought them (0: not checked)
	}{
		{"one read", &chunkReader{bytes.NewReader(pattern(1000, 1)), 1 << 20}, 1000, nil, 1},
		{"reads of 100 bytes", &chunkReader{bytes.NewReader(pattern(1000, 1)), 100}, 1000, nil, 10},
		{"the peer closes in the middle", &chunkReader{bytes.NewReader(pattern(250, 1)), 100}, 250, io.ErrUnexpectedEOF, 3},
		{"the peer closed before", bytes.NewReader(nil), 0, io.EOF, 0},
		{"a deadline", timeoutConn{}, 0, os.ErrDeadlineExceeded, 0},
		{"a reader that never makes progress", zeroReader{}, 0, io.ErrNoProgress, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			counter := &readCounter{Reader: tc.conn}
			fr := newFrameReader(counter, nil)
			var progress atomic.Uint64
			fr.progress = &progress
			n, err := fr.ReadFull(make([]byte, 1000))
			if n != tc.want || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("ReadFull = %d, %v; want %d, %v", n, err, tc.want, tc.wantErr)
			}
			if got := progress.Load(); got != uint64(tc.want) {
				t.Errorf("progress %d, want the %d bytes read", got, tc.want)
			}
			if tc.reads > 0 && counter.withBytes != tc.reads {
				t.Errorf("%d reads brought bytes, want %d", counter.withBytes, tc.reads)
			}
		})
	}
}

// TestFrameReaderReadFullCountsProgressOnTCP: where the socket is read
// directly (readv on Linux), progress counts each read as it comes too.
func TestFrameReaderReadFullCountsProgressOnTCP(t *testing.T) {
	w, r := tcpPair(t)
	fr := newFrameReader(r, r)
	var progress atomic.Uint64
	fr.progress = &progress
	want := pattern(300<<10, 9)
	if _, err := w.Write(want[:100<<10]); err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, len(want))
	// The rest is sent once the first bytes were counted, by the
	// ReadFull that then waits for it.
	countedFirst := make(chan bool, 1)
	go func() {
		deadline := time.Now().Add(5 * time.Second)
		for progress.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		countedFirst <- progress.Load() > 0
		w.Write(want[100<<10:])
	}()
	if n, err := fr.ReadFull(dst); n != len(dst) || err != nil || !bytes.Equal(dst, want) {
		t.Fatalf("ReadFull = %d, %v; want the %d bytes sent", n, err, len(want))
	}
	if !<-countedFirst {
		t.Fatal("the first bytes were not counted while ReadFull waited for the rest")
	}
	if got := progress.Load(); got < uint64(len(want)) {
		t.Fatalf("progress %d after a ReadFull of %d bytes", got, len(want))
	}
}
