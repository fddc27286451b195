// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// laneServerStyles are the two ways a server takes sockets: a Listener, and
// the original accept loop that wraps every accepted socket.
var laneServerStyles = []struct {
	name  string
	serve func(t *testing.T, ln net.Listener, cfg *Config, handle func(*Connection))
}{
	{"listener", func(t *testing.T, ln net.Listener, cfg *Config, handle func(*Connection)) {
		l, err := NewListener(ln, serverSide(cfg))
		if err != nil {
			t.Fatal(err)
		}
		serveListener(t, l, handle)
	}},
	{"wrap", func(t *testing.T, ln net.Listener, cfg *Config, handle func(*Connection)) {
		serveConns(t, ln, func(conn net.Conn) {
			c, err := Wrap(conn, WithConfig(serverSide(cfg)))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			handle(c)
		})
	}},
}

// serverSide is the server's copy of a client Config: without the
// client-only fields.
func serverSide(cfg *Config) *Config {
	if cfg == nil {
		return nil
	}
	s := *cfg
	s.TLSConfig, s.Dialer = nil, nil
	return &s
}

// sealed is a message that names its ID and sequence number and whose
// body is a pattern of its size, so a reordered, lost or damaged message
// is told apart.
func sealed(id string, seq, size int) []byte {
	b := pattern(max(size, 16), byte(seq))
	binary.BigEndian.PutUint64(b, uint64(seq))
	binary.BigEndian.PutUint64(b[8:], uint64(len(id)))
	return b
}

func checkSealed(got []byte, id string, seq int) error {
	if len(got) < 16 {
		return fmt.Errorf("%s: message %d: %d bytes", id, seq, len(got))
	}
	if n := binary.BigEndian.Uint64(got); n != uint64(seq) {
		return fmt.Errorf("%s: message %d came where %d was due", id, n, seq)
	}
	if want := sealed(id, seq, len(got)); !bytes.Equal(got, want) {
		return fmt.Errorf("%s: message %d damaged", id, seq)
	}
	return nil
}

// laneSizes mixes small messages with lane-sized ones on one ID.
var laneSizes = []int{100, 1 << 20, 10, 3 << 20, 0, 300 << 10, 64 << 10, 2 << 20, 1, 1}

// TestLaneKeepsOrder sends small and large messages on the same IDs both
// ways, several IDs at once, and checks each ID's order and bytes, and
// that the large ones took the lane (where one can open).
func TestLaneKeepsOrder(t *testing.T) {
	for _, style := range laneServerStyles {
		t.Run(style.name, func(t *testing.T) {
			forEachTransport(t, func(t *testing.T, tr testTransport) {
				ln, cfg := tr.listen(t, &Config{})
				style.serve(t, ln, cfg, echoLoop)
				cl, err := NewClient(cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { cl.Close() })
				const ids, rounds = 3, 2
				var wg sync.WaitGroup
				errs := make(chan error, ids)
				for i := range ids {
					id := fmt.Sprintf("order-%d", i)
					c := closeAtCleanup(t, cl.Open(ln.Addr().String(), WithID(id)))
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs <- sendAndCheckEchoes(testContext(t), c, id, rounds)
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Fatal(err)
					}
				}
				links := cl.Links()
				if len(links) != 1 || !links[0].Lane {
					t.Fatalf("links after lane-sized messages: %+v, want one with a lane", links)
				}
			})
		})
	}
}

// sendAndCheckEchoes sends laneSizes rounds times on c from one goroutine
// while another receives the echoes and checks their order.
func sendAndCheckEchoes(ctx context.Context, c *Connection, id string, rounds int) error {
	n := rounds * len(laneSizes)
	recvErr := make(chan error, 1)
	go func() {
		for seq := range n {
			got, err := c.ReceiveContext(ctx)
			if err != nil {
				recvErr <- fmt.Errorf("%s: receive %d: %w", id, seq, err)
				return
			}
			if err := checkSealed(got, id, seq); err != nil {
				recvErr <- err
				return
			}
		}
		recvErr <- nil
	}()
	for seq := range n {
		if err := c.SendContext(ctx, sealed(id, seq, laneSizes[seq%len(laneSizes)])); err != nil {
			return fmt.Errorf("%s: send %d: %w", id, seq, err)
		}
	}
	return <-recvErr
}

// TestLaneOffOnEitherSide: with DisableLanes on the client, or on the
// server (which refuses lanes), large messages still arrive in order, on
// one socket.
func TestLaneOffOnEitherSide(t *testing.T) {
	for _, side := range []string{"client", "server"} {
		t.Run(side, func(t *testing.T) {
			ln, cfg := testTransports[0].listen(t, &Config{})
			srv := serverSide(cfg)
			if side == "client" {
				cfg.DisableLanes = true
			} else {
				srv.DisableLanes = true
			}
			l, err := NewListener(ln, srv)
			if err != nil {
				t.Fatal(err)
			}
			serveListener(t, l, echoLoop)
			c := closeAtCleanup(t, Open(ln.Addr().String(), WithID("off"), WithConfig(cfg)))
			if err := sendAndCheckEchoes(testContext(t), c, "off", 1); err != nil {
				t.Fatal(err)
			}
			for _, ls := range l.Links() {
				if ls.Lane {
					t.Fatalf("server link has a lane with lanes off on the %s", side)
				}
			}
			if n := len(l.Links()); n != 1 {
				t.Fatalf("server has %d links, want 1", n)
			}
		})
	}
}

// TestLaneAcceptedByWrapEndsItsConnection: in the original accept loop, a
// lane arriving as an accepted socket gets its own Connection, whose
// Receive returns ErrBulkLane (io.EOF) once the socket has joined its link.
// A Wrap of that socket afterwards ends the same way and writes nothing on
// it (a new link's HELLO would reach the peer's lane reader).
func TestLaneAcceptedByWrapEndsItsConnection(t *testing.T) {
	ln, cfg := testTransports[0].listen(t, &Config{})
	ends, lateEnds := make(chan error, 4), make(chan error, 4)
	serveConns(t, ln, func(conn net.Conn) {
		c := WrapConnection(conn, 0)
		defer c.Close()
		for {
			data, err := c.Receive()
			if err != nil {
				ends <- err
				if errors.Is(err, ErrBulkLane) {
					late := WrapConnectionWithID(conn, "late", 0)
					_, err := late.Receive()
					late.Close()
					lateEnds <- err
				}
				return
			}
			if err := c.Send(data); err != nil {
				ends <- err
				return
			}
		}
	})
	c := closeAtCleanup(t, Open(ln.Addr().String(), WithConfig(cfg)))
	mustRoundTrip(t, c, []byte("small first")) // a lane protects small messages
	mustRoundTrip(t, c, pattern(2<<20, 1))
	eventually(t, "a lane", func() bool { return linkOf(c).hasLane() })
	err := await(t, ends, 5*time.Second, "the lane's Connection to end")
	if !errors.Is(err, ErrBulkLane) || !errors.Is(err, io.EOF) {
		t.Fatalf("the lane's Connection ended with %v, want ErrBulkLane matching io.EOF", err)
	}
	if err := await(t, lateEnds, 5*time.Second, "a later Wrap of the lane's socket to end"); !errors.Is(err, ErrBulkLane) {
		t.Fatalf("a later Wrap of the lane's socket ended with %v, want ErrBulkLane", err)
	}
	mustRoundTrip(t, c, pattern(2<<20, 2))
	mustRoundTrip(t, c, []byte("small"))
}

// TestLaneAcceptedByWrapWithReceiversWaiting: the accept loop of a
// server that wraps several IDs per socket and receives on each at once
// (as the seed's examples do): every lane socket's receivers are parked
// or reading when the socket changes hands, and end with ErrBulkLane;
// none reads the socket after the lane's reader owns it.
func TestLaneAcceptedByWrapWithReceiversWaiting(t *testing.T) {
	ln, cfg := testTransports[0].listen(t, &Config{})
	ids := []string{"a", "b", "c", "d"}
	ends, otherEnds := make(chan error, 64), make(chan string, 256)
	serveConns(t, ln, func(conn net.Conn) {
		var wg sync.WaitGroup
		for _, id := range ids {
			c := WrapConnectionWithID(conn, id, 0)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				for {
					data, err := c.Receive()
					if err != nil {
						if errors.Is(err, ErrBulkLane) {
							ends <- err
						} else {
							select {
							case otherEnds <- fmt.Sprintf("%s: %v", id, err):
							default:
							}
						}
						return
					}
					if err := c.Send(data); err != nil {
						return
					}
				}
			}()
		}
		wg.Wait()
	})
	const links = 20
	for i := range links {
		cl, err := NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c, err := cl.Dial(testContext(t), ln.Addr().String(), WithID(ids[i%len(ids)]))
		if err != nil {
			t.Fatal(err)
		}
		mustRoundTrip(t, c, []byte("small first"))
		mustRoundTrip(t, c, pattern(1<<20, byte(i)))
		eventually(t, "a lane", func() bool { return linkOf(c).hasLane() })
		// The client has the server's LANE answer; the server hands the
		// socket over just after writing it. Closing before that would
		// end the lane socket's Connections with ErrHandshake instead
		// (the link it names has ended), so wait for the hand-over.
		for range ids {
			select {
			case <-ends:
			case <-time.After(5 * time.Second):
				var other []string
				for len(otherEnds) > 0 {
					other = append(other, <-otherEnds)
				}
				t.Fatalf("link %d: its lane socket's Connections did not all end with ErrBulkLane within 5s; other ends so far: %q", i, other)
			}
		}
		mustRoundTrip(t, c, []byte("small after"))
		cl.Close()
	}
}

// TestLargeMessagesAloneStayOnTheSocket: a link that carries only large
// messages (request and response) opens no lane: there is no small message
// to protect, and its receivers read large messages straight into their
// buffers. Once small messages share the link, the next large one opens it.
func TestLargeMessagesAloneStayOnTheSocket(t *testing.T) {
	srv := mustListen(t, "127.0.0.1:0", nil)
	serveListener(t, srv, echoHandler)
	c := closeAtCleanup(t, Open(srv.Addr().String(), WithID("alone"), WithConfig(&Config{})))
	for i := range 4 {
		mustRoundTrip(t, c, pattern(1<<20, byte(i)))
	}
	l := linkOf(c)
	l.wq.mu.Lock()
	state := l.lanes.state
	l.wq.mu.Unlock()
	if state != laneNone {
		t.Fatalf("lane state %d after large messages alone, want none (%d)", state, laneNone)
	}
	mustRoundTrip(t, c, []byte("small"))
	mustRoundTrip(t, c, pattern(1<<20, 9))
	eventually(t, "a lane once small messages share the link", l.hasLane)
}

// laneDialer is a client Dialer whose first dial reaches the server and
// whose later dials (lanes) go to lane instead.
func laneDialer(lane func(ctx context.Context) (net.Conn, error)) func(ctx context.Context, network, address string) (net.Conn, error) {
	var mu sync.Mutex
	dials := 0
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		mu.Lock()
		dials++
		first := dials == 1
		mu.Unlock()
		if first {
			var d net.Dialer
			return d.DialContext(ctx, network, address)
		}
		return lane(ctx)
	}
}

// TestLaneThatNeverComes: a lane whose dial reaches a socket that never
// answers is given up after HandshakeTimeout; large messages go on the
// link's socket meanwhile and after, in order.
func TestLaneThatNeverComes(t *testing.T) {
	srv := mustListen(t, "127.0.0.1:0", nil)
	serveListener(t, srv, echoHandler)
	silent := listenTCP(t)
	held := make(chan net.Conn, 4)
	serveConns(t, silent, func(conn net.Conn) { held <- conn }) // accepted, never answered
	t.Cleanup(func() {
		for len(held) > 0 {
			(<-held).Close()
		}
	})
	cfg := &Config{HandshakeTimeout: 200 * time.Millisecond, Dialer: laneDialer(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", silent.Addr().String())
	})}
	c := closeAtCleanup(t, Open(srv.Addr().String(), WithID("nolane"), WithConfig(cfg)))
	if err := sendAndCheckEchoes(testContext(t), c, "nolane", 1); err != nil {
		t.Fatal(err)
	}
	l := linkOf(c)
	eventually(t, "the lane given up", func() bool {
		l.wq.mu.Lock()
		defer l.wq.mu.Unlock()
		return l.lanes.state == laneOff
	})
	if err := sendAndCheckEchoes(testContext(t), c, "nolane", 1); err != nil {
		t.Fatal(err)
	}
	if l.failed() || l != linkOf(c) {
		t.Fatal("the link was lost for a lane that never came")
	}
}

// TestCloseWhileLaneOpens: Close returns at once while a lane's dial is
// still in progress, and the dial ends with the link (goleak checks that
// nothing is left).
func TestCloseWhileLaneOpens(t *testing.T) {
	srv := mustListen(t, "127.0.0.1:0", nil)
	serveListener(t, srv, echoHandler)
	dialing := make(chan struct{}, 1)
	cfg := &Config{Dialer: laneDialer(func(ctx context.Context) (net.Conn, error) {
		dialing <- struct{}{}
		<-ctx.Done() // a dial that only the link's end stops
		return nil, ctx.Err()
	})}
	cl, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := cl.Open(srv.Addr().String(), WithID("closing"))
	mustRoundTrip(t, c, []byte("small first"))
	mustRoundTrip(t, c, pattern(1<<20, 3))
	await(t, async(func() error { <-dialing; return nil }), 5*time.Second, "the lane's dial")
	if err := within(t, prompt, "Client.Close", cl.Close); err != nil {
		t.Fatal(err)
	}
	l := linkOf(c)
	eventually(t, "the lane's dial to end", func() bool {
		if l == nil {
			return true
		}
		l.wq.mu.Lock()
		defer l.wq.mu.Unlock()
		return l.lanes.state == laneOff
	})
}

// TestLaneCutMidMessage: a lane cut while a message is on it fails its
// link; the Connection carries on over a new link (the message in flight
// is lost at most once) and opens a new lane.
func TestLaneCutMidMessage(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		ln, cfg := tr.listen(t, &Config{})
		l, err := NewListener(ln, serverSide(cfg))
		if err != nil {
			t.Fatal(err)
		}
		serveListener(t, l, echoHandler)
		c := closeAtCleanup(t, Open(ln.Addr().String(), WithID("cut"), WithConfig(cfg)))
		big := pattern(8<<20, 4)
		mustRoundTrip(t, c, []byte("small first"))
		mustRoundTrip(t, c, big)
		first := linkOf(c)
		first.wq.mu.Lock()
		lane := first.lanes.cur
		first.wq.mu.Unlock()
		if lane == nil {
			t.Fatal("no lane after an 8 MiB round trip")
		}
		// Cut the socket beneath TLS, as a network failure does: closing
		// the tls.Conn would send close_notify, and a lane that had
		// written the whole message by then reads the peer's answer to it
		// as a clean end (laneReadLoop), which is no failure. The cut
		// aims at the middle of the message, but need not hit it.
		before := first.counters.bytesOut.Load()
		sent := async(func() error { return c.SendContext(testContext(t), big) })
		eventually(t, "bytes on the link", func() bool { return first.counters.bytesOut.Load() > before })
		cut := lane.conn
		if tc, ok := cut.(*tls.Conn); ok {
			cut = tc.NetConn()
		}
		cut.Close()
		if err := await(t, sent, 5*time.Second, "the Send on the cut lane"); err != nil {
			wantErr(t, err, ErrLinkLost)
		}
		eventually(t, "the link to fail", first.failed)
		if !errors.Is(first.linkError(), ErrLinkLost) {
			t.Fatalf("link error %v, want ErrLinkLost", first.linkError())
		}
		// The echo of a message that made it may still come: skip to ours.
		ctx := testContext(t)
		if err := c.SendContext(ctx, []byte("after")); err != nil {
			t.Fatal(err)
		}
		for {
			got, err := c.ReceiveContext(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) == "after" {
				break
			}
		}
		mustRoundTrip(t, c, big)
		eventually(t, "a new lane", func() bool { return linkOf(c).hasLane() })
	})
}

// TestHostileLaneHandshakes: a lane naming an unknown link, a second lane
// for a link that has one, and a lane from another TLS identity are
// refused (GOAWAY naming why, then the socket closes); the link keeps its
// lane and its round trips.
func TestHostileLaneHandshakes(t *testing.T) {
	ca := newTestCA(t, "lane CA")
	srvTLS := &tls.Config{
		Certificates: []tls.Certificate{ca.leaf(t, "server")},
		ClientAuth:   tls.VerifyClientCertIfGiven, ClientCAs: ca.pool, MinVersion: tls.VersionTLS13,
	}
	// HandshakeTimeout bounds the wait for an unknown link; it must also
	// leave a loaded machine time between a flooding dial and its LANE.
	srv, err := NewListener(tls.NewListener(listenTCP(t), srvTLS), &Config{HandshakeTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	serveListener(t, srv, echoHandler)
	addr := srv.Addr().String()
	certs := map[string]tls.Certificate{"alice": ca.leaf(t, "alice"), "mallory": ca.leaf(t, "mallory")}
	clientTLS := func(name string) *tls.Config {
		return &tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{certs[name]}, MinVersion: tls.VersionTLS13}
	}
	c := closeAtCleanup(t, Open(addr, WithID("victim"), WithConfig(&Config{TLSConfig: clientTLS("alice")})))
	mustRoundTrip(t, c, []byte("small first"))
	mustRoundTrip(t, c, pattern(1<<20, 5))
	eventually(t, "the victim's lane", func() bool { return linkOf(c).hasLane() })
	victim := *linkOf(c).id.Load()

	for _, tc := range []struct {
		name    string
		as      string
		link    [sizeOfLinkID]byte
		because string
	}{
		{"unknown link", "alice", [sizeOfLinkID]byte{1, 2, 3}, "unknown link"},
		{"a second lane", "alice", victim, "has a lane"},
		{"another TLS identity", "mallory", victim, "not the link's TLS peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", addr, clientTLS(tc.as))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(testTimeout))
			if _, err := conn.Write(appendLane(nil, tc.link)); err != nil {
				t.Fatal(err)
			}
			err = awaitLaneAccept(newFrameReader(conn, nil), tc.link)
			if !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), tc.because) {
				t.Fatalf("lane handshake: %v, want a refusal naming %q", err, tc.because)
			}
			if _, err := io.ReadAll(conn); err != nil && !errors.Is(err, io.EOF) {
				t.Logf("after the refusal: %v", err)
			}
			mustRoundTrip(t, c, []byte("still here"))
			if !linkOf(c).hasLane() {
				t.Fatal("the victim lost its lane")
			}
		})
	}

	// A flood: each lane naming an unknown link is refused once its
	// HandshakeTimeout has passed, all at once, and the victim keeps going.
	t.Run("a flood of lanes naming unknown links", func(t *testing.T) {
		const flood = 64
		start := time.Now()
		var wg sync.WaitGroup
		refused := make(chan error, flood)
		for i := range flood {
			wg.Go(func() {
				conn, err := tls.Dial("tcp", addr, clientTLS("mallory"))
				if err != nil {
					refused <- err
					return
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(testTimeout))
				id := [sizeOfLinkID]byte{byte(i), 0xEE}
				if _, err := conn.Write(appendLane(nil, id)); err != nil {
					refused <- err
					return
				}
				refused <- awaitLaneAccept(newFrameReader(conn, nil), id)
			})
		}
		mustRoundTrip(t, c, []byte("small"))
		mustRoundTrip(t, c, pattern(1<<20, 6)) // during the flood, on the lane
		wg.Wait()
		close(refused)
		for err := range refused {
			if !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), "unknown link") {
				t.Fatalf("a flooding lane: %v, want a refusal naming the unknown link", err)
			}
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("the flood took %v to be refused (HandshakeTimeout is 1s)", took)
		}
		if !linkOf(c).hasLane() {
			t.Fatal("the victim lost its lane")
		}
	})
}

// TestLaneClosesWhenIdle: a lane that carried nothing for a while is
// closed by both sides (half-close each way, between messages), the link
// goes on, and the next large message opens a new lane.
func TestLaneClosesWhenIdle(t *testing.T) {
	for _, tr := range testTransports[:2] { // net.Pipe cannot half-close: its lane stays
		t.Run(tr.name, func(t *testing.T) {
			ln, cfg := tr.listen(t, &Config{laneIdle: 50 * time.Millisecond})
			srv, err := NewListener(ln, serverSide(cfg))
			if err != nil {
				t.Fatal(err)
			}
			serveListener(t, srv, echoHandler)
			cl, err := NewClient(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cl.Close() })
			c := cl.Open(ln.Addr().String(), WithID("idle"))
			for round := range 2 {
				if err := sendAndCheckEchoes(testContext(t), c, "idle", 1); err != nil {
					t.Fatal(err)
				}
				eventually(t, "the lane closed on both sides", func() bool {
					l := linkOf(c)
					l.wq.mu.Lock()
					gone := l.lanes.cur == nil && l.lanes.state == laneNone
					l.wq.mu.Unlock()
					return gone && !srv.Links()[0].Lane
				})
				if n := len(srv.Links()); n != 1 {
					t.Fatalf("round %d: the server has %d links, want 1", round, n)
				}
			}
			if st := cl.Stats(); st.Reconnects != 0 {
				t.Fatalf("the link was lost %d times", st.Reconnects)
			}
		})
	}
}

// BenchmarkLaneOpen: what opening a bulk lane costs, from the dial to the
// lane being the link's (the dialling side's openLane), over TCP, over TLS
// with a full handshake, and over TLS resuming the link's session (a
// tls.Config with a ClientSessionCache). The link itself is dialled
// outside the timer.
func BenchmarkLaneOpen(b *testing.B) {
	ca := newTestCA(b, "lane bench CA")
	srvTLS := &tls.Config{Certificates: []tls.Certificate{ca.leaf(b, "server")}, MinVersion: tls.VersionTLS13}
	for _, tc := range []struct {
		name string
		tls  func() *tls.Config
	}{
		{"tcp", nil},
		{"tls", func() *tls.Config { return &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13} }},
		{"tls-resumed", func() *tls.Config {
			return &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13, ClientSessionCache: tls.NewLRUClientSessionCache(8)}
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			nl := listenTCP(b)
			if tc.tls != nil {
				nl = tls.NewListener(nl, srvTLS)
			}
			srv, err := NewListener(nl, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { srv.Close() })
			serveListener(b, srv, echoHandler)
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				cfg := &Config{}
				if tc.tls != nil {
					cfg.TLSConfig = tc.tls()
				}
				cl, err := NewClient(cfg)
				if err != nil {
					b.Fatal(err)
				}
				c, err := cl.Dial(context.Background(), srv.Addr().String(), WithID("open"))
				if err != nil {
					b.Fatal(err)
				}
				mustRoundTrip(b, c, []byte("warm")) // the session ticket is in
				l := linkOf(c)
				l.wq.mu.Lock()
				l.lanes.state = laneOpening
				l.wq.mu.Unlock()
				b.StartTimer()
				l.openLane()
				b.StopTimer()
				if !l.hasLane() {
					b.Fatal("no lane")
				}
				cl.Close()
				b.StartTimer()
			}
		})
	}
}

// freezableConn stops delivering what it reads once frozen, as a lane
// whose path stalls while the link's socket keeps going; Close ends a
// frozen Read.
type freezableConn struct {
	net.Conn
	frozen chan struct{}
	closed chan struct{}
	once   sync.Once
}

func (c *freezableConn) Read(p []byte) (int, error) {
	select {
	case <-c.frozen:
		<-c.closed
		return 0, net.ErrClosed
	default:
		return c.Conn.Read(p)
	}
}

func (c *freezableConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// TestKeepAliveCoversTheLane: messages announced for the lane whose bytes
// stop coming fail the link with ErrKeepAliveTimeout, although PINGs on
// the link's socket still get their PONGs.
func TestKeepAliveCoversTheLane(t *testing.T) {
	srv := mustListen(t, "127.0.0.1:0", nil)
	serveListener(t, srv, echoHandler)
	lane := &freezableConn{frozen: make(chan struct{}), closed: make(chan struct{})}
	cfg := &Config{
		KeepAliveInterval: 100 * time.Millisecond, KeepAliveTimeout: 400 * time.Millisecond,
		Dialer: laneDialer(func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp", srv.Addr().String())
			lane.Conn = conn
			return lane, err
		}),
	}
	c := closeAtCleanup(t, Open(srv.Addr().String(), WithID("stall"), WithConfig(cfg)))
	mustRoundTrip(t, c, []byte("small first"))
	mustRoundTrip(t, c, pattern(1<<20, 7))
	l := linkOf(c)
	eventually(t, "a lane", l.hasLane)
	close(lane.frozen)
	ctx := testContext(t)
	if err := c.SendContext(ctx, pattern(1<<20, 8)); err != nil { // its echo comes on the lane
		t.Fatal(err)
	}
	_, err := c.ReceiveContext(ctx)
	wantErr(t, err, ErrKeepAliveTimeout)
	if !errors.Is(l.linkError(), ErrKeepAliveTimeout) || !strings.Contains(l.linkError().Error(), "bulk lane") {
		t.Fatalf("link error %v, want a keepalive timeout naming the bulk lane", l.linkError())
	}
}
