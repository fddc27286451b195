// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestIdleReaderSleeps: while a receiver blocks reading for itself on an
// idle link, the background reader sleeps (its goroutine ends) instead of
// checking every handBackDelay (10,000 idle links polling would keep a
// server's cores busy); once that receiver has its message and goes away, the
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
	for i := 0; !pollFor(200*time.Millisecond, l.token.direct.Load); i++ {
		if i == 20 {
			t.Fatal("no plain Receive read the socket for itself")
		}
		mustSend(t, a, []byte("settle"))
		<-got
		receive()
	}
	eventually(t, "the background reader to sleep while the receiver holds the token", l.token.dormant.Load)

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

// TestReceiveAppendInPlace: a ReceiveAppend that reads the socket for
// itself gets its message read straight into its buffer's spare capacity,
// and that memory is never written once the call returned: a Close in the
// middle of the payload moves what arrived to a buffer of the library's,
// and a catch-all's message whose ID is claimed while it arrives goes to
// the new owner. The message arrives in two writes over a net.Pipe, whose
// Write returns only once the library has read it all: as a data frame
// cut in its payload, and as two PARTs, cut between them or inside the
// second.
func TestReceiveAppendInPlace(t *testing.T) {
	const size = 48 << 10
	payload := pattern(size, 5)
	part := func(rest, n int) []byte { return appendPartHeader(nil, "a", rest, n) }
	framings := []struct {
		name        string
		first, then []byte // written before and after midway
	}{
		{"data frame", append(appendDataHeader(nil, "a", size), payload[:size/2]...), payload[size/2:]},
		{"parts", slices.Concat(part(size/2, size/2), payload[:size/2]), slices.Concat(part(0, size/2), payload[size/2:])},
		{"inside a part", slices.Concat(part(size/2, size/2), payload[:size/2], part(0, size/2), payload[size/2:size*3/4]), payload[size*3/4:]},
	}
	for _, tc := range []struct {
		name     string
		catchAll bool // the receiver is the catch-all, the message's ID unclaimed
		// midway runs between the payload's halves; it returns the
		// Connection the message must reach (nil: nobody, it is dropped).
		midway func(t *testing.T, ip *inPlaceFixture) *Connection
	}{
		{"whole", false, func(*testing.T, *inPlaceFixture) *Connection { return nil }},
		{"catch-all", true, func(*testing.T, *inPlaceFixture) *Connection { return nil }},
		{"closed midway", false, func(t *testing.T, ip *inPlaceFixture) *Connection {
			ip.recv.Close()
			if r := ip.result(t); !errors.Is(r.err, ErrClosed) || len(r.out) != len(ip.prefix) {
				t.Fatalf("ReceiveAppend after Close = %d bytes, %v; want the prefix, ErrClosed", len(r.out), r.err)
			}
			return nil
		}},
		{"claimed midway", true, func(t *testing.T, ip *inPlaceFixture) *Connection {
			return mustWrap(t, ip.srv, WithID("a"))
		}},
	} {
		for _, fr := range framings {
			t.Run(tc.name+"/"+fr.name, func(t *testing.T) {
				ip := newInPlaceFixture(t, tc.catchAll)
				ip.peer.write(fr.first)
				owner := tc.midway(t, ip)
				returned := ip.done == nil
				if returned { // nothing may write to the receiver's buffer any more
					for i := range ip.spare() {
						ip.spare()[i] = 0xee
					}
				}
				ip.peer.write(fr.then, dataFrame("b", "after"))
				if m := recvWithin(t, ip.bystander, testTimeout); string(m) != "after" {
					t.Fatalf("bystander got %q, want \"after\"", m)
				}
				switch {
				case owner != nil:
					if m := recvWithin(t, owner, testTimeout); !bytes.Equal(m, payload) {
						t.Fatalf("the new owner got %d bytes, want the %d-byte message", len(m), size)
					}
				case ip.done != nil:
					r := ip.result(t)
					if r.err != nil || !bytes.Equal(r.out[:len(ip.prefix)], ip.prefix) || !bytes.Equal(r.out[len(ip.prefix):], payload) {
						t.Fatalf("ReceiveAppend = %d bytes, %v; want the prefix and the %d-byte message", len(r.out), r.err, size)
					}
					if &r.out[0] != &ip.buf[0] {
						t.Error("ReceiveAppend returned a new slice: the message was not read in place")
					}
				}
				if returned {
					for i, b := range ip.spare() {
						if b != 0xee {
							t.Fatalf("byte %d of the buffer was written after ReceiveAppend returned", i)
						}
					}
				}
				if tc.catchAll && owner != nil {
					// The catch-all did not take the claimed message.
					ip.peer.write(dataFrame("z", "last"))
					if r := ip.result(t); r.err != nil || string(r.out[len(ip.prefix):]) != "last" {
						t.Fatalf("catch-all ReceiveAppend = %q, %v; want \"last\"", r.out[len(ip.prefix):], r.err)
					}
				}
			})
		}
	}
}

// TestReceiveAppendInPlaceCut: a message being read into a ReceiveAppend
// caller's buffer that never completes (the socket cut inside its payload,
// or the peer closing the ID between its parts) ends the call with the
// cause, and the caller's memory does not go to the library's free lists,
// where a later message would be read into it.
func TestReceiveAppendInPlaceCut(t *testing.T) {
	const size = 48 << 10
	for _, tc := range []struct {
		name string
		cut  func(p *rawPeer)
		want []error
		says string
	}{
		{"socket cut inside a payload", func(p *rawPeer) {
			p.write(append(appendDataHeader(nil, "a", size), pattern(size/2, 5)...))
			p.conn.Close()
		}, []error{ErrLinkLost, ErrProtocol, io.ErrUnexpectedEOF}, "inside a message payload"},
		{"ID closed between parts", func(p *rawPeer) {
			p.write(appendPartHeader(nil, "a", size/2, size/2), pattern(size/2, 5),
				appendIDControl(nil, frameClose, "a", uint32(closeNormal)))
		}, []error{ErrPeerClosed}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip := newInPlaceFixture(t, false)
			tc.cut(ip.peer)
			r := ip.result(t)
			for _, want := range tc.want {
				if !errors.Is(r.err, want) || !strings.Contains(r.err.Error(), tc.says) || len(r.out) != len(ip.prefix) {
					t.Fatalf("ReceiveAppend = %d bytes, %v; want the prefix and %v, naming %q", len(r.out), r.err, tc.want, tc.says)
				}
			}
			spare := &ip.spare()[0]
			for c := largeClassMin; c <= largeClassMax; c++ {
				for {
					b, ok := largeFree[c].tryGet()
					if !ok {
						break
					}
					if cap(b) > 0 && &b[:1][0] == spare {
						t.Fatalf("the caller's buffer is in the free list of class %d", c)
					}
				}
			}
		})
	}
}
