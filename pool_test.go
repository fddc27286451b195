// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
)

// TestClientScopesSocketsAndStats: a Client owns its sockets (one per
// address, whatever the IDs), its Stats and its Connections; two Clients to
// one server use two sockets, the Listener's Stats add them up, and closing
// one Client ends only its Connections.
func TestClientScopesSocketsAndStats(t *testing.T) {
	srv := mustListen(t, "127.0.0.1:0", nil)
	serveListener(t, srv, echoHandler)
	addr := srv.Addr().String()

	a, err := NewClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewClient(&Config{KeepAliveInterval: -1})
	t.Cleanup(func() { a.Close(); b.Close() })
	a1, a2 := a.Open(addr, WithID("a1")), a.Open(addr, WithID("a2"))
	b1 := b.Open(addr, WithID("b1"))
	for _, c := range []*Connection{a1, a2, b1} {
		mustRoundTrip(t, c, []byte("ping "+c.ID()))
	}
	if linkOf(a1) != linkOf(a2) || linkOf(a1) == linkOf(b1) {
		t.Fatal("want a1 and a2 on one socket, b1 on another")
	}
	// A writer counts its frames once its write returns, which may be just
	// after the peer has already answered them: poll.
	eventually(t, "client a: 1 link, 2 connections, 2 messages each way", func() bool {
		st := a.Stats()
		return st.Links == 1 && st.Connections == 2 && st.MessagesOut == 2 && st.MessagesIn == 2
	})
	eventually(t, "client b: 1 link, 1 connection, 1 message out", func() bool {
		st := b.Stats()
		return st.Links == 1 && st.Connections == 1 && st.MessagesOut == 1
	})
	eventually(t, "listener: 2 links, 3 connections, 3 messages each way", func() bool {
		st := srv.Stats()
		return st.Links == 2 && st.Connections == 3 && st.MessagesIn == 3 && st.MessagesOut == 3
	})
	if _, err := a.Dial(testContext(t), addr, WithConfig(&Config{})); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("WithConfig on a NewClient Client = %v; want ErrInvalidConfig", err)
	}

	a.Close()
	wantErr(t, a1.Send([]byte("x")), ErrClosed)
	wantErr(t, a.Open(addr, WithID("late")).Send([]byte("x")), ErrClosed)
	mustRoundTrip(t, b1, []byte("b still works"))
	eventually(t, "client a's socket closed and the Listener's gauges to drop", func() bool {
		st, sa := srv.Stats(), a.Stats()
		return sa.Links == 0 && sa.Connections == 0 && st.Links == 1 && st.Connections == 1
	})
	if st := a.Stats(); st.MessagesOut != 2 {
		t.Fatalf("client a's counters after Close = %+v; want its 2 messages kept", st)
	}
}

// TestServerConnectionsGaugeDropsWithItsSocket: a server Connection whose
// socket died no longer counts as a connection, before anyone calls Close.
func TestServerConnectionsGaugeDropsWithItsSocket(t *testing.T) {
	srv := mustListen(t, "127.0.0.1:0", nil)
	accepted := make(chan *Connection, 1)
	serveListener(t, srv, func(c *Connection) {
		accepted <- c
		echoHandler(c) // until its socket is gone
	})
	cl, _ := NewClient(nil)
	c := cl.Open(srv.Addr().String(), WithID("g"))
	mustSend(t, c, []byte("hi"))
	<-accepted
	if st := srv.Stats(); st.Connections != 1 {
		t.Fatalf("listener Connections = %d, want 1", st.Connections)
	}
	cl.Close() // the socket closes: the server Connection is finished
	eventually(t, "the gauge to drop", func() bool { return srv.Stats().Connections == 0 })
}

// TestLinkIDSharedByBothEnds: both ends of one socket report the same link
// ID (the dialler's UUID, carried by its HELLO) in LinkStats and in every
// log record about the link.
func TestLinkIDSharedByBothEnds(t *testing.T) {
	var logs syncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := mustListen(t, "127.0.0.1:0", &Config{Logger: logger})
	serveListener(t, srv, echoHandler)
	cl, _ := NewClient(&Config{Logger: logger})
	c := cl.Open(srv.Addr().String(), WithID("x"))
	mustRoundTrip(t, c, []byte("hi"))
	cls, sls := cl.Links(), srv.Links()
	if len(cls) != 1 || len(sls) != 1 {
		t.Fatalf("%d client links, %d server links; want 1 each", len(cls), len(sls))
	}
	id := cls[0].ID
	if sls[0].ID != id || !cls[0].Client || sls[0].Client || cls[0].LocalAddr != sls[0].RemoteAddr {
		t.Fatalf("client link %+v, server link %+v: want the same ID and mirrored addresses", cls[0], sls[0])
	}
	cl.Close()
	eventually(t, "both ends to log the link's close", func() bool {
		sides := map[string]bool{}
		for _, line := range bytes.Split(logs.Bytes(), []byte("\n")) {
			var rec map[string]any
			if json.Unmarshal(line, &rec) == nil && rec["msg"] == "tcpconn: link closed" {
				if rec["link"] != id {
					t.Fatalf("log record %s: want link %s", line, id)
				}
				sides[rec["side"].(string)] = true
			}
		}
		return sides["client"] && sides["server"]
	})
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}
