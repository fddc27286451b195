// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"
)

// Messages that arrived whole stay receivable, in order, whatever call
// comes next: a Send that reconnects after the socket was lost, or one
// that finds the peer closed the ID.

func TestArrivedMessagesOutliveTheNextCall(t *testing.T) {
	cases := []struct {
		name      string
		id        string // the client's ID; "" is the catch-all, reached by the server's "x"
		peerClose bool   // the server closes the ID instead of losing the socket
		sendFirst bool   // the client's next call is a Send, not a Receive
	}{
		{"loss/send-first", "a", false, true},
		{"loss/receive-first", "a", false, false},
		{"loss/catch-all/send-first", "", false, true},
		{"loss/catch-all/receive-first", "", false, false},
		{"peer-close/send-first", "a", true, true},
		{"peer-close/receive-first", "a", true, false},
	}
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				ln, cfg := tr.listen(t, &Config{ReconnectBackoffMin: time.Millisecond})
				type accepted struct {
					conn net.Conn
					srv  *Connection
				}
				sockets := make(chan accepted, 4)
				srvID := tc.id
				if srvID == "" {
					srvID = "x"
				}
				serveConns(t, ln, func(conn net.Conn) {
					srv, err := Wrap(conn, WithID(srvID))
					if err != nil {
						conn.Close()
						return
					}
					// Another ID keeps the socket open once srv closes.
					if keep, err := Wrap(conn, WithID("keep")); err == nil {
						t.Cleanup(func() { keep.Close() })
					}
					sockets <- accepted{conn, srv}
				})
				c := openClient(t, ln.Addr().String(), cfg, tc.id)
				var first accepted
				select {
				case first = <-sockets:
				case <-time.After(testTimeout):
					t.Fatal("the server never accepted the client's socket")
				}
				t.Cleanup(func() { first.srv.Close() })
				want := []string{"m0", "m1", "m2"}
				for _, m := range want {
					mustSend(t, first.srv, []byte(m))
				}
				eventually(t, "three messages queued on the client", func() bool { return queued(c) == len(want) })

				var lostErr error
				if tc.peerClose {
					first.srv.Close()
					st := c.bind.Load().st
					eventually(t, "the peer's CLOSE", func() bool { return st.state.Load()&streamPeerClosed != 0 })
					lostErr = ErrPeerClosed
				} else {
					first.conn.Close()
					l := linkOf(c)
					eventually(t, "the loss of the socket", l.failed)
					lostErr = ErrLinkLost
				}

				ctx := testContext(t)
				if tc.sendFirst {
					err := c.SendContext(ctx, []byte("after"))
					switch {
					case tc.peerClose:
						wantErr(t, err, ErrPeerClosed)
					case err != nil:
						t.Fatalf("Send after the loss (it reconnects): %v", err)
					}
				}
				for _, m := range want {
					got, err := c.ReceiveContext(ctx)
					if err != nil {
						t.Fatalf("Receive, wanting %q: %v", m, err)
					}
					if string(got) != m {
						t.Fatalf("Receive: got %q, want %q", got, m)
					}
				}
				if !tc.sendFirst {
					short, cancel := context.WithTimeout(ctx, 2*prompt)
					defer cancel()
					_, err := c.ReceiveContext(short)
					wantErr(t, err, lostErr)
				}
			})
		}
	})
}

// TestCloseReleasesCarriedMessages: messages kept across a reconnect give
// their Budget hold back when the Connection closes unread.
func TestCloseReleasesCarriedMessages(t *testing.T) {
	budget := NewBudget(8 << 20)
	ln := listenTCP(t)
	sockets := make(chan net.Conn, 4)
	serveConns(t, ln, func(conn net.Conn) {
		srv, err := Wrap(conn, WithID("a"))
		if err != nil {
			conn.Close()
			return
		}
		for i := range 3 {
			srv.Send([]byte(fmt.Sprint("m", i)))
		}
		sockets <- conn
	})
	c := openClient(t, ln.Addr().String(), &Config{Budget: budget, ReconnectBackoffMin: time.Millisecond}, "a")
	conn := <-sockets
	eventually(t, "three messages queued", func() bool { return queued(c) == 3 })
	if budget.InUse() == 0 {
		t.Fatal("queued messages hold nothing from the Budget")
	}
	conn.Close()
	l := linkOf(c)
	eventually(t, "the loss of the socket", l.failed)
	mustSend(t, c, []byte("reconnect"))
	if n := c.carried.n.Load(); n != 3 {
		t.Fatalf("%d messages carried across the reconnect, want 3", n)
	}
	c.Close()
	eventually(t, "the Budget given back", func() bool { return budget.InUse() == 0 })
}
