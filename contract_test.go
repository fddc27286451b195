// SPDX-License-Identifier: MIT

package tcpconn

// The user contract (issue 7), tested as a user uses the library: the
// seed's constructors and plain calls where the seed's README has them,
// over TCP, TLS and net.Pipe (transport_test.go). Every blocking step is
// bounded (helpers_test.go: within, await, recvWithin), so a broken
// engine fails these tests; it never hangs them.

import (
	"bytes"
	"context"
	"fmt"
	"testing"
)

// wantInitialWindow is the credit every peer grants per logical connection
// and per socket before its HELLO arrives (0-RTT sends).
const wantInitialWindow = 64 << 10

// ---- 1 and 6: the seed's usage, Send before the server accepted ----

// TestSeedUsageSendBeforeAccept: Send never waits for the peer's HELLO. A
// client sends up to the initial window before the server has accepted or
// wrapped the socket; each Send returns nil at once, and the server, which
// wraps the socket afterwards, receives every message in order. A message
// beyond the initial window waits for the HELLO and is delivered, not refused.
func TestSeedUsageSendBeforeAccept(t *testing.T) {
	type send struct {
		id  string
		msg []byte
	}
	cases := []struct {
		name  string
		sends []send
		waits bool // the sends may wait for the server (beyond the initial window)
	}{
		{"with ID", []send{{"a", []byte("hello")}}, false},
		{"catch-all", []send{{"", []byte("hello")}}, false},
		{"several in order", []send{
			{"a", []byte{}}, {"a", []byte("1")}, {"a", pattern(100, 2)}, {"a", pattern(16<<10, 3)}, {"a", pattern(32<<10, 4)},
		}, false},
		{"a whole initial window", []send{{"a", pattern(wantInitialWindow, 5)}}, false},
		{"two IDs on one socket", []send{
			{"user-session", []byte("user data")}, {"admin-session", []byte("admin data")}, {"user-session", []byte("more")},
		}, false},
		{"beyond the initial window", []send{{"a", pattern(wantInitialWindow+1, 6)}, {"a", []byte("after")}}, true},
	}
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				ln, cfg := tr.listen(t, nil)
				addr := ln.Addr().String()
				var ids []string
				clients := map[string]*Connection{}
				for _, s := range tc.sends {
					if clients[s.id] == nil {
						ids = append(ids, s.id)
						clients[s.id] = openClient(t, addr, cfg, s.id)
					}
				}
				sendAll := func() error {
					for i, s := range tc.sends {
						if err := clients[s.id].Send(s.msg); err != nil {
							return fmt.Errorf("Send #%d (%d bytes on %q): %w", i, len(s.msg), s.id, err)
						}
					}
					return nil
				}
				var sent <-chan error
				if tc.waits {
					sent = async(sendAll)
				} else if err := within(t, prompt, "Send before the server accepted", sendAll); err != nil {
					t.Fatal(err)
				}
				conn := acceptOne(t, ln)
				servers := map[string]*Connection{}
				for _, id := range ids {
					servers[id] = wrapServer(t, conn, id)
				}
				if tc.waits {
					if err := await(t, sent, testTimeout, "Send beyond the initial window"); err != nil {
						t.Fatal(err)
					}
				}
				for i, s := range tc.sends {
					if got := recvWithin(t, servers[s.id], testTimeout); !bytes.Equal(got, s.msg) {
						t.Fatalf("message #%d on %q: got %d bytes, want %d (or other bytes)", i, s.id, len(got), len(s.msg))
					}
				}
			})
		}
	})
}

// ---- 2 and 6: eager construction, the server speaks first ----

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
