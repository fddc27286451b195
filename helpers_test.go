// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// testTimeout bounds every blocking step of a test; generous because the
// machines are shared and loaded.
const testTimeout = 20 * time.Second

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// listenTCP returns a loopback listener closed at cleanup.
func listenTCP(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serveEcho accepts sockets on ln and echoes on each socket's catch-all
// with the original plain loop (WrapConnection + Receive/Send). It returns a
// channel that receives every accepted socket.
func serveEcho(t testing.TB, ln net.Listener) <-chan net.Conn {
	t.Helper()
	accepted := make(chan net.Conn, 64)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case accepted <- conn:
			default:
			}
			go echoLoop(WrapConnection(conn, 0))
		}
	}()
	return accepted
}

// eventually polls cond until it holds or the test timeout passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	eventuallyWithin(t, testTimeout, what, cond)
}

// eventuallyWithin polls cond until it holds or d passes.
func eventuallyWithin(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// pollFor reports whether cond holds within d, checking every millisecond.
func pollFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

func mustSend(t testing.TB, c *Connection, data []byte) {
	t.Helper()
	if err := c.SendContext(testContext(t), data); err != nil {
		t.Fatalf("send on %q: %v", c.ID(), err)
	}
}

func mustReceive(t testing.TB, c *Connection) []byte {
	t.Helper()
	data, err := c.ReceiveContext(testContext(t))
	if err != nil {
		t.Fatalf("receive on %q: %v", c.ID(), err)
	}
	return data
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got error %v, want %v", err, target)
	}
}

// serve calls accept in a loop and runs handle on each result in its own
// goroutine until accept fails. The returned stop closes the listener and
// waits for every handler (so handlers must end when their connection
// does); it also runs at cleanup.
func serve[T any](t testing.TB, accept func() (T, error), closeListener func() error, handle func(T)) (stop func()) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
			}()
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			closeListener()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}

// serveConns accepts sockets on ln and runs handle on each.
func serveConns(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	t.Helper()
	serve(t, ln.Accept, ln.Close, handle)
}

// serveListener accepts logical connections on ln and runs handle on each,
// closing it when handle returns.
func serveListener(t testing.TB, ln *Listener, handle func(*Connection)) (stop func()) {
	t.Helper()
	return serve(t, ln.Accept, ln.Close, func(c *Connection) {
		defer c.Close()
		handle(c)
	})
}

// echoLoop is the original server loop: Receive, Send the same bytes back,
// until an error; it closes c on return.
func echoLoop(c *Connection) {
	defer c.Close()
	for {
		data, err := c.Receive()
		if err != nil {
			return
		}
		if c.Send(data) != nil {
			return
		}
	}
}

// roundTrip sends msg on c and checks that the same bytes come back.
func roundTrip(ctx context.Context, c *Connection, msg []byte) error {
	if err := c.SendContext(ctx, msg); err != nil {
		return err
	}
	got, err := c.ReceiveContext(ctx)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo mismatch on %q: sent %d bytes, got %d", c.ID(), len(msg), len(got))
	}
	return nil
}

func mustRoundTrip(t testing.TB, c *Connection, msg []byte) {
	t.Helper()
	if err := roundTrip(testContext(t), c, msg); err != nil {
		t.Fatal(err)
	}
}

// eventuallyRoundTrip retries a round trip, each attempt bounded, until one
// succeeds (for example while a client reconnects).
func eventuallyRoundTrip(t testing.TB, c *Connection, msg []byte) {
	t.Helper()
	var last error
	eventually(t, "a round trip on "+c.ID(), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		last = roundTrip(ctx, c, msg)
		if last != nil {
			t.Logf("round trip attempt: %v", last)
		}
		return last == nil
	})
}

// pattern returns n deterministic bytes that differ with seed and position,
// so that shifted, truncated or swapped payloads never compare equal.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// closeAtCleanup closes c when the test ends.
func closeAtCleanup(t testing.TB, c *Connection) *Connection {
	t.Helper()
	t.Cleanup(func() { c.Close() })
	return c
}

// mustDial is Dial bounded by the test timeout, closed at cleanup.
func mustDial(t testing.TB, address string, opts ...Option) *Connection {
	t.Helper()
	c, err := Dial(testContext(t), address, opts...)
	if err != nil {
		t.Fatalf("Dial %s: %v", address, err)
	}
	return closeAtCleanup(t, c)
}

// namedPair is a client Connection dialled with id over TCP and the
// server Connection WrapConnectionWithID made for it with the given idle
// timeout, both closed at cleanup.
func namedPair(t testing.TB, id string, idle time.Duration) (cli, srv *Connection) {
	t.Helper()
	ln := listenTCP(t)
	srvSide := make(chan *Connection, 1)
	serveConns(t, ln, func(conn net.Conn) { srvSide <- WrapConnectionWithID(conn, id, idle) })
	cli = mustDial(t, ln.Addr().String(), WithID(id))
	return cli, closeAtCleanup(t, <-srvSide)
}

// mustWrap is Wrap that fails the test on error, closed at cleanup.
func mustWrap(t testing.TB, conn net.Conn, opts ...Option) *Connection {
	t.Helper()
	c, err := Wrap(conn, opts...)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	return closeAtCleanup(t, c)
}

// acceptOne returns the next socket ln accepts, closed at cleanup.
func acceptOne(t testing.TB, ln net.Listener) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("accept: %v", r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		return r.c
	case <-time.After(testTimeout):
		ln.Close()
		t.Fatal("timed out waiting for a socket")
		return nil
	}
}

// receiveBlocked reports whether a Receive is parked waiting on c.
func receiveBlocked(c *Connection) bool {
	b := c.bind.Load()
	switch {
	case b == nil:
		return false
	case b.ca != nil:
		b.ca.mu.Lock()
		defer b.ca.mu.Unlock()
		return len(b.ca.waiters) > 0
	default:
		b.st.mu.Lock()
		defer b.st.mu.Unlock()
		return len(b.st.waiters) > 0
	}
}

// queued returns how many received messages wait in c's queue (for a
// catch-all, in the records of its ready line).
func queued(c *Connection) int {
	b := c.bind.Load()
	switch {
	case b == nil:
		return 0
	case b.ca != nil:
		b.ca.mu.Lock()
		defer b.ca.mu.Unlock()
		n := 0
		for _, s := range b.ca.ready.items[b.ca.ready.head:] {
			s.mu.Lock()
			n += s.queue.len()
			s.mu.Unlock()
		}
		return n
	}
	b.st.mu.Lock()
	defer b.st.mu.Unlock()
	return b.st.queue.len()
}

// linkOf returns the physical link c is bound to (nil if none).
func linkOf(c *Connection) *link {
	if b := c.bind.Load(); b != nil {
		return b.link
	}
	return nil
}

// ---- raw peers: speak the wire format by hand ----

// rawPeer is a hand-driven end of a tcpconn socket.
type rawPeer struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
}

func newRawPeer(t testing.TB, conn net.Conn) *rawPeer {
	t.Helper()
	conn.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { conn.Close() })
	return &rawPeer{t: t, conn: conn, br: bufio.NewReader(conn)}
}

// dialRaw connects a raw peer to address.
func dialRaw(t testing.TB, address string) *rawPeer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", address, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return newRawPeer(t, conn)
}

func (p *rawPeer) write(frames ...[]byte) {
	p.t.Helper()
	for _, f := range frames {
		if _, err := p.conn.Write(f); err != nil {
			p.t.Fatalf("raw write: %v", err)
		}
	}
}

// closeWrite half-closes the raw socket: the other side reads EOF.
func (p *rawPeer) closeWrite() {
	p.t.Helper()
	if err := p.conn.(*net.TCPConn).CloseWrite(); err != nil {
		p.t.Fatal(err)
	}
}

// readFrame reads one whole frame and returns its bytes. PINGs are
// skipped: the library sends one when our HELLO arrives (to measure the
// round trip its windows grow by), and keepalive's later.
func (p *rawPeer) readFrame() []byte {
	p.t.Helper()
	for {
		f, err := readRawFrame(p.br)
		if err != nil {
			p.t.Fatalf("raw read: %v", err)
		}
		if len(f) < 2 || f[0] != controlMarker || f[1] != framePing {
			return f
		}
	}
}

// expectFrame reads the next frame but PINGs and fails unless it is
// exactly want (peers under test run without keepalive, so nothing else
// interleaves).
func (p *rawPeer) expectFrame(want []byte) {
	p.t.Helper()
	got := p.readFrame()
	if !bytes.Equal(got, want) {
		p.t.Fatalf("raw peer got frame\n% x\nwant\n% x", got, want)
	}
}

// rawPeerOfCatchAll serves one socket with a catch-all that reports the
// error its Receive ends with, and returns a raw peer for it that has
// exchanged HELLOs.
func rawPeerOfCatchAll(t testing.TB) (*rawPeer, <-chan error) {
	t.Helper()
	ln := listenTCP(t)
	errs := make(chan error, 1)
	serveConns(t, ln, func(conn net.Conn) {
		c := WrapConnection(conn, 0)
		defer c.Close()
		_, err := c.ReceiveContext(context.Background())
		errs <- err
	})
	p := dialRaw(t, ln.Addr().String())
	p.expectHello(helloBytes(nil))
	p.write(helloBytes(nil))
	return p, errs
}

// expectHello reads the library's HELLO: want's bytes but for the link ID
// (a random UUID on the dialling side), which it returns.
func (p *rawPeer) expectHello(want []byte) [sizeOfLinkID]byte {
	p.t.Helper()
	got := p.readFrame()
	n := len(want) - sizeOfLinkID
	if len(got) != len(want) || !bytes.Equal(got[:n], want[:n]) {
		p.t.Fatalf("raw peer got frame\n% x\nwant a HELLO like\n% x", got, want)
	}
	return [sizeOfLinkID]byte(got[n:])
}

// expectClosed reads and discards until the other side closes the socket;
// a read deadline means it never did.
func (p *rawPeer) expectClosed() {
	p.t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(testTimeout))
	_, err := io.Copy(io.Discard, p.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		p.t.Fatal("the socket was not closed by the other side")
	}
}

// readRawFrame is the test's own decoder of the wire format (README,
// "Wire protocol"), independent of the library's read loop.
func readRawFrame(br *bufio.Reader) ([]byte, error) {
	b0, err := br.ReadByte()
	if err != nil {
		return nil, err
	}
	f := []byte{b0}
	take := func(n int) ([]byte, error) {
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, err
		}
		f = append(f, b...)
		return b, nil
	}
	if b0 != 0xFF { // data: [idLen][id][len u32][payload]
		if _, err := take(int(b0)); err != nil {
			return nil, err
		}
		n, err := take(4)
		if err != nil {
			return nil, err
		}
		_, err = take(int(binary.BigEndian.Uint32(n)))
		return f, err
	}
	typ, err := take(1)
	if err != nil {
		return nil, err
	}
	switch typ[0] {
	case 0x01: // HELLO
		_, err = take(4 + 1 + 4*4 + 16)
	case 0x0A: // LANE
		_, err = take(4 + 1 + 16)
	case 0x02, 0x04, 0x08, 0x0B: // WINDOW, CLOSE, OPEN, BULK: [idLen][id][u32]
		var l []byte
		if l, err = take(1); err == nil {
			_, err = take(int(l[0]) + 4)
		}
	case 0x09: // PART: [idLen][id][rest u32][len u32][payload]
		var l []byte
		if l, err = take(1); err == nil {
			var rl []byte
			if rl, err = take(int(l[0]) + 8); err == nil {
				_, err = take(int(binary.BigEndian.Uint32(rl[len(rl)-4:])))
			}
		}
	case 0x03, 0x05, 0x06: // LINK_WINDOW, PING, PONG
		_, err = take(4)
	case 0x07: // GOAWAY: [code u32][reasonLen][reason]
		var h []byte
		if h, err = take(5); err == nil {
			_, err = take(int(h[4]))
		}
	default:
		return nil, fmt.Errorf("unknown control type 0x%02x", typ[0])
	}
	return f, err
}

// dataFrame is a whole data frame carrying payload on id.
func dataFrame(id, payload string) []byte {
	return append(appendDataHeader(nil, id, len(payload)), payload...)
}

// splitDataFrame returns the ID and payload of a frame from readRawFrame;
// ok is false for a control frame.
func splitDataFrame(f []byte) (id string, payload []byte, ok bool) {
	if len(f) == 0 || f[0] == controlMarker {
		return "", nil, false
	}
	n := int(f[0])
	return string(f[1 : 1+n]), f[1+n+sizeOfLength:], true
}

// helloBytes is a valid HELLO announcing cfg's limits (nil: defaults).
func helloBytes(cfg *Config) []byte {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	return appendHello(nil, cfg.hello())
}

// helloVersion is a HELLO with the right magic and default limits but
// protocol version v.
func helloVersion(v uint8) []byte {
	h := DefaultConfig().hello()
	h.version = v
	return appendHello(nil, h)
}

// ---- bounded calls: a test of the contract never hangs ----

// prompt bounds what must happen at once: Close, a Send within the initial
// credit, a blocked call waking after a local event. Generous for a loaded
// 2-core machine; the engine takes microseconds.
const prompt = time.Second

// promptRemote bounds what needs the peer but no bulk data: a handshake, an
// announcement, a CLOSE crossing the socket.
const promptRemote = 5 * time.Second

// async runs f in its own goroutine; its result arrives on the channel.
func async(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

// await returns the result of an async call, failing the test, naming what
// hung, if it does not arrive within d (the call is left behind).
func await(t testing.TB, ch <-chan error, d time.Duration, what string) error {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case err := <-ch:
		return err
	case <-timer.C:
		t.Fatalf("%s did not return within %v", what, d)
		return nil
	}
}

// within runs f and returns its error, failing the test if f has not
// returned after d.
func within(t testing.TB, d time.Duration, what string, f func() error) error {
	t.Helper()
	return await(t, async(f), d, what)
}

// recvWithin is the plain Receive (the original call, no context) bounded by
// d: it fails the test on an error or if Receive hangs.
func recvWithin(t testing.TB, c *Connection, d time.Duration) []byte {
	t.Helper()
	var data []byte
	err := within(t, d, fmt.Sprintf("Receive on %q", c.ID()), func() (err error) {
		data, err = c.Receive()
		return err
	})
	if err != nil {
		t.Fatalf("Receive on %q: %v", c.ID(), err)
	}
	return data
}

// closePromptlyAtCleanup closes c when the test ends; Close must return
// within 2*prompt (it is left behind and reported otherwise, so a broken
// Close costs seconds, not the run).
func closePromptlyAtCleanup(t testing.TB, c *Connection) *Connection {
	t.Helper()
	t.Cleanup(func() {
		done := async(c.Close)
		select {
		case <-done:
		case <-time.After(2 * prompt):
			t.Errorf("cleanup: Close of %q did not return within %v", c.ID(), 2*prompt)
		}
	})
	return c
}

// inPlaceFixture is a server link over a net.Pipe driven by a raw peer,
// with a ReceiveAppend blocked reading the socket for itself on recv (the
// catch-all, or the ID "a") into buf, whose first bytes are prefix, and a
// bystander Connection "b" on the same link.
type inPlaceFixture struct {
	srv       net.Conn
	peer      *rawPeer
	recv      *Connection
	bystander *Connection
	prefix    []byte
	buf       []byte
	done      chan inPlaceResult // nil once result took the outcome
}

type inPlaceResult struct {
	out []byte
	err error
}

// wrapBesideRawPeer wraps one end of a net.Pipe once per ID and drives the
// other end with a raw peer that has exchanged HELLOs and drops whatever
// the library writes after them (so its writes never block).
func wrapBesideRawPeer(t testing.TB, ids ...string) (srv net.Conn, peer *rawPeer, conns []*Connection) {
	t.Helper()
	srv, peerEnd := net.Pipe()
	peer = newRawPeer(t, peerEnd)
	for _, id := range ids {
		conns = append(conns, mustWrap(t, srv, WithID(id)))
	}
	peer.expectHello(helloBytes(nil))
	peer.write(helloBytes(nil))
	go io.Copy(io.Discard, peer.br)
	return srv, peer, conns
}

func newInPlaceFixture(t *testing.T, catchAll bool) *inPlaceFixture {
	t.Helper()
	id, settleID := "a", "a"
	if catchAll {
		id, settleID = "", "s"
	}
	srv, peer, conns := wrapBesideRawPeer(t, id, "b")
	ip := &inPlaceFixture{srv: srv, peer: peer, recv: conns[0], bystander: conns[1], prefix: []byte("prefix:")}

	// The background reader steps back once it handed a message over, so
	// a few messages settle who reads.
	ip.buf = make([]byte, 0, 64<<10)
	l := linkOf(ip.recv)
	for i := 0; ; i++ {
		ip.receive()
		if pollFor(200*time.Millisecond, l.token.direct.Load) {
			return ip
		}
		if i == 20 {
			t.Fatal("no ReceiveAppend read the socket for itself")
		}
		ip.peer.write(dataFrame(settleID, "settle"))
		ip.result(t)
	}
}

// receive starts a ReceiveAppend of the next message after prefix.
func (ip *inPlaceFixture) receive() {
	ip.buf = append(ip.buf[:0], ip.prefix...)
	ip.done = make(chan inPlaceResult, 1)
	go func(buf []byte, done chan<- inPlaceResult) {
		out, err := ip.recv.ReceiveAppend(context.Background(), buf)
		done <- inPlaceResult{out, err}
	}(ip.buf, ip.done)
}

// result waits for the ReceiveAppend that receive started.
func (ip *inPlaceFixture) result(t *testing.T) inPlaceResult {
	t.Helper()
	select {
	case r := <-ip.done:
		ip.done = nil
		return r
	case <-time.After(testTimeout):
		t.Fatal("ReceiveAppend did not return")
		return inPlaceResult{}
	}
}

// spare is buf's capacity beyond prefix.
func (ip *inPlaceFixture) spare() []byte { return ip.buf[len(ip.prefix):cap(ip.buf)] }
