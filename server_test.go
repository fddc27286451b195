// SPDX-License-Identifier: MIT

package tcpconn

// The server side. Wrap and WrapConnection on an accepted socket: several
// IDs sharing its reader, the catch-all answering each client ID
// (ReceiveFrom, SendTo), messages that arrive before their ID is wrapped,
// a replaced catch-all keeping what was queued for it, a server that
// speaks first. The Listener: Accept and graceful Shutdown, the accept
// backlog refusing IDs, MaxStreams under concurrent opens, and GOAWAY to a
// socket accepted as Shutdown begins.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ---- Wrap and WrapConnection ----

// Multiplexing on both sides. Several WrapConnectionWithID on one accepted
// socket share its single reader, and each receives only the messages of
// its ID (the original TCP-Conn README's "Server with Multiple Logical
// Connections").
func TestServerMultiplexingWrapWithID(t *testing.T) {
	ln := listenTCP(t)
	ids := []string{"session-1", "session-2", "session-3"}
	serveConns(t, ln, func(conn net.Conn) {
		var wg sync.WaitGroup
		for _, id := range ids {
			s := WrapConnectionWithID(conn, id, 5*time.Minute)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer s.Close()
				for {
					data, err := s.Receive()
					if err != nil {
						return
					}
					// Reply with the session that received it, so that a
					// misrouted message is visible at the client.
					if s.Send(append([]byte(s.ID()+":"), data...)) != nil {
						return
					}
				}
			}()
		}
		wg.Wait()
	})
	addr := ln.Addr().String()
	var clients []*Connection
	for _, id := range ids {
		clients = append(clients, closeAtCleanup(t, NewConnectionWithID(addr, id, 5*time.Minute)))
	}
	const rounds = 50
	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := testContext(t)
			for i := range rounds {
				msg := fmt.Sprintf("%s message %d", c.ID(), i)
				if err := c.SendContext(ctx, []byte(msg)); err != nil {
					errs <- err
					return
				}
				got, err := c.ReceiveContext(ctx)
				if err != nil {
					errs <- err
					return
				}
				if want := c.ID() + ":" + msg; string(got) != want {
					errs <- fmt.Errorf("%s got %q, want %q", c.ID(), got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if l := linkOf(clients[0]); l == nil || linkOf(clients[1]) != l || linkOf(clients[2]) != l {
		t.Error("the client connections do not share one link")
	}
}

// The original TCP-Conn API's plain echo server (WrapConnection +
// Receive/Send) answers multiplexed clients made with its constructors on
// one socket, each getting back exactly its own messages.
func TestCatchAllAnswersEachClientID(t *testing.T) {
	ln := listenTCP(t)
	accepted := serveEcho(t, ln)
	addr := ln.Addr().String()
	conn1 := closeAtCleanup(t, NewConnectionWithID(addr, "user-session", 5*time.Minute))
	conn2 := closeAtCleanup(t, NewConnectionWithID(addr, "admin-session", 5*time.Minute))
	const rounds = 200
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, c := range []*Connection{conn1, conn2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := testContext(t)
			for i := range rounds {
				// Pipelined: several messages in flight from both IDs.
				for j := range 3 {
					if err := c.SendContext(ctx, []byte(fmt.Sprintf("%s %d/%d", c.ID(), i, j))); err != nil {
						errs <- err
						return
					}
				}
				for j := range 3 {
					got, err := c.ReceiveContext(ctx)
					if err != nil {
						errs <- err
						return
					}
					if want := fmt.Sprintf("%s %d/%d", c.ID(), i, j); string(got) != want {
						errs <- fmt.Errorf("%s got %q, want %q", c.ID(), got, want)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(accepted); n != 1 {
		t.Errorf("%d sockets accepted, want 1", n)
	}
}

func TestCatchAllReceiveFromSendTo(t *testing.T) {
	ln := listenTCP(t)
	conns := make(chan net.Conn, 1)
	serveConns(t, ln, func(conn net.Conn) { conns <- conn })
	addr := ln.Addr().String()
	ids := []string{"c-1", "c-2", "c-3", "c-4"}
	var clients []*Connection
	for _, id := range ids {
		c := closeAtCleanup(t, NewConnectionWithID(addr, id, 0))
		clients = append(clients, c)
	}
	first := make(chan error, 1)
	go func() { first <- clients[0].SendContext(testContext(t), []byte("from c-1")) }()
	conn := <-conns
	t.Cleanup(func() { conn.Close() })
	srv := mustWrap(t, conn)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for _, c := range clients[1:] {
		mustSend(t, c, []byte("from "+c.ID()))
	}
	seen := map[string]bool{}
	for range ids {
		from, data, err := srv.ReceiveFrom(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != "from "+from || seen[from] {
			t.Fatalf("ReceiveFrom returned %q from %q (seen: %v)", data, from, seen)
		}
		seen[from] = true
	}
	// Answer in reverse order: replies go by ID, not to the last sender.
	for i := len(ids) - 1; i >= 0; i-- {
		if err := srv.SendTo(testContext(t), ids[i], []byte("to "+ids[i])); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range clients {
		if got := mustReceive(t, c); string(got) != "to "+c.ID() {
			t.Fatalf("%s got %q", c.ID(), got)
		}
	}
}

// Messages that arrive for an ID before the server wraps it are kept and
// delivered once it is wrapped, or to a catch-all installed later.
func TestRegistrationRaceKeepsEarlyMessages(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(conn net.Conn) *Connection
	}{
		{"wrapped with its ID", func(conn net.Conn) *Connection { return WrapConnectionWithID(conn, "late", 0) }},
		{"catch-all installed later", func(conn net.Conn) *Connection { return WrapConnection(conn, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := listenTCP(t)
			addr := ln.Addr().String()
			// The client's dial waits for the server's hello, so the server
			// must wrap something first: the "sync" ID.
			got := make(chan net.Conn, 1)
			serveConns(t, ln, func(conn net.Conn) { got <- conn })
			late := closeAtCleanup(t, NewConnectionWithID(addr, "late", 0))
			syncC := closeAtCleanup(t, NewConnectionWithID(addr, "sync", 0))
			sendErr := make(chan error, 1)
			go func() { sendErr <- syncC.SendContext(testContext(t), []byte("after")) }()
			var conn net.Conn
			select {
			case conn = <-got:
				t.Cleanup(func() { conn.Close() })
			case <-time.After(testTimeout):
				t.Fatal("no socket")
			}
			srvSync := mustWrap(t, conn, WithID("sync"))
			if err := <-sendErr; err != nil {
				t.Fatal(err)
			}
			const n = 20
			for i := range n {
				mustSend(t, late, []byte(fmt.Sprint("early ", i)))
			}
			mustSend(t, syncC, []byte("marker"))
			// The socket is read in order: once "marker" is received, every
			// early message has reached the server, before "late" exists.
			if m := mustReceive(t, srvSync); string(m) != "after" {
				t.Fatalf("sync got %q", m)
			}
			if m := mustReceive(t, srvSync); string(m) != "marker" {
				t.Fatalf("sync got %q", m)
			}
			srv := closeAtCleanup(t, tc.wrap(conn))
			for i := range n {
				from, m, err := srv.ReceiveFrom(testContext(t))
				if err != nil {
					t.Fatal(err)
				}
				if want := fmt.Sprint("early ", i); string(m) != want || from != "late" {
					t.Fatalf("got %q from %q, want %q from \"late\"", m, from, want)
				}
			}
			// The reply reaches the client's "late" connection.
			mustSend(t, srv, []byte("reply"))
			if m := mustReceive(t, late); string(m) != "reply" {
				t.Fatalf("late got %q", m)
			}
		})
	}
}

// TestContractCatchAllReplacementKeepsQueued: messages queued for a server
// catch-all that is closed before receiving them go to the next catch-all
// of the socket, with their IDs, and the new one answers them.
func TestContractCatchAllReplacementKeepsQueued(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		ln, cfg := tr.listen(t, nil)
		addr := ln.Addr().String()
		k := openClient(t, addr, cfg, "keep")
		hello := async(func() error { return k.Send([]byte("hello")) })
		conn := acceptOne(t, ln)
		keeper := wrapServer(t, conn, "keep") // keeps the socket open
		c1 := wrapServer(t, conn, "")
		if err := await(t, hello, testTimeout, "Send on keep"); err != nil {
			t.Fatal(err)
		}
		if got := recvWithin(t, keeper, testTimeout); string(got) != "hello" {
			t.Fatalf("keeper received %q", got)
		}
		x := openClient(t, addr, cfg, "x")
		y := openClient(t, addr, cfg, "y")
		want := map[string][]string{"x": {"x1", "x2"}, "y": {"y1"}}
		mustSend(t, x, []byte("x1"))
		mustSend(t, y, []byte("y1"))
		mustSend(t, x, []byte("x2"))
		// The socket is written and read in order: once "sync" is here,
		// x's and y's messages are queued for the catch-all.
		mustSend(t, k, []byte("sync"))
		if got := recvWithin(t, keeper, testTimeout); string(got) != "sync" {
			t.Fatalf("keeper received %q", got)
		}
		if err := within(t, prompt, "the first catch-all's Close", c1.Close); err != nil {
			t.Fatal(err)
		}
		c2 := wrapServer(t, conn, "")
		got := map[string][]string{}
		ctx, cancel := context.WithTimeout(context.Background(), promptRemote)
		defer cancel()
		for range 3 { // already queued on this side
			from, data, err := c2.ReceiveFrom(ctx)
			if err != nil {
				t.Fatalf("the new catch-all: %v (got %v so far, want %v)", err, got, want)
			}
			got[from] = append(got[from], string(data))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("the new catch-all received %v, want %v", got, want)
		}
		if err := c2.SendTo(testContext(t), "x", []byte("reply")); err != nil {
			t.Fatal(err)
		}
		if got := recvWithin(t, x, testTimeout); string(got) != "reply" {
			t.Fatalf("x received %q", got)
		}
	})
}

// TestSeedUsageServerSpeaksFirst: a client Connection is announced to the
// peer when it is created, so a server that speaks first reaches a client
// that only receives: (wrap) the server wraps the ID and sends; (listener)
// Listener.Accept returns the client's logical connection, with its ID,
// although the client never sent anything.
func TestSeedUsageServerSpeaksFirst(t *testing.T) {
	welcome := []byte("welcome")
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		for _, id := range []string{"a", ""} {
			name := "ID " + id
			if id == "" {
				name = "catch-all"
			}
			t.Run("wrap/"+name, func(t *testing.T) {
				ln, cfg := tr.listen(t, nil)
				c := openClient(t, ln.Addr().String(), cfg, id)
				var got []byte
				received := async(func() (err error) {
					got, err = c.Receive()
					return err
				})
				s := wrapServer(t, acceptOne(t, ln), id)
				if err := within(t, prompt, "the server's Send", func() error { return s.Send(welcome) }); err != nil {
					t.Fatalf("server Send: %v", err)
				}
				if err := await(t, received, testTimeout, "the client's Receive"); err != nil {
					t.Fatalf("client Receive: %v", err)
				}
				if !bytes.Equal(got, welcome) {
					t.Fatalf("client received %q, want %q", got, welcome)
				}
			})
			t.Run("listener/"+name, func(t *testing.T) {
				ln, cfg := tr.listen(t, nil)
				srv, err := NewListener(ln, nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { srv.Close() })
				c := openClient(t, ln.Addr().String(), cfg, id)
				ctx, cancel := context.WithTimeout(context.Background(), promptRemote)
				defer cancel()
				s, err := srv.AcceptContext(ctx)
				if err != nil {
					t.Fatalf("Accept did not return the client's logical connection (the client only created it): %v", err)
				}
				closePromptlyAtCleanup(t, s)
				if s.ID() != id {
					t.Fatalf("Accept returned ID %q, want %q", s.ID(), id)
				}
				if err := within(t, prompt, "the server's Send", func() error { return s.Send(welcome) }); err != nil {
					t.Fatalf("server Send: %v", err)
				}
				if got := recvWithin(t, c, testTimeout); !bytes.Equal(got, welcome) {
					t.Fatalf("client received %q, want %q", got, welcome)
				}
			})
		}
	})
}

// ---- Listener ----

func TestListenerAcceptAndGracefulShutdown(t *testing.T) {
	ln, err := Listen("tcp", "127.0.0.1:0", &Config{KeepAliveInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	addr := ln.Addr().String()
	ids := []string{"alpha", "beta"}
	var clients []*Connection
	for _, id := range ids {
		c := mustDial(t, addr, WithID(id))
		mustSend(t, c, []byte("hello from "+id))
		clients = append(clients, c)
	}
	accepted := map[string]*Connection{}
	for range ids {
		s, err := ln.AcceptContext(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		closeAtCleanup(t, s)
		if got := mustReceive(t, s); string(got) != "hello from "+s.ID() {
			t.Fatalf("%s received %q", s.ID(), got)
		}
		accepted[s.ID()] = s
	}
	for _, id := range ids {
		if accepted[id] == nil {
			t.Fatalf("Accept did not return %q (got %v)", id, accepted)
		}
	}

	shutdown := make(chan error, 1)
	go func() { shutdown <- ln.Shutdown(testContext(t)) }()
	// While shutting down, accepted connections keep working...
	for i, c := range clients {
		s := accepted[c.ID()]
		mustSend(t, c, []byte("during shutdown"))
		if got := mustReceive(t, s); string(got) != "during shutdown" {
			t.Fatalf("got %q", got)
		}
		mustSend(t, s, []byte("reply"))
		if got := mustReceive(t, c); string(got) != "reply" {
			t.Fatalf("got %q", got)
		}
		select {
		case err := <-shutdown:
			t.Fatalf("Shutdown returned (%v) while %d connections were open", err, len(clients)-i)
		default:
		}
		// ...and Shutdown returns once the last one is closed.
		c.Close()
	}
	select {
	case err := <-shutdown:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Shutdown did not return after every connection closed")
	}
	if _, err := ln.AcceptContext(testContext(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Accept after Shutdown: %v, want ErrClosed", err)
	}
}

// TestContractRefusedIDs: a Listener with an accept backlog of 1 that
// nobody accepts from refuses the second and third logical connections a
// client opens; the refused ones see ErrRefused on both Receive and Send
// (refusal is asynchronous), and the one in the backlog works once accepted.
func TestContractRefusedIDs(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		ln, cfg := tr.listen(t, nil)
		srv, err := NewListener(ln, &Config{AcceptBacklog: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		addr := ln.Addr().String()
		ids := []string{"a", "b", "c"}
		clients := make([]*Connection, len(ids))
		got := make([][]byte, len(ids))
		recv := make([]<-chan error, len(ids))
		for i, id := range ids {
			clients[i] = openClient(t, addr, cfg, id)
			err := within(t, prompt, "Send on "+id, func() error { return clients[i].Send([]byte("hi " + id)) })
			if err != nil && !errors.Is(err, ErrRefused) {
				t.Fatalf("Send on %q: %v", id, err)
			}
			recv[i] = async(func() (err error) {
				got[i], err = clients[i].Receive()
				return err
			})
		}
		refused := map[int]error{}
		eventuallyWithin(t, promptRemote, "two of three IDs refused", func() bool {
			for i, ch := range recv {
				select {
				case err := <-ch:
					refused[i] = err
				default:
				}
			}
			return len(refused) >= 2
		})
		inBacklog := -1
		for i, id := range ids {
			err, ok := refused[i]
			if !ok {
				inBacklog = i
				continue
			}
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("Receive on %q: %v, want ErrRefused", id, err)
			}
			eventuallyWithin(t, promptRemote, "Send on refused "+id+" to return ErrRefused", func() bool {
				err := within(t, prompt, "Send on refused "+id, func() error { return clients[i].Send([]byte("again")) })
				return errors.Is(err, ErrRefused)
			})
		}
		if inBacklog < 0 {
			t.Fatal("all three IDs were refused; the backlog holds one")
		}
		ctx, cancel := context.WithTimeout(context.Background(), promptRemote)
		defer cancel()
		s, err := srv.AcceptContext(ctx)
		if err != nil {
			t.Fatalf("Accept: %v", err)
		}
		closePromptlyAtCleanup(t, s)
		if s.ID() != ids[inBacklog] {
			t.Fatalf("Accept returned %q, want %q (the one not refused)", s.ID(), ids[inBacklog])
		}
		if msg := recvWithin(t, s, testTimeout); string(msg) != "hi "+s.ID() {
			t.Fatalf("server received %q", msg)
		}
		if err := within(t, prompt, "the server's Send", func() error { return s.Send([]byte("welcome")) }); err != nil {
			t.Fatal(err)
		}
		if err := await(t, recv[inBacklog], testTimeout, "Receive on the accepted ID"); err != nil || string(got[inBacklog]) != "welcome" {
			t.Fatalf("Receive on %q: %q, %v", s.ID(), got[inBacklog], err)
		}
	})
}

// TestContractStreamLimitUnderConcurrentOpens: 32 goroutines open distinct
// IDs on one socket at once against a server allowing 8 logical
// connections: the server never accepts more than 8, the others see
// ErrRefused or ErrTooManyStreams (never a protocol error or a lost link),
// and a bystander keeps its link.
func TestContractStreamLimitUnderConcurrentOpens(t *testing.T) {
	const maxStreams, openers = 8, 32
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		ln, cfg := tr.listen(t, nil)
		srv, err := NewListener(ln, &Config{MaxStreams: maxStreams})
		if err != nil {
			t.Fatal(err)
		}
		var accepted atomic.Int64
		serveListener(t, srv, func(c *Connection) {
			accepted.Add(1)
			echoHandler(c)
		})
		addr := ln.Addr().String()
		b := openClient(t, addr, cfg, "bystander")
		mustRoundTrip(t, b, []byte("first"))
		l0 := linkOf(b)
		clients := make([]*Connection, openers)
		for i := range clients {
			clients[i] = openClient(t, addr, cfg, fmt.Sprintf("s%02d", i))
		}
		start := make(chan struct{})
		errs := make([]error, openers)
		var wg sync.WaitGroup
		for i, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = roundTrip(testContext(t), c, []byte(c.ID()))
			}()
		}
		close(start)
		within(t, testTimeout+prompt, "the 32 round trips", func() error { wg.Wait(); return nil })
		ok := 0
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, ErrRefused) && !errors.Is(err, ErrTooManyStreams):
				t.Errorf("%s: %v, want success, ErrRefused or ErrTooManyStreams", clients[i].ID(), err)
			}
		}
		t.Logf("figures: %d of %d concurrent opens round-tripped beside the bystander, %d accepted by the server (MaxStreams %d)", ok, openers, accepted.Load(), maxStreams)
		if n := accepted.Load(); n > maxStreams {
			t.Errorf("the server accepted %d logical connections on one socket, MaxStreams is %d", n, maxStreams)
		}
		if ok < 1 || ok > maxStreams-1 {
			t.Errorf("%d of %d round trips succeeded beside the bystander, want 1..%d", ok, openers, maxStreams-1)
		}
		mustRoundTrip(t, b, []byte("still here"))
		if linkOf(b) != l0 {
			t.Error("the bystander's link changed (the link failed)")
		}
	})
}

// gateListener holds the next socket it accepts once armed, until Close is
// called: Accept then returns it while Close runs, an accept racing
// Listener.Shutdown (which closes the net.Listener first).
type gateListener struct {
	net.Listener
	armed  atomic.Bool
	held   chan struct{}
	closed chan struct{}
	once   sync.Once
}

func newGateListener(ln net.Listener) *gateListener {
	return &gateListener{Listener: ln, held: make(chan struct{}, 1), closed: make(chan struct{})}
}

func (l *gateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil && l.armed.Swap(false) {
		l.held <- struct{}{}
		<-l.closed
	}
	return c, err
}

func (l *gateListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.closed) })
	return err
}

// TestContractShutdownGoAwayRacesAccept: Listener.Shutdown sends GOAWAY on
// every link, also one whose socket is accepted at the same moment: while
// Shutdown waits for an open logical connection (the holder's), a peer
// whose socket was accepted as Shutdown began (a raw peer, to read exactly
// what the server sends) receives GOAWAY, or its socket ends.
func TestContractShutdownGoAwayRacesAccept(t *testing.T) {
	const rounds = 50
	for i := range rounds {
		gl := newGateListener(listenTCP(t))
		srv, err := NewListener(gl, &Config{KeepAliveInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		addr := srv.Addr().String()
		holder := openClient(t, addr, &Config{KeepAliveInterval: -1}, "holder")
		mustSend(t, holder, []byte("hold"))
		ctx, cancel := context.WithTimeout(context.Background(), promptRemote)
		h, err := srv.AcceptContext(ctx)
		cancel()
		if err != nil {
			t.Fatalf("round %d: Accept of the holder: %v", i, err)
		}
		closePromptlyAtCleanup(t, h)

		gl.armed.Store(true)
		racer := dialRaw(t, addr)
		racer.write(helloBytes(nil))
		select {
		case <-gl.held:
		case <-time.After(promptRemote):
			t.Fatalf("round %d: the racer's socket was not accepted", i)
		}
		// Shutdown's context outlives the wait below: the holder keeps it
		// waiting, so only GOAWAY (or a fault) ends the racer's socket.
		sctx, scancel := context.WithTimeout(context.Background(), 2*testTimeout)
		defer scancel()
		shut := async(func() error { return srv.Shutdown(sctx) })
		racer.conn.SetReadDeadline(time.Now().Add(promptRemote))
		for {
			f, err := readRawFrame(racer.br)
			if isTimeout(err) {
				t.Fatalf("round %d: no GOAWAY within %v on the socket accepted as Shutdown began", i, promptRemote)
			}
			if err != nil || len(f) > 1 && f[0] == controlMarker && f[1] == frameGoAway {
				break // GOAWAY, or the socket ended
			}
		}
		if err := within(t, prompt, "Close of the holder", holder.Close); err != nil {
			t.Fatal(err)
		}
		racer.conn.Close()
		if err := await(t, shut, testTimeout, "Shutdown once the holder closed"); err != nil {
			t.Fatalf("round %d: Shutdown: %v", i, err)
		}
	}
}
