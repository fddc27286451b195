// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Adapters for code that speaks a byte-stream protocol (net/http, net/rpc,
// gRPC, io.Copy): a logical connection as a net.Conn, a Listener as a
// net.Listener, and a dial function of the shape http.Transport.DialContext
// and grpc.WithContextDialer take.

// streamChunk bounds the message a Write sends at once: large enough that
// a 16 MiB body costs a few sends, small enough for any peer's
// MaxMessageSize above it to be irrelevant (the peer's limit is honoured
// too). A message is also at most half the peer's window for the ID
// (chunk), so that one is in flight while the reader takes the one before
// and returns its credit: a message as large as the window waits for the
// credit of the one before it to come back, a stop-and-wait where windows
// do not grow (loopback). 1 MiB messages in the default 1 MiB window made
// a 16 MiB HTTP body about 12 % slower than 512 KiB ones (PERFORMANCE.md,
// "Stream protocols over logical connections").
const streamChunk = 1 << 20

// NetConn returns c as a net.Conn: a byte stream over the logical
// connection. Each Write sends its bytes as one or more messages, in
// order; Read returns them in order, across message boundaries (a short
// Read leaves the rest of a message for the next one).
//
//   - c stops reconnecting and idling out: a byte stream cannot resume on
//     another socket, so once its socket is lost every call fails, and its
//     user (deadlines, http.Server.IdleTimeout) decides when it is idle.
//   - The peer closing the logical connection, or its socket between
//     frames, is io.EOF on Read, after what had arrived; Write then fails.
//   - A zero-length Write sends nothing and returns 0, nil, as on TCP.
//   - There is no half-close: Close ends both directions (the peer reads
//     io.EOF).
//   - SetDeadline, SetReadDeadline and SetWriteDeadline apply to pending
//     calls too; a call that passes its deadline fails with an error that
//     matches os.ErrDeadlineExceeded and is a net.Error whose Timeout is
//     true. A Write cut short by its deadline reports how many bytes it
//     sent; none of a message is ever sent in part.
//
// Use one NetConn per Connection, and do not Send or Receive on c besides.
func (c *Connection) NetConn() net.Conn {
	c.final.Store(true)
	c.mu.Lock()
	c.idle = 0
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	c.mu.Unlock()
	s := &streamConn{c: c}
	s.rdl.interrupt = s.interruptRead
	return s
}

// DialConn opens a new logical connection to address, with an ID of its
// own, and returns it as a net.Conn (NetConn). Every connection it dials
// to one address shares the Client's socket. network is not used (the
// Client's Config says how to reach address, TLS included); it is there
// so that DialConn fits http.Transport.DialContext and, with a wrapper,
// grpc.WithContextDialer.
func (cl *Client) DialConn(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := cl.Dial(ctx, address, WithID("conn-"+uuid.NewString()))
	if err != nil {
		return nil, err
	}
	return c.NetConn(), nil
}

// DialConn is DefaultClient.DialConn.
func DialConn(ctx context.Context, network, address string) (net.Conn, error) {
	return DefaultClient.DialConn(ctx, network, address)
}

// NetListener returns ln as a net.Listener whose Accept returns each new
// logical connection as a net.Conn (NetConn): an http.Server or a gRPC
// server serves on it as on a TCP listener. Closing it closes ln.
func (ln *Listener) NetListener() net.Listener { return netListener{ln} }

type netListener struct{ ln *Listener }

func (l netListener) Accept() (net.Conn, error) {
	c, err := l.ln.Accept()
	if err != nil {
		if errors.Is(err, ErrClosed) {
			err = fmt.Errorf("%w: %w", net.ErrClosed, err)
		}
		return nil, err
	}
	return c.NetConn(), nil
}

func (l netListener) Close() error   { return l.ln.Close() }
func (l netListener) Addr() net.Addr { return l.ln.Addr() }

// streamConn is NetConn's net.Conn.
type streamConn struct {
	c *Connection

	rmu  sync.Mutex // one Read at a time: a stream has one read position
	msg  message    // the message being read, in the library's buffer; msg.data[roff:] is unread
	roff int
	rerr error // why nothing more can be read (sticky)

	wmu  sync.Mutex // one Write at a time: its messages stay together
	werr error      // why nothing more can be written (sticky)

	rdl, wdl deadline
}

func (s *streamConn) Read(p []byte) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	for s.roff == len(s.msg.data) {
		// A drained message's buffer goes back to the pools at once: an
		// idle stream keeps none, and the next message reuses it.
		s.msg.release()
		s.msg, s.roff = message{}, 0
		if len(p) == 0 {
			return 0, nil
		}
		if s.rerr != nil {
			return 0, s.rerr
		}
		ctx := s.rdl.context()
		if ctx.Err() != nil {
			return 0, s.opError("read", os.ErrDeadlineExceeded)
		}
		// A message that fits in p may be read straight into it (when
		// this call reads the socket itself): no copy through a buffer.
		var rctx context.Context = ctx
		if len(p) < interruptibleReadMin {
			rctx = parkedContext{ctx}
		}
		_, m, inPlace, err := s.c.receive(rctx, dest{buf: p})
		if err != nil {
			return 0, s.readFailed(err)
		}
		if inPlace {
			if len(m.data) == 0 {
				continue // an empty message carries no bytes of the stream
			}
			return len(m.data), nil
		}
		s.msg = m
	}
	n := copy(p, s.msg.data[s.roff:])
	s.roff += n
	return n, nil
}

// interruptibleReadMin: a Read for fewer bytes waits parked, leaving the
// socket to the background reader, as a ReceiveContext does; a larger one
// waits in the socket read itself (receive, interruptible), with no
// goroutine hand-off when its message comes. A tiny Read is most likely a
// liveness check that ends with a deadline, as net/http's server makes
// between requests (one byte, cut short by a past read deadline when the
// response is done): interrupting a socket read for it cost more than the
// hand-off (HTTP100B over tcpconn 13 % slower, 55.7 µs against 48.3 µs,
// benchstat n=12, p=0.007).
const interruptibleReadMin = 8

// readFailed maps a Receive error: a deadline is not sticky; the peer's
// close is io.EOF; anything else ends reading.
func (s *streamConn) readFailed(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return s.opError("read", os.ErrDeadlineExceeded)
	case errors.Is(err, ErrPeerClosed), peerHungUp(err):
		s.rerr = io.EOF
	case errors.Is(err, ErrClosed):
		s.rerr = s.opError("read", net.ErrClosed)
	default:
		s.rerr = s.opError("read", err)
	}
	return s.rerr
}

// peerHungUp reports a socket the peer closed between frames (its FIN,
// or a write that found its end closed): for a stream, the end of it, as
// on TCP. A cut inside a frame is not that (truncated).
func peerHungUp(err error) bool {
	return errors.Is(err, ErrLinkLost) && errors.Is(err, io.EOF) && !errors.Is(err, ErrProtocol)
}

func (s *streamConn) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	n := 0
	for n < len(p) {
		if s.werr != nil {
			return n, s.werr
		}
		ctx := s.wdl.context()
		if ctx.Err() != nil {
			return n, s.opError("write", os.ErrDeadlineExceeded)
		}
		chunk := p[n:min(len(p), n+s.chunk())]
		if err := s.c.SendContext(ctx, chunk); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return n, s.opError("write", os.ErrDeadlineExceeded)
			}
			if errors.Is(err, ErrClosed) {
				err = net.ErrClosed
			}
			s.werr = s.opError("write", err)
			continue
		}
		n += len(chunk)
	}
	return n, nil
}

// chunk is the largest message a Write sends: streamChunk, or less if
// either side's MaxMessageSize is smaller, and at most half the window the
// peer gives the ID to start with (before its HELLO, the protocol's
// InitialWindow).
func (s *streamConn) chunk() int {
	n := min(streamChunk, s.c.cfg.MaxMessageSize)
	if b := s.c.bind.Load(); b != nil && b.link.helloReceived() {
		n = min(n, int(min(b.link.peer.maxMessage, 1<<30)), int(b.link.peer.streamWindow/2))
	} else {
		n = min(n, InitialWindow/2)
	}
	return n
}

func (s *streamConn) Close() error {
	s.rdl.stop()
	s.wdl.stop()
	return s.c.Close()
}

func (s *streamConn) LocalAddr() net.Addr {
	if a := s.c.LocalAddr(); a != nil {
		return a
	}
	return logicalAddr(s.c.id)
}

func (s *streamConn) RemoteAddr() net.Addr {
	if a := s.c.RemoteAddr(); a != nil {
		return a
	}
	return logicalAddr(s.c.id)
}

// interruptRead wakes a Read blocked reading the socket for itself (it
// waits in the read as a plain Receive does, with no goroutine hand-off:
// receive, interruptible), so that it sees its deadline passed.
func (s *streamConn) interruptRead() {
	if b := s.c.bind.Load(); b != nil {
		b.link.interruptDirect()
	}
}

func (s *streamConn) SetDeadline(t time.Time) error {
	s.rdl.set(t)
	s.wdl.set(t)
	return nil
}

func (s *streamConn) SetReadDeadline(t time.Time) error  { s.rdl.set(t); return nil }
func (s *streamConn) SetWriteDeadline(t time.Time) error { s.wdl.set(t); return nil }

func (s *streamConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcpconn", Source: s.LocalAddr(), Addr: s.RemoteAddr(), Err: err}
}

// logicalAddr stands for a connection's address while it has no socket
// (closed): its ID.
type logicalAddr string

func (a logicalAddr) Network() string { return "tcpconn" }
func (a logicalAddr) String() string  { return string(a) }

// deadline is one direction's deadline: a channel closed when it passes,
// which the calls of that direction wait on (through context), and then
// interrupt, if set, called to wake a call blocked in a socket read.
type deadline struct {
	mu        sync.Mutex
	timer     *time.Timer
	done      chan struct{} // closed once the deadline passed; nil: none yet
	interrupt func()        // set once, before any call
}

// expire closes done and interrupts: in this order, so that a call the
// interrupt wakes finds its context ended.
func (d *deadline) expire(done chan struct{}) {
	close(done)
	if d.interrupt != nil {
		d.interrupt()
	}
}

// set moves the deadline to t (zero: none).
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.done // its callback is closing done: let it finish
	}
	d.timer = nil
	if d.done == nil || isClosed(d.done) {
		d.done = make(chan struct{})
	}
	if t.IsZero() {
		return
	}
	if wait := time.Until(t); wait > 0 {
		done := d.done
		d.timer = time.AfterFunc(wait, func() { d.expire(done) })
		return
	}
	d.expire(d.done)
}

// stop stops the timer (Close). A timer stopped before it fired is
// forgotten, so that a later set does not wait for a callback that will
// never run.
func (d *deadline) stop() {
	d.mu.Lock()
	if d.timer != nil && d.timer.Stop() {
		d.timer = nil
	}
	d.mu.Unlock()
}

// context returns a context that ends when the deadline passes. Calls
// waiting on it see the deadline moved: set replaces the channel only once
// it has closed, and otherwise re-arms or closes the same one.
func (d *deadline) context() deadlineContext {
	d.mu.Lock()
	if d.done == nil {
		d.done = make(chan struct{})
	}
	done := d.done
	d.mu.Unlock()
	return deadlineContext(done)
}

// deadlineContext is a context that ends when its channel closes, with
// context.DeadlineExceeded: no goroutine and no timer of its own.
type deadlineContext <-chan struct{}

func (c deadlineContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c deadlineContext) Done() <-chan struct{}       { return c }
func (c deadlineContext) Value(any) any               { return nil }

// parkedContext is a deadline's context for a Read that waits parked
// (interruptibleReadMin): the same channel, but not interruptible.
type parkedContext struct{ deadlineContext }

func (c deadlineContext) Err() error {
	if isClosed(c) {
		return context.DeadlineExceeded
	}
	return nil
}
