// SPDX-License-Identifier: MIT

package tcpconn

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
)

// frameReader is the link's read buffer: what bufio.Reader would be, except
// that it holds a pooled buffer only while bytes are buffered. An idle link
// waits for its peer without one: on a plain TCP socket (on Unix) the
// buffer is taken from the pool once the socket is readable and returned
// if the read finds nothing (rawread_unix.go); elsewhere (TLS, net.Pipe,
// other net.Conns) an idle read goes into a small buffer of the link's own
// and moves to a pooled one only when a frame needs more. A 64 KiB buffer
// per idle socket would be most of what an idle link costs.
//
// It belongs to the holder of the read token (link.token.mu). Peek never
// consumes: a read interrupted by a deadline loses nothing.
type frameReader struct {
	conn   io.Reader
	buf    []byte      // nil while idle; small or pooled.B
	pooled *byteBuffer // the pool's buffer behind buf, if it is one
	small  []byte      // idle reads without raw; nil with raw
	r, w   int         // buf[r:w] is buffered

	// The socket read directly once readable (rawread_unix.go); nil
	// elsewhere. rawFn is fr.readRaw bound once, so a read allocates
	// nothing; rawN and rawErr are its results.
	raw    syscall.RawConn
	rawFn  func(fd uintptr) bool
	rawN   int
	rawErr error

	// ReadFull's readv (Linux): readvFn is fr.readvRaw bound once; dst is
	// what is left to fill.
	readvFn func(fd uintptr) bool
	dst     []byte
	// noWait: a read that finds nothing returns errWouldBlock instead of
	// waiting (canNoWait says where it is supported).
	noWait bool
	// progress, if set, counts the bytes ReadFull's reads bring, as they
	// come (keepalive): a payload read with one ReadFull shows the peer
	// alive while it arrives, however long it is.
	progress *atomic.Uint64
	// largePayload: ReadFull is reading, or last read, a payload of at
	// least directReadMin past the buffer. Until the buffer is filled
	// again, reads take only prefetchSize into it: the next payload is
	// likely large too, and reading the whole buffer would pull most of it
	// through the buffer, a copy per message.
	largePayload bool
}

// smallReadSize is the idle read buffer where the socket cannot be polled
// without one: enough for a small frame, so that a request/response round
// trip still needs one Read.
const smallReadSize = 1 << 10

// prefetchSize is how much ReadFull's readv takes into the buffer beyond
// the payload it fills: the next frame's header and a few small frames.
// More would be copied: a stream of 64 KiB messages read into a 64 KiB
// buffer would move every payload through it (copying them cost 8 % of
// the process's CPU on WAN20ms; PERFORMANCE.md, "Where the time goes").
const prefetchSize = smallReadSize

// directReadMin: a ReadFull of less than this reads into the whole buffer
// after it, as Peek would: a stream of small messages that straddle reads
// would otherwise go on with 1 KiB reads, one system call per message
// (twice the time on RecvOnly1KB).
const directReadMin = readBufferSize / 2

// errWouldBlock: a read in noWait mode found nothing to read. Like an
// interrupted read, it loses nothing: Peek consumed nothing, and ReadFull
// returns what it filled.
var errWouldBlock = errors.New("tcpconn: read would block")

// errPeekTooLarge would mean a frame header longer than any the protocol
// has: Peek is used for headers only (payloads are read past the buffer).
var errPeekTooLarge = errors.New("tcpconn: peek beyond the read buffer")

func newFrameReader(conn io.Reader, tcp *net.TCPConn) *frameReader {
	fr := &frameReader{conn: conn}
	if tcp != nil {
		fr.raw = rawConnOf(tcp)
	}
	if fr.raw != nil {
		fr.rawFn = fr.readRaw
		if canReadv {
			fr.readvFn = fr.readvRaw
		}
	} else {
		fr.small = make([]byte, smallReadSize)
	}
	return fr
}

// canNoWait reports whether reads can be made not to wait (noWait): where
// both the buffer fill and the payload read go through the raw socket
// (Linux TCP).
func (fr *frameReader) canNoWait() bool { return fr.readvFn != nil }

// Buffered is the number of bytes that can be read without a read call.
func (fr *frameReader) Buffered() int { return fr.w - fr.r }

// Peek returns the next n buffered bytes without consuming them, reading
// until there are n. The slice is valid until the next call.
func (fr *frameReader) Peek(n int) ([]byte, error) {
	if n > readBufferSize {
		return nil, errPeekTooLarge
	}
	for fr.w-fr.r < n {
		if err := fr.fill(n); err != nil {
			return nil, err
		}
	}
	return fr.buf[fr.r : fr.r+n], nil
}

// Discard consumes n buffered bytes (n <= Buffered()).
func (fr *frameReader) Discard(n int) {
	fr.r += n
	if fr.r == fr.w {
		fr.r, fr.w = 0, 0
	}
}

// Read copies buffered bytes into p; it never reads the connection (the
// payload path reads past the buffer itself).
func (fr *frameReader) Read(p []byte) int {
	n := copy(p, fr.buf[fr.r:fr.w])
	fr.Discard(n)
	return n
}

// ReadFull fills dst: first with buffered bytes, then from the connection.
// Where the socket is read with readv (Linux TCP), the read that completes
// dst takes up to prefetchSize bytes after it into the buffer (the whole
// buffer if dst is shorter than directReadMin), and so does the next read
// that fills the buffer: a payload larger than what is buffered costs no
// copy beyond that, and the next header no read of its own. Its errors are
// io.ReadFull's.
func (fr *frameReader) ReadFull(dst []byte) (int, error) {
	n := 0
	if fr.w > fr.r {
		n = fr.Read(dst)
	}
	if n == len(dst) {
		return n, nil
	}
	if fr.readvFn == nil {
		k, err := fr.readFullConn(dst[n:])
		return n + k, err
	}
	// The buffer is empty: it takes the prefetch.
	if fr.pooled == nil {
		fr.grow()
	}
	fr.dst = dst[n:]
	fr.largePayload = len(dst) >= directReadMin
	got := 0
	var err error
	for len(fr.dst) > 0 && err == nil {
		fr.rawN, fr.rawErr = 0, nil
		err = fr.raw.Read(fr.readvFn)
		k := fr.rawN
		fr.countProgress(k)
		if k > len(fr.dst) {
			fr.w += k - len(fr.dst)
			k = len(fr.dst)
		}
		fr.dst = fr.dst[k:]
		got += k
		if err == nil {
			err = fr.rawErr
		}
	}
	fr.dst = nil // do not keep the message alive
	if err == io.EOF && got > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n + got, err
}

// readFullConn is io.ReadFull on the connection, counting progress read by
// read.
func (fr *frameReader) readFullConn(dst []byte) (int, error) {
	n, stalls := 0, 0
	for n < len(dst) {
		k, err := fr.conn.Read(dst[n:])
		n += k
		fr.countProgress(k)
		if k > 0 {
			stalls = 0
		}
		switch {
		case err == io.EOF && n > 0 && n < len(dst):
			return n, io.ErrUnexpectedEOF
		case err != nil && n < len(dst):
			return n, err
		case k == 0:
			if stalls++; stalls == 100 {
				return n, io.ErrNoProgress // no bytes and no error, a hundred times
			}
		}
	}
	return n, nil
}

func (fr *frameReader) countProgress(n int) {
	if n > 0 && fr.progress != nil {
		fr.progress.Add(uint64(n))
	}
}

// readvRaw is ReadFull's RawConn.Read callback: it reads into what is left
// of dst and then the buffer's prefetch room, and reports false (wait for
// the socket to be readable) when there is nothing to read yet, unless
// noWait.
func (fr *frameReader) readvRaw(fd uintptr) bool {
	spare := fr.buf[fr.w:]
	if fr.largePayload {
		spare = spare[:min(len(spare), prefetchSize)]
	}
	n, err, wait := sysReadv(fd, fr.dst, spare)
	if wait && fr.noWait {
		n, err, wait = 0, errWouldBlock, false
	}
	if wait {
		return false
	}
	fr.rawN, fr.rawErr = n, err
	return true
}

// fill reads at least one more byte so that n bytes can be buffered.
func (fr *frameReader) fill(n int) error {
	if fr.r == fr.w && fr.pooled != nil {
		fr.release() // about to wait for the peer: do not hold 64 KiB doing it
	}
	if fr.buf == nil {
		if fr.raw != nil {
			return fr.fillRaw()
		}
		fr.buf = fr.small
	}
	if fr.r > 0 {
		fr.w = copy(fr.buf, fr.buf[fr.r:fr.w])
		fr.r = 0
	}
	if fr.pooled == nil && fr.w > 0 {
		// A frame longer than its first read: data flows, and a pooled
		// buffer batches the frames behind this one.
		fr.grow()
	}
	for range 100 {
		k, err := fr.conn.Read(fr.buf[fr.w:])
		fr.w += k
		if k > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress // no bytes and no error, a hundred times
}

// fillRaw waits for the socket to be readable, then reads into a pooled
// buffer taken (or kept, if bytes are buffered) for the purpose.
func (fr *frameReader) fillRaw() error {
	fr.rawN, fr.rawErr = 0, nil
	err := fr.raw.Read(fr.rawFn)
	fr.w += fr.rawN
	if fr.rawN > 0 {
		fr.largePayload = false
	}
	if err != nil {
		return err
	}
	return fr.rawErr
}

// readRaw is RawConn.Read's callback: it reports false (wait for the
// socket to be readable) when there is nothing to read yet, unless noWait.
func (fr *frameReader) readRaw(fd uintptr) bool {
	if fr.buf == nil {
		fr.grow()
	}
	room := fr.buf[fr.w:]
	if fr.largePayload {
		room = room[:min(len(room), prefetchSize)]
	}
	n, err, wait := sysRead(fd, room)
	if wait {
		if fr.w == 0 {
			fr.release() // nothing yet: wait without it
		}
		if !fr.noWait {
			return false
		}
		n, err = 0, errWouldBlock
	}
	fr.rawN, fr.rawErr = n, err
	return true
}

// grow moves the buffered bytes into a pooled buffer.
func (fr *frameReader) grow() {
	if fr.pooled != nil {
		return
	}
	b := readFree.get()
	b.B = b.B[:cap(b.B)]
	copy(b.B, fr.buf[fr.r:fr.w])
	fr.w -= fr.r
	fr.r = 0
	fr.buf, fr.pooled = b.B, b
}

// release returns the pooled buffer; nothing may be buffered.
func (fr *frameReader) release() {
	if fr.pooled != nil {
		readFree.put(fr.pooled)
	}
	fr.buf, fr.pooled = nil, nil
	fr.r, fr.w = 0, 0
}
