package bench

import (
	"strings"
	"testing"
	"time"
)

// TestSockets runs the Sockets workload end to end with 100 sockets over
// every transport: every socket answers after the idle period, nothing is
// left over, and the figures are plausible.
func TestSockets(t *testing.T) {
	w := SocketsWorkload{Name: "Sockets100", N: 100}
	for _, tr := range SocketsTransports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			r, err := w.Run(tr)
			if err != nil {
				t.Fatal(err)
			}
			if r.Answered != w.N || len(r.Notes) > 0 {
				t.Errorf("%d of %d answered; notes: %q", r.Answered, w.N, r.Notes)
			}
			for _, end := range []SocketEnd{r.Server, r.Client} {
				if end.Library < -0.05 || end.Heap <= 0 {
					t.Errorf("implausible: %+v", end)
				}
			}
			t.Logf("%+v", r)
		})
	}
}

// TestSocketsRedialIsNotAnAnswer: a tcpconn client whose idle socket was
// lost dials a new one on its next call; that round trip must not count as
// the idle socket answering.
func TestSocketsRedialIsNotAnAnswer(t *testing.T) {
	peer, err := socketPeerFor("tcpconn", SocketsKeepAlive)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := startSocketServer(peer)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	fleet := newClientFleet(peer, endSpec{N: 3, Addr: srv.ln.Addr().String()})
	defer fleet.close()
	if r := fleet.connect(); r.Done != 3 {
		t.Fatalf("connect: %+v", r)
	}

	srv.mu.Lock()
	srv.socks[0].Close()
	srv.mu.Unlock()
	// Wait until that socket's client has noticed, so that its next call
	// dials again rather than failing on the dead socket.
	lost := func() bool {
		for _, c := range fleet.conns {
			if c.(tcpconnSocket).client.Stats().Links == 0 {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(5 * time.Second); !lost(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no client noticed its socket closed within 5s")
		}
	}

	r := fleet.again()
	if r.Done != 2 || !strings.Contains(r.Err, "new socket") {
		t.Errorf("again: %+v; want 2 answered and a round trip over a new socket named", r)
	}
	if n := srv.accepts.Load(); n != 4 {
		t.Errorf("the server accepted %d sockets, want 4 (3 and the new one)", n)
	}
}
