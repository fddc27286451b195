// SPDX-License-Identifier: MIT

package tcpconn

// The client side: one socket per address shared by every client Connection
// to it and closed with the last one, an ID closed and at once reopened on a
// live socket, auto-reconnect after the socket is lost, and the dial's
// failures (Dial reports its error at once; a plain Send whose dial fails
// gets a link error; a server of another protocol version is refused).
// The Client type's own scope (its sockets, Stats, Connections) is tested in
// pool_test.go.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// Client pooling. Every client Connection to one address shares one socket;
// it closes (the server reads EOF) when the last one closes or idles out,
// and a later Connection dials a new one.
func TestClientPoolingSharesOneSocket(t *testing.T) {
	ln := listenTCP(t)
	type socket struct{ ended chan error }
	sockets := make(chan socket, 16)
	serveConns(t, ln, func(conn net.Conn) {
		s := socket{ended: make(chan error, 1)}
		sockets <- s
		c := WrapConnection(conn, 0)
		defer c.Close()
		for {
			data, err := c.Receive()
			if err != nil {
				s.ended <- err
				return
			}
			if c.Send(data) != nil {
				return
			}
		}
	})
	addr := ln.Addr().String()
	nextSocket := func() socket {
		t.Helper()
		select {
		case s := <-sockets:
			return s
		case <-time.After(testTimeout):
			t.Fatal("no socket accepted")
			return socket{}
		}
	}
	noMoreSockets := func() {
		t.Helper()
		select {
		case <-sockets:
			t.Fatal("a second socket was dialled to the same address")
		default:
		}
	}
	serverSawEOF := func(s socket) {
		t.Helper()
		select {
		case err := <-s.ended:
			if !errors.Is(err, io.EOF) {
				t.Fatalf("server Receive ended with %v, want the peer's close (EOF)", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("the shared socket was not closed")
		}
	}
	open := func(idle time.Duration) []*Connection {
		var cs []*Connection
		for _, id := range []string{"user-1", "user-2", "user-3"} {
			c := closeAtCleanup(t, NewConnectionWithID(addr, id, idle))
			mustRoundTrip(t, c, []byte("hi from "+id))
			cs = append(cs, c)
		}
		return cs
	}

	t.Run("last close", func(t *testing.T) {
		cs := open(0)
		s := nextSocket()
		noMoreSockets()
		for i, c := range cs[:2] {
			c.Close()
			mustRoundTrip(t, cs[2], []byte(fmt.Sprint("still open after ", i+1, " closed")))
		}
		noMoreSockets()
		cs[2].Close()
		serverSawEOF(s)
	})
	t.Run("idle out", func(t *testing.T) {
		cs := open(300 * time.Millisecond)
		s := nextSocket()
		noMoreSockets()
		serverSawEOF(s)
		// A Connection that idled out dials again on its next use.
		mustRoundTrip(t, cs[0], []byte("back"))
		s = nextSocket()
		noMoreSockets()
		for _, c := range cs {
			c.Close()
		}
		serverSawEOF(s)
	})
	t.Run("later connection dials again", func(t *testing.T) {
		c := closeAtCleanup(t, NewConnectionWithID(addr, "later", 0))
		mustRoundTrip(t, c, []byte("new socket"))
		s := nextSocket()
		c.Close()
		serverSawEOF(s)
	})
}

// TestContractReopenIDWhileClosePending: closing an ID and opening it again
// at once, 300 times with window updates in flight, never fails the link: a
// bystander on the same socket keeps its link and keeps round-tripping.
func TestContractReopenIDWhileClosePending(t *testing.T) {
	const rounds = 300
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		ln, cfg := tr.listen(t, &Config{StreamWindow: 64 << 10})
		serveConns(t, ln, func(conn net.Conn) {
			c, err := Wrap(conn, WithConfig(&Config{StreamWindow: 64 << 10}))
			if err == nil {
				echoLoop(c)
			}
		})
		addr := ln.Addr().String()
		b := openClient(t, addr, cfg, "b")
		mustRoundTrip(t, b, []byte("bystander"))
		l0 := linkOf(b)
		ctx := testContext(t)
		for i := range rounds {
			x := Open(addr, WithID("x"), WithConfig(cfg))
			for j := range 3 {
				if err := roundTrip(ctx, x, pattern(40<<10, byte(i+j))); err != nil {
					x.Close()
					t.Fatalf("round %d, message %d on the reopened x: %v", i, j, err)
				}
			}
			if err := within(t, prompt, "Close of x", x.Close); err != nil {
				t.Fatal(err)
			}
			if i%10 == 9 {
				if err := roundTrip(ctx, b, []byte("bystander")); err != nil {
					t.Fatalf("round %d: the bystander: %v", i, err)
				}
				if linkOf(b) != l0 {
					t.Fatalf("round %d: the bystander's link changed (the link failed)", i)
				}
			}
		}
		t.Logf("figures: %d incarnations of x, 3 round trips of 40 KiB each, over one link with 64 KiB stream windows", rounds)
	})
}

// Auto-reconnect. After the socket is lost (the server drops it, restarts
// on the same port, or the client's own socket is reset), the same client
// Connection works again. Servers never reconnect: the server Connection of
// the lost socket fails with ErrLinkLost on Send and Receive, and keeps
// failing after the client is back, still on its dead link.
func TestAutoReconnect(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart bool // the server comes back on the same port
		// cut breaks the path: srvConn is the server's accepted socket,
		// cliConn the client's.
		cut func(t *testing.T, srvConn, cliConn net.Conn)
	}{
		{"server drops the socket", false, func(t *testing.T, srvConn, _ net.Conn) { srvConn.Close() }},
		{"server restarts on the same port", true, func(t *testing.T, srvConn, _ net.Conn) { srvConn.Close() }},
		{"client's socket reset", false, func(t *testing.T, _, cliConn net.Conn) {
			// Abrupt: RST, no CLOSE or GOAWAY frame, the server only sees
			// the socket die.
			tcp, ok := cliConn.(*net.TCPConn)
			if !ok {
				t.Fatalf("%T is not a *net.TCPConn", cliConn)
			}
			tcp.SetLinger(0)
			tcp.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each socket's catch-all echoes; after an error it is kept open
			// (not closed, which would make it report ErrClosed) until the
			// test has looked at it.
			finished := make(chan struct{})
			defer close(finished) // before the cleanups, which wait for the handlers
			type serverSide struct {
				conn net.Conn
				c    *Connection
			}
			sides := make(chan serverSide, 16)
			ln := listenTCP(t)
			addr := ln.Addr().String()
			serveConns(t, ln, func(conn net.Conn) {
				c := WrapConnection(conn, 0)
				defer c.Close()
				sides <- serverSide{conn, c}
				for {
					data, err := c.Receive()
					if err != nil || c.Send(data) != nil {
						break
					}
				}
				<-finished
			})
			c := closeAtCleanup(t, NewConnectionWithID(addr, "reconnecting", 0))
			mustRoundTrip(t, c, []byte("before"))
			before := ReadStats().Reconnects
			cliLink := linkOf(c)
			var srv serverSide
			select {
			case srv = <-sides:
			case <-time.After(testTimeout):
				t.Fatal("no socket accepted")
			}
			srvLink := linkOf(srv.c)

			if tc.restart {
				ln.Close()
			}
			tc.cut(t, srv.conn, cliLink.conn)
			if tc.restart {
				var err error
				ln, err = net.Listen("tcp", addr)
				if err != nil {
					t.Fatalf("listen again on %s: %v", addr, err)
				}
				t.Cleanup(func() { ln.Close() })
				serveEcho(t, ln)
			}

			// The server Connection reports the loss on both calls...
			_, err := srv.c.ReceiveContext(testContext(t))
			wantErr(t, err, ErrLinkLost)
			wantErr(t, srv.c.SendContext(testContext(t), []byte("into the void")), ErrLinkLost)
			// ...the client comes back on a new socket...
			eventuallyRoundTrip(t, c, []byte("after"))
			if linkOf(c) == cliLink {
				t.Error("the client is still on its lost link")
			}
			if after := ReadStats().Reconnects; after <= before {
				t.Errorf("Stats.Reconnects = %d, was %d: want an increase", after, before)
			}
			// ...and the server Connection still fails, bound to its dead
			// link: nothing re-dialled or re-bound it.
			for range 3 {
				wantErr(t, srv.c.SendContext(testContext(t), []byte("still nothing")), ErrLinkLost)
				_, err := srv.c.ReceiveContext(testContext(t))
				wantErr(t, err, ErrLinkLost)
			}
			if l := linkOf(srv.c); l != srvLink || !l.failed() {
				t.Errorf("the server Connection is on link %p (failed: %v), want its dead link %p", l, l != nil && l.failed(), srvLink)
			}
			t.Logf("server Connection after the loss: %v", err)
		})
	}
}

func TestDialReportsErrorAtOnce(t *testing.T) {
	ln := listenTCP(t)
	addr := ln.Addr().String()
	ln.Close()
	start := time.Now()
	c, err := Dial(testContext(t), addr, WithID("x"))
	if err == nil {
		c.Close()
		t.Fatal("Dial to a closed port succeeded")
	}
	if c != nil {
		t.Error("Dial returned a Connection with its error")
	}
	wantErr(t, err, ErrLinkLost)
	if d := time.Since(start); d > testTimeout/2 {
		t.Errorf("Dial took %v to report %v", d, err)
	}
	// The original constructor dials in the background; its error surfaces on use.
	lazy := NewConnectionWithID(addr, "lazy", 0)
	defer lazy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := lazy.SendContext(ctx, []byte("x")); err == nil {
		t.Error("Send to a closed port succeeded")
	}
}

// TestContractDialErrorIsLinkError: a Send to an address where nothing
// listens, or a dial that times out (DialTimeout 200 ms), returns promptly
// an error matching ErrLinkLost or ErrHandshake, never a bare context
// error, also on the retries after the first failure.
func TestContractDialErrorIsLinkError(t *testing.T) {
	closedAddr := func(t *testing.T) (string, *Config) {
		ln := listenTCP(t)
		addr := ln.Addr().String()
		ln.Close()
		return addr, &Config{DialTimeout: 200 * time.Millisecond}
	}
	blackHole := func(t *testing.T) (string, *Config) {
		return "blackhole.invalid:1", &Config{
			DialTimeout: 200 * time.Millisecond,
			Dialer: func(ctx context.Context, _, _ string) (net.Conn, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
		}
	}
	for _, tc := range []struct {
		name   string
		target func(t *testing.T) (string, *Config)
	}{{"closed port", closedAddr}, {"dial times out", blackHole}} {
		t.Run(tc.name, func(t *testing.T) {
			addr, cfg := tc.target(t)
			c := openClient(t, addr, cfg, "a")
			var errs []error
			start := time.Now()
			eventually(t, "three failed Sends", func() bool {
				err := within(t, 2*time.Second, "Send to "+tc.name, func() error { return c.Send([]byte("x")) })
				if err != nil {
					errs = append(errs, err)
				}
				return len(errs) >= 3
			})
			for i, err := range errs {
				if !errors.Is(err, ErrLinkLost) && !errors.Is(err, ErrHandshake) {
					t.Errorf("failed Send #%d: %v, want ErrLinkLost or ErrHandshake (never a bare context error)", i, err)
				}
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("three failed Sends took %v", d)
			}
		})
	}
}

// The client side of the version check: a server that answers with the
// right magic but another protocol version makes Dial fail at once with
// ErrHandshake naming the version (no retry until the context ends), and
// the client closes that socket.
func TestDialRefusesOtherProtocolVersion(t *testing.T) {
	ln := listenTCP(t)
	ctx := testContext(t)
	dialed := make(chan error, 1)
	go func() {
		c, err := Dial(ctx, ln.Addr().String(), WithID("v1-client"))
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()
	p := newRawPeer(t, acceptOne(t, ln))
	// The client says hello without waiting for ours; read it first, since
	// a link that fails at once may never write it.
	p.expectHello(helloBytes(nil))
	p.write(helloVersion(1))
	select {
	case err := <-dialed:
		wantErr(t, err, ErrHandshake)
		if !strings.Contains(err.Error(), "protocol version 1") {
			t.Errorf("Dial error %q does not name the peer's version", err)
		}
	case <-ctx.Done():
		t.Fatal("Dial did not return")
	}
	p.expectClosed()
}
