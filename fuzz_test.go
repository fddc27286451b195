// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fuzz targets for the read path. Each input is served by an in-memory
// net.Conn to a server link; the link must end (no hang, bounded by a
// deadline) with an error matching ErrProtocol, ErrHandshake or ErrLinkLost,
// never panic, and never allocate what a header merely claims.
//
//	go test -run '^$' -fuzz FuzzFrameDecoder -fuzztime 15s .
//	go test -run '^$' -fuzz FuzzDemux -fuzztime 15s .

// memConn serves a fixed byte stream in reads of at most chunk bytes, then
// io.EOF; writes are discarded.
type memConn struct {
	mu     sync.Mutex
	data   []byte
	chunk  int
	closed bool
}

func (m *memConn) Read(b []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, net.ErrClosed
	}
	if len(m.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(b), len(m.data), m.chunk)
	copy(b, m.data[:n])
	m.data = m.data[n:]
	return n, nil
}

func (m *memConn) Write(b []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, net.ErrClosed
	}
	return len(b), nil
}

func (m *memConn) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}

var memAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}

func (m *memConn) LocalAddr() net.Addr              { return memAddr }
func (m *memConn) RemoteAddr() net.Addr             { return memAddr }
func (m *memConn) SetDeadline(time.Time) error      { return nil }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }

// fuzzConfig has small limits so that inputs reach them, and a large
// message limit so that a claimed length could tempt an allocation.
var fuzzConfig = &Config{
	// An input that opens with LANE names a link the server waits for
	// (it may not have read that link's HELLO yet) up to HandshakeTimeout:
	// well inside serveFuzz's 10 s bound for the link to end.
	HandshakeTimeout:          time.Second,
	MaxMessageSize:            64 << 20,
	StreamWindow:              64 << 10,
	LinkWindow:                256 << 10,
	MaxStreams:                16,
	MaxControlFramesPerSecond: 64,
	KeepAliveInterval:         -1,
	IdleTimeout:               -1,
}

// fuzzAllocSlack covers the link's fixed buffers (bufio, queues, goroutines),
// the 1 MiB a large message may hold before its bytes arrive, and what the
// process allocates per message besides: under the fuzzing engine an input of
// 3,000 empty messages measured 7 to 16 MB (not under go test -run; the
// cause is not known). It stays well below fuzzConfig's
// 64 MiB MaxMessageSize, so an allocation a header merely claims still fails.
const fuzzAllocSlack = 32 << 20

// serveFuzz runs one input through a server link with a catch-all and the
// ID "a" registered, receiving on both, and checks how it ends.
func serveFuzz(t *testing.T, input []byte, chunk int) {
	// Links close in the background (a GOAWAY, then the socket): let the
	// previous inputs' finish first, so their work is not counted here.
	for deadline := time.Now().Add(2 * time.Second); ReadStats().Links > 0 && time.Now().Before(deadline); {
		runtime.Gosched()
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)

	conn := &memConn{data: input, chunk: max(chunk, 1)}
	a, err := Wrap(conn, WithID("a"), WithConfig(fuzzConfig))
	if err != nil {
		// The link ended before the ID could be registered, or the input
		// had already opened as many IDs as its own HELLO allows (a usage
		// error for Wrap; the link is closed with it).
		if !errors.Is(err, ErrTooManyStreams) {
			checkFuzzEnd(t, err)
		}
		return
	}
	l := linkOf(a)
	all, err := Wrap(conn, WithConfig(fuzzConfig))
	if err == nil && linkOf(all) != l {
		// The first link ended already and this Wrap started another.
		all.Close()
		err = ErrLinkLost
	}
	if err != nil {
		if !l.failed() {
			t.Fatal(err)
		}
		all = nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range []*Connection{a, all} {
		if c == nil {
			continue
		}
		wg.Add(1)
		buf := make([]byte, 0, 64<<10)
		go func() {
			defer wg.Done()
			// Alternately reading the socket itself, into buf's spare
			// capacity (in place), and waiting with a deadline for the
			// background reader's hand-off.
			for i := 0; ; i++ {
				rctx := ctx
				if i%2 == 0 {
					rctx = context.Background()
				}
				if _, err := c.ReceiveAppend(rctx, buf[:0]); err != nil {
					return
				}
			}
		}()
	}
	select {
	case <-l.done:
	case <-ctx.Done():
		t.Fatalf("the link did not end within 10 s on a %d-byte input", len(input))
	}
	a.Close()
	if all != nil {
		all.Close()
	}
	received := make(chan struct{})
	go func() { wg.Wait(); close(received) }()
	select {
	case <-received:
	case <-ctx.Done():
		t.Fatal("a Receive hung after the link ended")
	}
	checkFuzzEnd(t, l.err)
	runtime.ReadMemStats(&after)
	if got, bound := after.TotalAlloc-before.TotalAlloc, uint64(fuzzAllocSlack+8*len(input)); got > bound && !raceEnabled {
		t.Fatalf("allocated %d bytes for a %d-byte input (bound %d)", got, len(input), bound)
	}
}

func checkFuzzEnd(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrHandshake) && !errors.Is(err, ErrLinkLost) {
		t.Fatalf("link ended with %v, want ErrProtocol, ErrHandshake or ErrLinkLost", err)
	}
}

func fuzzSeeds() [][]byte {
	h := helloBytes(nil)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	return [][]byte{
		nil,
		h,
		h[:7],
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		cat(h, dataFrame("a", "hello"), dataFrame("", ""), dataFrame("b", strings.Repeat("\x01", 300))),
		cat(h, appendDataHeader(nil, "a", 1<<26), []byte("short")),
		cat(h, appendU32([]byte{1, 'a'}, 1<<32-1)), // data header for "a" claiming 4 GiB - 1 (appendDataHeader takes an int)
		cat(h, h),
		cat(h, appendIDControl(nil, frameWindow, "a", 100), appendValueControl(nil, frameLinkWindow, 5)),
		cat(h, appendIDControl(nil, frameClose, "a", uint32(closeNormal)), dataFrame("a", "again")),
		cat(h, appendValueControl(nil, framePing, 1), appendValueControl(nil, framePong, 2)),
		cat(h, appendGoAway(nil, 0, "bye"), appendGoAway(nil, 1, "again")),
		cat(h, appendIDControl(nil, frameOpen, "a", 0), appendIDControl(nil, frameOpen, "n", 0), appendIDControl(nil, frameOpen, "n", 0), dataFrame("n", "x")),
		cat(h, appendIDControl(nil, frameOpen, "a", 0), appendIDControl(nil, frameClose, "a", uint32(closeNormal)), appendIDControl(nil, frameOpen, "a", 0)),
		cat(h, appendPartHeader(nil, "a", 3, 2), []byte("xy"), dataFrame("b", "between"), appendPartHeader(nil, "a", 0, 3), []byte("zzz")),
		cat(h, appendPartHeader(nil, "a", 1<<20, 1), []byte("x"), appendIDControl(nil, frameClose, "a", uint32(closeNormal))),
		cat(h, []byte{0xFF, 0x0a}),
		cat(h, []byte{0xFF, frameWindow, 0xFF}),
		cat(h, bytes.Repeat(dataFrame("x", ""), 3000)),
	}
}

func FuzzFrameDecoder(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		serveFuzz(t, input, 1<<20)
	})
}

func FuzzDemux(f *testing.F) {
	h := helloBytes(nil)
	for i, s := range fuzzSeeds() {
		if bytes.HasPrefix(s, h) {
			f.Add(s[len(h):], uint8(i*17))
		}
	}
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		serveFuzz(t, append(append([]byte(nil), h...), stream...), int(chunk)+1)
	})
}
