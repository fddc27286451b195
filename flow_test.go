// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

// Flow control: a logical connection whose reader is slow, absent or
// never claimed holds its own window and nothing its neighbours need.

// unreadCase is one way to leave an ID unread: who sends to it, and
// whether a Connection owns it on the receiving side.
type unreadCase struct {
	name string
	// fill sends to the unread ID from the side that has the socket's
	// other end (server or client Connection "fast").
	fromServer bool
	// claimed: the receiving side has a Connection for the ID that never
	// reads; otherwise nobody claims it (an unclaimed record).
	claimed bool
}

var unreadCases = []unreadCase{
	{"server-to-unread-client-ID", true, true},
	{"server-to-unclaimed-client-ID", true, false},
	{"client-to-unclaimed-server-ID", false, false},
	{"client-to-unread-server-ID", false, true},
}

// windowCases are Configs (both ends) with the message size that fills
// their unread ID: the defaults, small and unequal windows, and a link
// whose Budget has no room, where only the LinkWindow >= 2 x StreamWindow
// rule keeps the link open.
var windowCases = []struct {
	name string
	cfg  Config
	size int
}{
	{"default/1KiB", Config{}, 1 << 10},
	{"default/64KiB", Config{}, 64 << 10},
	{"stream64KiB/1KiB", Config{StreamWindow: InitialWindow}, 1 << 10},
	{"stream256KiB-link512KiB/16KiB", Config{StreamWindow: 256 << 10, LinkWindow: 512 << 10}, 16 << 10},
	{"no-budget/1KiB", Config{Budget: NewBudget(0)}, 1 << 10},
	{"no-budget/64KiB", Config{Budget: NewBudget(0), StreamWindow: InitialWindow}, 60 << 10},
	{"no-budget-stream256KiB-link512KiB/16KiB", Config{Budget: NewBudget(0), StreamWindow: 256 << 10, LinkWindow: 512 << 10}, 16 << 10},
}

func TestUnreadIDDoesNotBlockItsSocket(t *testing.T) {
	for _, wc := range windowCases {
		for _, uc := range unreadCases {
			t.Run(wc.name+"/"+uc.name, func(t *testing.T) {
				cfg := wc.cfg
				testUnreadID(t, testTransports[0], &cfg, wc.size, uc)
			})
		}
	}
}

func TestUnreadIDDoesNotBlockItsSocketOverEveryTransport(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		for _, uc := range unreadCases {
			t.Run(uc.name, func(t *testing.T) { testUnreadID(t, tr, &Config{}, 1<<10, uc) })
		}
	})
}

// unreadPair is a socket carrying two IDs: "fast", with a Connection on
// each side, and "slow", which one side sends to and the other never reads
// (unreadCase says which, and whether a Connection claims it there).
type unreadPair struct {
	fast, srvFast *Connection
	sendSlow      func(ctx context.Context, msg []byte) error
}

func newUnreadPair(t *testing.T, tr testTransport, base *Config, uc unreadCase) unreadPair {
	ln, cliCfg := tr.listen(t, base)
	srvCfg := copyConfig(base)
	servers := make(chan *Connection, 2)
	serveConns(t, ln, func(conn net.Conn) {
		fast, err := Wrap(conn, WithID("fast"), WithConfig(srvCfg))
		if err != nil {
			conn.Close()
			return
		}
		servers <- fast
		if uc.claimed {
			if slow, err := Wrap(conn, WithID("slow")); err == nil {
				servers <- slow
			}
		}
	})
	fast := openClient(t, ln.Addr().String(), cliCfg, "fast")
	var slow *Connection
	if uc.claimed || !uc.fromServer {
		slow = openClient(t, ln.Addr().String(), cliCfg, "slow")
	}
	mustRoundTripVia(t, fast, servers)
	p := unreadPair{fast: fast, srvFast: closeAtCleanup(t, <-servers)}
	var srvSlow *Connection
	if uc.claimed {
		srvSlow = closeAtCleanup(t, <-servers)
	}
	switch {
	case uc.fromServer && uc.claimed:
		p.sendSlow = srvSlow.SendContext
	case uc.fromServer:
		p.sendSlow = func(ctx context.Context, msg []byte) error { return p.srvFast.SendTo(ctx, "slow", msg) }
	default:
		p.sendSlow = slow.SendContext
	}
	return p
}

// testUnreadID fills the window of an ID nobody reads until its sender
// blocks, then checks that a message on another ID of the same socket,
// whose reader waits, still goes through at once in both directions.
func testUnreadID(t *testing.T, tr testTransport, base *Config, size int, uc unreadCase) {
	p := newUnreadPair(t, tr, base, uc)
	fast, srvFast, sendSlow := p.fast, p.srvFast, p.sendSlow
	filled := fillUntilBlocked(t, sendSlow, size, 4*max(base.LinkWindow, 2*DefaultLinkWindow))
	t.Logf("%d messages of %d bytes sent to the unread ID before its sender blocked", filled, size)

	// The socket still carries another ID, both ways.
	for _, dir := range []struct {
		name     string
		from, to *Connection
	}{{"server to client", srvFast, fast}, {"client to server", fast, srvFast}} {
		probe := []byte("probe " + dir.name)
		ctx, cancel := context.WithTimeout(context.Background(), 2*prompt)
		err := dir.from.SendContext(ctx, probe)
		if err == nil {
			var got []byte
			got, err = dir.to.ReceiveContext(ctx)
			if err == nil && string(got) != string(probe) {
				err = fmt.Errorf("got %q", got)
			}
		}
		cancel()
		if err != nil {
			t.Fatalf("%s beside the unread ID: %v", dir.name, err)
		}
		// And keeps carrying it: a link window's worth, more than the
		// unread ID leaves of it, so credit must come back, in messages
		// smaller than the unread ID's overdraft (no-budget cases: the
		// bytes owed then stay below half the window).
		linkWindow := cmp.Or(base.LinkWindow, DefaultLinkWindow)
		if err := flowThrough(dir.from, dir.to, linkWindow, 256); err != nil {
			t.Fatalf("%s beside the unread ID, %d bytes: %v", dir.name, linkWindow, err)
		}
	}
}

// flowThrough sends total bytes in messages of size from one Connection
// to the other, which receives them meanwhile, within promptRemote.
func flowThrough(from, to *Connection, total, size int) error {
	ctx, cancel := context.WithTimeout(context.Background(), promptRemote)
	defer cancel()
	n := (total + size - 1) / size
	received := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := to.ReceiveContext(ctx); err != nil {
				received <- fmt.Errorf("receive %d of %d: %w", i, n, err)
				return
			}
		}
		received <- nil
	}()
	msg := pattern(size, 3)
	for i := range n {
		if err := from.SendContext(ctx, msg); err != nil {
			cancel()
			<-received
			return fmt.Errorf("send %d of %d: %w", i, n, err)
		}
	}
	return <-received
}

// TestLinkCreditOwedComesBackWhenAnUnreadIDSpendsIt: the frame that spends
// a link's credit is for an ID nobody reads, while less than half the
// window is owed for consumed messages (no Budget: the unread messages keep
// their link credit). Nothing is consumed next, so what is owed must go
// back at that frame; else the other IDs of the link wait for ever.
func TestLinkCreditOwedComesBackWhenAnUnreadIDSpendsIt(t *testing.T) {
	const streamWindow, linkWindow, unreadSize = 256 << 10, 512 << 10, 16 << 10
	cfg := &Config{Budget: NewBudget(0), StreamWindow: streamWindow, LinkWindow: linkWindow}
	p := newUnreadPair(t, testTransports[0], cfg, unreadCase{"client-to-unread-server-ID", false, true})
	l := linkOf(p.srvFast)
	// The unread ID takes its window and one message's overdraft:
	// unreadMsgs messages. Owe just less than half the link window (no
	// credit goes back yet), so that the last of them spends the link's
	// credit.
	unreadMsgs := streamWindow/(unreadSize+messageOverhead) + 1
	target := int64(linkWindow - unreadMsgs*(unreadSize+messageOverhead) + 64)
	if target >= streamWindow {
		t.Fatalf("owing %d would return credit before the unread ID spends it", target)
	}
	for owed := l.inflow.window.owed.Load(); owed < target; owed = l.inflow.window.owed.Load() {
		mustSend(t, p.fast, make([]byte, min(16<<10, target-owed-messageOverhead)))
		mustReceive(t, p.srvFast)
	}
	if owed := l.inflow.window.owed.Load(); owed != target {
		t.Fatalf("owed %d, want %d", owed, target)
	}
	if n := fillUntilBlocked(t, p.sendSlow, unreadSize, 2*linkWindow); n != unreadMsgs {
		t.Fatalf("the unread ID took %d messages, want %d", n, unreadMsgs)
	}
	if owed := l.inflow.window.owed.Load(); owed != 0 {
		t.Fatalf("%d bytes of link credit still owed once the unread ID spent it", owed)
	}
	if err := flowThrough(p.fast, p.srvFast, linkWindow, 256); err != nil {
		t.Fatalf("beside the unread ID, %d bytes: %v", linkWindow, err)
	}
}

// fillUntilBlocked sends messages of size bytes with send until one waits
// for credit (it does not return within a short time), at most limit
// bytes' worth; it returns how many went.
func fillUntilBlocked(t *testing.T, send func(context.Context, []byte) error, size, limit int) int {
	t.Helper()
	msg := pattern(size, 7)
	n := 0
	for ; n*size < limit; n++ {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := send(ctx, msg)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return n
		}
		if err != nil {
			t.Fatalf("send %d to the unread ID: %v", n, err)
		}
	}
	t.Fatalf("%d messages of %d bytes went to an ID nobody reads without its sender waiting for credit", n, size)
	return n
}

// mustRoundTripVia sends a message on c and receives it on the server
// Connection it arrives at, which is put back on servers for the test;
// it makes sure the server side exists before the test goes on.
func mustRoundTripVia(t *testing.T, c *Connection, servers chan *Connection) {
	t.Helper()
	mustSend(t, c, []byte("hello"))
	var s *Connection
	select {
	case s = <-servers:
	case <-time.After(testTimeout):
		t.Fatal("the server never wrapped the socket")
	}
	if got := mustReceive(t, s); string(got) != "hello" {
		t.Fatalf("server got %q", got)
	}
	rest := []*Connection{s}
	for len(servers) > 0 {
		rest = append(rest, <-servers)
	}
	for _, r := range rest {
		servers <- r
	}
}

// No head-of-line blocking. A logical connection whose reader is absent
// fills its window; then its sender blocks (SendContext returns
// DeadlineExceeded), other IDs on the same socket keep flowing, and once
// the reader starts every message arrives, in order.
func TestNoHeadOfLineBlocking(t *testing.T) {
	const window = InitialWindow // the smallest a Config may set
	const size = 16 << 10
	srvCfg := &Config{StreamWindow: window, KeepAliveInterval: -1}
	cliCfg := &Config{StreamWindow: window}
	ln := listenTCP(t)
	addr := ln.Addr().String()
	slowSide := make(chan *Connection, 1)
	serveConns(t, ln, func(conn net.Conn) {
		// The first Wrap fixes the socket's Config: the small window.
		s, err := Wrap(conn, WithID("slow"), WithConfig(srvCfg))
		if err != nil {
			conn.Close()
			return
		}
		slowSide <- s
		if f, err := Wrap(conn, WithID("fast")); err == nil {
			echoLoop(f)
		}
	})

	slow := mustDial(t, addr, WithID("slow"), WithConfig(cliCfg))
	fast := mustDial(t, addr, WithID("fast"), WithConfig(cliCfg))
	if linkOf(slow) != linkOf(fast) {
		t.Fatal("slow and fast do not share a socket")
	}
	srvSlow := closeAtCleanup(t, <-slowSide)

	msg := func(i int) []byte {
		b := pattern(size, byte(i))
		binary.BigEndian.PutUint32(b, uint32(i))
		return b
	}
	// Fill the window: sends succeed until the credit is gone.
	sent := 0
	for ; sent < 1000; sent++ {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := slow.SendContext(ctx, msg(sent))
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	cost := size + messageOverhead
	if lo, hi := window/cost, window/cost+1; sent < lo || sent > hi {
		t.Fatalf("%d messages fit a %d-byte window, want %d..%d", sent, window, lo, hi)
	}

	// A sender stays blocked on "slow" while "fast" keeps working.
	const total = 12
	slowErr := make(chan error, 1)
	go func() {
		ctx := testContext(t)
		for i := sent; i < total; i++ {
			if err := slow.SendContext(ctx, msg(i)); err != nil {
				slowErr <- err
				return
			}
		}
		slowErr <- nil
	}()
	for i := range 100 {
		mustRoundTrip(t, fast, []byte(fmt.Sprint("fast ", i)))
	}
	select {
	case err := <-slowErr:
		t.Fatalf("the slow sender finished (%v) although nobody reads", err)
	default:
	}

	// The reader starts: nothing was dropped, order is kept.
	for i := range total {
		got := mustReceive(t, srvSlow)
		if !bytes.Equal(got, msg(i)) {
			t.Fatalf("message %d: got #%d (%d bytes)", i, binary.BigEndian.Uint32(got), len(got))
		}
	}
	if err := <-slowErr; err != nil {
		t.Fatal(err)
	}
}

// TestCreditReachesAPeerThatStopsReading: a receiver that takes messages
// and then neither reads nor writes again still returns their credit (the
// update waits for the next write, or at most lazyDelay): the sender,
// stopped by a full window, goes on. First the updates ride on replies,
// then none comes, over every transport.
func TestCreditReachesAPeerThatStopsReading(t *testing.T) {
	const size = 15 << 10 // four fill the 64 KiB window; three owe half of it back
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		win := &Config{StreamWindow: InitialWindow, MaxStreamWindow: InitialWindow}
		ln, cfg := tr.listen(t, win)
		took, release := make(chan error, 1), make(chan struct{})
		serveConns(t, ln, func(conn net.Conn) {
			c, err := Wrap(conn, WithConfig(win))
			if err != nil {
				took <- err
				return
			}
			defer c.Close()
			for range 3 { // the updates ride on the replies
				m, err := c.Receive()
				if err == nil {
					err = c.Send(m)
				}
				if err != nil {
					took <- err
					return
				}
			}
			for range 3 { // the last owes half the window back; no reply
				if _, err := c.Receive(); err != nil {
					took <- err
					return
				}
			}
			took <- nil
			<-release
		})
		t.Cleanup(func() { close(release) }) // before serveConns waits for the handler
		ctx := testContext(t)
		c := openClient(t, ln.Addr().String(), cfg, "credit")
		for i := range 3 {
			if err := roundTrip(ctx, c, pattern(size, byte(i))); err != nil {
				t.Fatalf("round trip %d: %v", i, err)
			}
		}
		for i := range 4 {
			if err := c.SendContext(ctx, pattern(size, byte(i))); err != nil {
				t.Fatalf("send %d of 4 into the window: %v", i, err)
			}
		}
		if err := <-took; err != nil {
			t.Fatalf("server: %v", err)
		}
		// The window is spent: these need the credit of the three taken.
		for i := range 2 {
			if err := within(t, prompt, "a send needing the returned credit", func() error {
				return c.SendContext(ctx, pattern(size, byte(i)))
			}); err != nil {
				t.Fatal(err)
			}
		}
	})
}
