// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestIdleReaderSleeps: while a receiver blocks reading for itself on an
// idle link, the background reader sleeps (its goroutine ends) instead of
// checking every handBackDelay (10,000 idle links polling kept a server's
// cores busy); once that receiver has its message and goes away, the
// background reader runs again and reads what arrives for others.
func TestIdleReaderSleeps(t *testing.T) {
	ln := listenTCP(t)
	srvA := make(chan *Connection, 1)
	srvB := make(chan *Connection, 1)
	serveConns(t, ln, func(conn net.Conn) {
		srvA <- mustWrap(t, conn, WithID("a"))
		srvB <- mustWrap(t, conn, WithID("b"))
	})
	a := mustDial(t, ln.Addr().String(), WithID("a"))
	b := mustDial(t, ln.Addr().String(), WithID("b"))
	mustSend(t, a, []byte("hello"))
	mustSend(t, b, []byte("hello"))
	sa, sb := <-srvA, <-srvB
	mustReceive(t, sb)
	mustReceive(t, sa)

	// A plain Receive reads the socket itself when the token is free; the
	// background reader steps back after it handed a message over, so a
	// few messages settle who reads.
	l := linkOf(sa)
	got := make(chan []byte, 1)
	receive := func() {
		go func() {
			m, err := sa.Receive()
			if err == nil {
				got <- m
			}
		}()
	}
	receive()
	for i := 0; !pollFor(200*time.Millisecond, l.direct.Load); i++ {
		if i == 20 {
			t.Fatal("no plain Receive read the socket for itself")
		}
		mustSend(t, a, []byte("settle"))
		<-got
		receive()
	}
	eventually(t, "the background reader to sleep while the receiver holds the token", l.dormant.Load)

	mustSend(t, a, []byte("wake"))
	select {
	case m := <-got:
		if string(m) != "wake" {
			t.Fatalf("got %q, want \"wake\"", m)
		}
	case <-time.After(testTimeout):
		t.Fatal("the receiver reading for itself got nothing")
	}
	// Nobody reads "a" now; a message for "b" needs the background reader.
	mustSend(t, b, []byte("for b"))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if m, err := sb.ReceiveContext(ctx); err != nil || string(m) != "for b" {
		t.Fatalf("ReceiveContext on b = %q, %v; want \"for b\"", m, err)
	}
}
