// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCloseFinished: on the wire, CLOSE(id, finished) ends what the server
// reads for the ID (after what was queued) but not what it sends; the
// server's Close then closes the ID.
func TestCloseFinished(t *testing.T) {
	cfg := &Config{KeepAliveInterval: -1}
	ln, err := Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := dialRaw(t, ln.Addr().String())
	p.expectHello(helloBytes(nil))
	p.write(helloBytes(nil), goldenOpen, goldenData, goldenFinished)

	ctx := testContext(t)
	c, err := ln.AcceptContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.ReceiveContext(ctx); err != nil || string(got) != "xyz" {
		t.Fatalf("Receive = %q, %v; want the message sent before the end", got, err)
	}
	_, err = c.ReceiveContext(ctx)
	if !errors.Is(err, ErrPeerClosed) || !errors.Is(err, io.EOF) {
		t.Fatalf("Receive after CLOSE(finished) = %v, want ErrPeerClosed", err)
	}
	if err := c.SendContext(ctx, []byte("xyz")); err != nil {
		t.Fatalf("Send after the peer finished: %v", err)
	}
	p.expectFrame(goldenData)
	c.Close()
	p.expectFrame(goldenClose)
}

// TestMoveOnLinkAge: a plain address behind a Listener whose links age
// (as behind an L4 load balancer): every ID, and the catch-all (the seed's
// NewConnection), moves to a new link at each age, with no error and no
// lost message, messages in parts included.
func TestMoveOnLinkAge(t *testing.T) {
	for _, size := range []int{100, 300 << 10} {
		t.Run(fmt.Sprint("size=", size), func(t *testing.T) {
			ln, err := Listen("tcp", "127.0.0.1:0", &Config{MaxLinkAge: 30 * time.Millisecond, MaxLinkAgeGrace: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			serveListener(t, ln, echoLoop)
			cl, err := NewClient(nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			addr := ln.Addr().String()
			conns := []*Connection{cl.Open(addr, WithID("a")), cl.Open(addr, WithID("b")), cl.Open(addr)}
			first := map[string]bool{}
			mustRoundTrip(t, conns[0], []byte("x"))
			for _, ls := range cl.Links() {
				first[ls.ID] = true
			}
			msg := pattern(size, 1)
			done := make(chan error, len(conns))
			for _, c := range conns {
				go func() {
					// Round trips until c is on a link of a later generation.
					for moved := false; !moved; {
						if err := roundTrip(testContext(t), c, msg); err != nil {
							done <- fmt.Errorf("%q: %w", c.ID(), err)
							return
						}
						l := linkOf(c)
						moved = l != nil && !first[l.id.Load().String()]
					}
					err := roundTrip(testContext(t), c, msg)
					if err != nil {
						err = fmt.Errorf("%q: %w", c.ID(), err)
					}
					done <- err
				}()
			}
			for range conns {
				if err := await(t, done, testTimeout, "round trips across a link age"); err != nil {
					t.Fatal(err)
				}
			}
			if n := cl.Stats().Reconnects; n != 0 {
				t.Errorf("%d reconnects: a link was lost, not drained", n)
			}
		})
	}
}

// TestMoveKeepsServerPushes: a server that pushes a numbered stream on an
// ID without being asked (one handler at a time per ID, each going on
// from where the one before stopped) loses nothing and reorders nothing
// while its links age: the client reads the old link until the server
// closes the ID there, then the new one.
func TestMoveKeepsServerPushes(t *testing.T) {
	ln, err := Listen("tcp", "127.0.0.1:0", &Config{MaxLinkAge: 20 * time.Millisecond, MaxLinkAgeGrace: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var turn sync.Mutex // the ID's handler that may push
	var next atomic.Uint64
	serveListener(t, ln, func(c *Connection) {
		eof := async(func() error { // the client finished with this link
			for {
				if _, err := c.Receive(); err != nil {
					return err
				}
			}
		})
		turn.Lock()
		defer turn.Unlock()
		msg := make([]byte, 8)
		for {
			select {
			case <-eof:
				return
			default:
			}
			binary.BigEndian.PutUint64(msg, next.Load())
			if c.Send(msg) != nil {
				return
			}
			next.Add(1)
		}
	})
	cl, err := NewClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c := cl.Open(ln.Addr().String(), WithID("feed"))
	mustSend(t, c, []byte("start")) // opens the ID; the first handler reads it
	links := map[string]bool{}
	for want := uint64(0); want < 20000 || len(links) < 4; want++ {
		got := recvWithin(t, c, testTimeout)
		if n := binary.BigEndian.Uint64(got); n != want {
			t.Fatalf("message %d, want %d (links so far: %d)", n, want, len(links))
		}
		if l := linkOf(c); l != nil {
			links[l.id.Load().String()] = true
		}
	}
}

// TestMoveWhileServerWaitsForCredit: a server handler whose Send waits for
// credit (its client has not read yet) when the client finishes the ID as
// its link ages keeps waiting, and every reply reaches the client, in
// order: the client reads the old link until the handler closes the ID.
// If the client closes instead, the waiting Send fails at once.
func TestMoveWhileServerWaitsForCredit(t *testing.T) {
	for _, clientCloses := range []bool{false, true} {
		t.Run(fmt.Sprint("clientCloses=", clientCloses), func(t *testing.T) {
			testMoveWhileServerWaitsForCredit(t, clientCloses)
		})
	}
}

func testMoveWhileServerWaitsForCredit(t *testing.T, clientCloses bool) {
	const replies, size = 24, 16 << 10 // 384 KiB: six times the window
	ln, err := Listen("tcp", "127.0.0.1:0", &Config{StreamWindow: InitialWindow, MaxLinkAge: 50 * time.Millisecond, MaxLinkAgeGrace: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int64
	handlerErr := make(chan error, 1)
	serveListener(t, ln, func(c *Connection) {
		if _, err := c.Receive(); err != nil {
			return // the ID at a later link, which the client only moved through
		}
		for i := range replies {
			if err := c.Send(pattern(size, byte(i))); err != nil {
				handlerErr <- fmt.Errorf("reply %d: %w", i, err)
				return
			}
			sent.Add(1)
		}
		handlerErr <- nil
	})
	cl, err := NewClient(&Config{StreamWindow: InitialWindow})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c := closeAtCleanup(t, cl.Open(ln.Addr().String(), WithID("slow-reader")))
	mustSend(t, c, []byte("go"))
	// The window holds fewer than four replies: the handler's Send waits.
	eventually(t, "the server's Send to wait for credit", func() bool { return sent.Load() >= 3 })
	old := linkOf(c)
	eventually(t, "the ID moved off its aged link", func() bool {
		l := linkOf(c)
		return l != nil && l != old
	})
	if clientCloses {
		c.Close()
		if err := await(t, handlerErr, testTimeout, "the handler"); !errors.Is(err, ErrPeerClosed) {
			t.Fatalf("the server's waiting Send after the client closed: %v, want ErrPeerClosed", err)
		}
		return
	}
	for i := range replies {
		select {
		case err := <-handlerErr:
			if err != nil {
				t.Fatalf("the server's handler: %v", err)
			}
			handlerErr <- nil
		default:
		}
		got := recvWithin(t, c, testTimeout)
		if !bytes.Equal(got, pattern(size, byte(i))) {
			t.Fatalf("reply %d: %d bytes, not the %d-th pattern", i, len(got), i)
		}
	}
	if err := await(t, handlerErr, testTimeout, "the handler"); err != nil {
		t.Fatalf("the server's handler: %v", err)
	}
}
