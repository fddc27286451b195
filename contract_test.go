// SPDX-License-Identifier: MIT

package tcpconn

// The user contract, tested as a user uses the library: the original
// TCP-Conn constructors and plain calls where the original TCP-Conn README
// has them, over TCP, TLS and net.Pipe (transport_test.go). Every blocking step is
// bounded (helpers_test.go: within, await, recvWithin), so a broken
// engine fails these tests; it never hangs them.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// wantInitialWindow is the credit every peer grants per logical connection
// and per socket before its HELLO arrives (0-RTT sends).
const wantInitialWindow = 64 << 10

// ---- the original TCP-Conn usage: Send before the server accepted ----

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

// ---- eager construction: the server speaks first ----

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

// ---- Close is prompt in every state; other wake-ups ----

// blockingCalls block while a client has no link yet: a Send beyond the
// initial window (up to it, Send returns at once) and a Receive.
var blockingCalls = []struct {
	name string
	call func(c *Connection) error
}{
	{"Send beyond the initial window", func(c *Connection) error { return c.Send(make([]byte, wantInitialWindow+1)) }},
	{"Receive", func(c *Connection) error { _, err := c.Receive(); return err }},
}

// blockedAfter: a call that has not returned after this long is taken to
// be blocked (a detection heuristic, not a promise about time).
const blockedAfter = 200 * time.Millisecond

// stillBlocked fails the test if the pending call returned within d: the
// test needs it blocked.
func stillBlocked(t testing.TB, pending <-chan error, d time.Duration, what string) {
	t.Helper()
	select {
	case err := <-pending:
		t.Fatalf("%s returned (%v) but should be blocked", what, err)
	case <-time.After(d):
	}
}

// closeWakes closes c and checks the contract of Close: it returns
// promptly, the blocked call returns ErrClosed promptly, and later calls
// return ErrClosed.
func closeWakes(t testing.TB, c *Connection, pending <-chan error, what string) {
	t.Helper()
	if err := within(t, prompt, "Close", c.Close); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantErr(t, await(t, pending, prompt, what+" blocked before Close"), ErrClosed)
	wantErr(t, within(t, prompt, "Send after Close", func() error { return c.Send([]byte("x")) }), ErrClosed)
	wantErr(t, within(t, prompt, "Receive after Close", func() error { _, err := c.Receive(); return err }), ErrClosed)
}

// TestContractCloseWhileDialling: Close is prompt while the client's dial
// is still in progress (a Dialer that blocks until its context ends), and
// wakes a call blocked behind the dial.
func TestContractCloseWhileDialling(t *testing.T) {
	for _, tc := range blockingCalls {
		t.Run(tc.name, func(t *testing.T) {
			dialing := make(chan struct{}, 1)
			cfg := &Config{Dialer: func(ctx context.Context, _, _ string) (net.Conn, error) {
				select {
				case dialing <- struct{}{}:
				default:
				}
				<-ctx.Done()
				return nil, ctx.Err()
			}}
			c := openClient(t, "blackhole.invalid:1", cfg, "a")
			pending := async(func() error { return tc.call(c) })
			select {
			case <-dialing:
			case <-time.After(promptRemote):
				t.Fatal("the client did not start dialling")
			}
			stillBlocked(t, pending, blockedAfter, tc.name)
			closeWakes(t, c, pending, tc.name)
		})
	}
}

// TestContractCloseWhileWaitingForHello: Close is prompt while the client
// waits for the server's HELLO (a TCP server that accepts and never reads
// or writes), and wakes the call that waits for it. Dial is the only call
// that waits for the HELLO: its context ending returns promptly.
func TestContractCloseWhileWaitingForHello(t *testing.T) {
	for _, tc := range blockingCalls {
		t.Run(tc.name, func(t *testing.T) {
			ln := listenTCP(t)
			c := openClient(t, ln.Addr().String(), nil, "a")
			pending := async(func() error { return tc.call(c) })
			acceptOne(t, ln) // and never read or write it
			stillBlocked(t, pending, blockedAfter, tc.name)
			closeWakes(t, c, pending, tc.name)
		})
	}
	t.Run("Dial context ends", func(t *testing.T) {
		ln := listenTCP(t)
		const wait = 300 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		err := within(t, wait+prompt, "Dial whose context ends", func() error {
			c, err := Dial(ctx, ln.Addr().String(), WithID("a"))
			if c != nil {
				c.Close()
			}
			return err
		})
		if err == nil || !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrHandshake) {
			t.Fatalf("Dial without a HELLO: %v, want the context's error or ErrHandshake", err)
		}
		acceptOne(t, ln)
	})
}

// windowMessage fills a 64 KiB stream window in fullWindow messages: each
// costs 16 KiB + 32 bytes of credit, and a message may overdraw the credit
// while it is positive, so the fourth is sent and the fifth waits.
const (
	windowMessage = 16 << 10
	fullWindow    = 4
)

// fillWindow connects client "a" to a server Connection "a" whose stream
// window is 64 KiB and which never receives (a second server Connection,
// "keep", holds the socket open when "a" closes), and sends 16 KiB
// messages on the client until the window is full. The sender goroutine then blocks
// in Send; its error arrives on sendErr. opts are added to the client's.
func fillWindow(t *testing.T, tr testTransport, opts ...Option) (c, s *Connection, sendErr <-chan error) {
	t.Helper()
	ln, cfg := tr.listen(t, nil)
	c = Open(ln.Addr().String(), append([]Option{WithID("a"), WithConfig(cfg)}, opts...)...)
	closePromptlyAtCleanup(t, c)
	var sent atomic.Int64
	sendErr = async(func() error {
		msg := make([]byte, windowMessage)
		for range 1000 {
			if err := c.Send(msg); err != nil {
				return err
			}
			sent.Add(1)
		}
		return errors.New("1000 Sends of 16 KiB returned: the 64 KiB window never held one back")
	})
	conn := acceptOne(t, ln)
	s, err := Wrap(conn, WithID("a"), WithConfig(&Config{StreamWindow: 64 << 10}))
	if err != nil {
		t.Fatal(err)
	}
	closePromptlyAtCleanup(t, s)
	wrapServer(t, conn, "keep")
	eventually(t, "the server's queue to hold a full window", func() bool {
		if queued(s) >= fullWindow && sent.Load() >= fullWindow {
			return true
		}
		select {
		case err := <-sendErr:
			t.Fatalf("a Send returned %v before the window was full (%d sent)", err, sent.Load())
		default:
		}
		return false
	})
	return c, s, sendErr
}

// TestContractBlockedSendWakes: a Send blocked on flow-control credit
// (the server never receives) is woken by Close (ErrClosed), by the
// client's idle timeout (ErrIdleTimeout) and by the peer closing the
// logical connection (ErrPeerClosed).
func TestContractBlockedSendWakes(t *testing.T) {
	const idle = 300 * time.Millisecond
	cases := []struct {
		name  string
		opts  []Option
		wake  func(t *testing.T, c, s *Connection)
		want  error
		bound time.Duration
	}{
		{"Close", nil, func(t *testing.T, c, _ *Connection) {
			if err := within(t, prompt, "Close", c.Close); err != nil {
				t.Fatalf("Close: %v", err)
			}
		}, ErrClosed, prompt},
		{"idle timeout", []Option{WithIdleTimeout(idle)}, nil, ErrIdleTimeout, idle + 2*prompt},
		{"peer Close", nil, func(t *testing.T, _, s *Connection) {
			if err := within(t, prompt, "the server's Close", s.Close); err != nil {
				t.Fatalf("server Close: %v", err)
			}
		}, ErrPeerClosed, promptRemote},
	}
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c, s, sendErr := fillWindow(t, tr, tc.opts...)
				if tc.wake != nil {
					stillBlocked(t, sendErr, blockedAfter, "Send on a full window")
					tc.wake(t, c, s)
				}
				wantErr(t, await(t, sendErr, tc.bound, "Send blocked on credit"), tc.want)
			})
		}
	})
}

// TestContractCloseWakesReceive: Close wakes a blocked Receive at once, on
// either side.
func TestContractCloseWakesReceive(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		for _, side := range []string{"client", "server"} {
			t.Run(side, func(t *testing.T) {
				ln, cfg := tr.listen(t, nil)
				c := openClient(t, ln.Addr().String(), cfg, "a")
				hello := async(func() error { return c.Send([]byte("hello")) })
				s := wrapServer(t, acceptOne(t, ln), "a")
				if err := await(t, hello, testTimeout, "the client's Send"); err != nil {
					t.Fatal(err)
				}
				if got := recvWithin(t, s, testTimeout); string(got) != "hello" {
					t.Fatalf("server received %q", got)
				}
				if side == "server" {
					c = s
				}
				blocked := async(func() error { _, err := c.Receive(); return err })
				stillBlocked(t, blocked, blockedAfter, "Receive")
				closeWakes(t, c, blocked, "Receive")
			})
		}
	})
}

// TestContractCloseRacesLinkClose: Close while the server closes the socket
// at the same moment is still prompt; the blocked Receive returns promptly
// with ErrClosed or ErrLinkLost (whichever won), later calls with ErrClosed.
func TestContractCloseRacesLinkClose(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		for i := range 10 {
			ln, cfg := tr.listen(t, nil)
			c := openClient(t, ln.Addr().String(), cfg, "a")
			hello := async(func() error { return c.Send([]byte("hello")) })
			conn := acceptOne(t, ln)
			s := wrapServer(t, conn, "a")
			if err := await(t, hello, testTimeout, "the client's Send"); err != nil {
				t.Fatal(err)
			}
			if got := recvWithin(t, s, testTimeout); string(got) != "hello" {
				t.Fatalf("server received %q", got)
			}
			blocked := async(func() error { _, err := c.Receive(); return err })
			stillBlocked(t, blocked, blockedAfter, "Receive")
			start := make(chan struct{})
			linkClosed := async(func() error { <-start; return conn.Close() })
			closed := async(func() error { <-start; return c.Close() })
			close(start)
			if err := await(t, closed, prompt, "Close racing the socket's close"); err != nil {
				t.Fatalf("iteration %d: Close: %v", i, err)
			}
			if err := await(t, blocked, prompt, "Receive blocked when Close raced the socket's close"); !errors.Is(err, ErrClosed) && !errors.Is(err, ErrLinkLost) {
				t.Fatalf("iteration %d: the blocked Receive returned %v, want ErrClosed or ErrLinkLost", i, err)
			}
			wantErr(t, within(t, prompt, "Send after Close", func() error { return c.Send([]byte("x")) }), ErrClosed)
			await(t, linkClosed, prompt, "the server socket's Close")
		}
	})
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

// ---- every method is safe for concurrent use ----

// numbered is message seq of sender g: [g u16][seq u32] then a body
// derived from both; every 97th is larger than the 32 KiB copy limit.
func numbered(g, seq int) []byte {
	n := 6 + (g*7+seq)%200
	if seq%97 == 0 {
		n = 40 << 10
	}
	b := pattern(n, byte(g*31+seq))
	binary.BigEndian.PutUint16(b, uint16(g))
	binary.BigEndian.PutUint32(b[2:], uint32(seq))
	return b
}

func unnumber(b []byte) (g, seq int, err error) {
	if len(b) < 6 {
		return 0, 0, fmt.Errorf("a message of %d bytes", len(b))
	}
	g, seq = int(binary.BigEndian.Uint16(b)), int(binary.BigEndian.Uint32(b[2:]))
	if !bytes.Equal(b, numbered(g, seq)) {
		return g, seq, fmt.Errorf("message %d/%d corrupted", g, seq)
	}
	return g, seq, nil
}

// tally checks that numbered messages arrive exactly once.
type tally struct {
	want int
	mu   sync.Mutex
	seen map[string]int // "from/g/seq" -> times
	dups []string
	full chan struct{} // closed when want distinct messages arrived
	bad  chan error    // the first failure
}

func newTally(want int) *tally {
	return &tally{want: want, seen: map[string]int{}, full: make(chan struct{}), bad: make(chan error, 1)}
}

func (ta *tally) add(from string, data []byte) {
	g, seq, err := unnumber(data)
	if err != nil {
		ta.fail(err)
		return
	}
	k := fmt.Sprintf("%s/%d/%d", from, g, seq)
	ta.mu.Lock()
	defer ta.mu.Unlock()
	ta.seen[k]++
	if ta.seen[k] > 1 {
		ta.dups = append(ta.dups, k)
	} else if len(ta.seen) == ta.want {
		close(ta.full)
	}
}

func (ta *tally) fail(err error) {
	select {
	case ta.bad <- err:
	default:
	}
}

// wait returns once every message arrived, failing on loss (timeout), a
// failure or a duplicate.
func (ta *tally) wait(t testing.TB) {
	t.Helper()
	select {
	case <-ta.full:
	case err := <-ta.bad:
		t.Fatal(err)
	case <-time.After(testTimeout):
		ta.mu.Lock()
		n := len(ta.seen)
		ta.mu.Unlock()
		t.Fatalf("%d of %d messages arrived within %v", n, ta.want, testTimeout)
	}
	ta.mu.Lock()
	defer ta.mu.Unlock()
	if len(ta.dups) > 0 {
		t.Fatalf("%d duplicates, first %s", len(ta.dups), ta.dups[0])
	}
}

// receiveMode is how receiveAll's goroutines receive; both may read the
// socket themselves (no deadline).
type receiveMode struct {
	name string
	// receiver returns goroutine i's receive call; from is "" where the
	// call does not report the ID.
	receiver func(c *Connection, i int) func() (from string, data []byte, err error)
}

var receiveModes = []receiveMode{
	{"Receive", func(c *Connection, _ int) func() (string, []byte, error) {
		return func() (string, []byte, error) { return c.ReceiveFrom(context.Background()) }
	}},
	// Each goroutine reuses a buffer of its own, which messages are read
	// into in place; its first byte, the goroutine's number, must survive.
	{"ReceiveAppend", appendReceiver(false)},
	// The same with a context that can be canceled: on Linux TCP the
	// receivers read with noWait, elsewhere the background reader hands
	// every message over.
	{"ReceiveAppendContext", appendReceiver(true)},
}

// appendReceiver is receiveModes' ReceiveAppend, with a context that can
// be canceled or context.Background.
func appendReceiver(cancelable bool) func(c *Connection, i int) func() (string, []byte, error) {
	return func(c *Connection, i int) func() (string, []byte, error) {
		buf := append(make([]byte, 0, 64<<10), byte(i))
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if cancelable {
			ctx, cancel = context.WithCancel(ctx)
		}
		return func() (string, []byte, error) {
			out, err := c.ReceiveAppend(ctx, buf[:1])
			if err == nil && out[0] != byte(i) {
				err = fmt.Errorf("receiver %d: the first byte of its buffer became %d", i, out[0])
			}
			if err != nil {
				cancel() // the loop ends
				return "", nil, err
			}
			return "", out[1:], nil
		}
	}
}

// forEachReceiveMode runs f as a subtest per receiveModes entry.
func forEachReceiveMode(t *testing.T, f func(t *testing.T, mode receiveMode)) {
	t.Helper()
	for _, mode := range receiveModes {
		t.Run(mode.name, func(t *testing.T) { f(t, mode) })
	}
}

// receiveAll runs n goroutines receiving on c into ta as mode says, until
// an error. The returned stop closes c and waits (bounded) for them: the
// user's way to end receive loops.
func receiveAll(t testing.TB, c *Connection, n int, mode receiveMode, ta *tally) (stop func()) {
	var wg sync.WaitGroup
	var stopping atomic.Bool
	for i := range n {
		wg.Add(1)
		receive := mode.receiver(c, i)
		go func() {
			defer wg.Done()
			for {
				from, data, err := receive()
				if err != nil {
					if !stopping.Load() || !errors.Is(err, ErrClosed) {
						ta.fail(fmt.Errorf("%s on %q: %w", mode.name, c.ID(), err))
					}
					return
				}
				ta.add(from, data)
			}
		}()
	}
	return func() {
		t.Helper()
		stopping.Store(true)
		within(t, prompt, "Close", c.Close)
		within(t, prompt, fmt.Sprintf("%d receivers blocked in Receive, after Close,", n), func() error { wg.Wait(); return nil })
	}
}

const concurrentReceivers = 4

// TestContractConcurrentReceivers: four goroutines receiving on one
// Connection get each of 2,000 messages exactly once between them.
func TestContractConcurrentReceivers(t *testing.T) {
	const messages = 2000
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		forEachReceiveMode(t, func(t *testing.T, mode receiveMode) {
			ln, cfg := tr.listen(t, nil)
			c := openClient(t, ln.Addr().String(), cfg, "a")
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			ta := newTally(messages)
			stop := receiveAll(t, c, concurrentReceivers, mode, ta)
			s := wrapServer(t, acceptOne(t, ln), "a")
			sent := async(func() error {
				for seq := range messages {
					if err := s.SendContext(ctx, numbered(0, seq)); err != nil {
						return err
					}
				}
				return nil
			})
			ta.wait(t)
			if err := await(t, sent, testTimeout, "the server's Sends"); err != nil {
				t.Fatal(err)
			}
			stop()
		})
	})
}

// TestContractConcurrentReceiveFrom: four goroutines on one server catch-all
// get every message of four client IDs exactly once, each (ReceiveFrom)
// with the ID it was sent on.
func TestContractConcurrentReceiveFrom(t *testing.T) {
	const perID = 500
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		forEachReceiveMode(t, func(t *testing.T, mode receiveMode) {
			ln, cfg := tr.listen(t, nil)
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			var sends []<-chan error
			for g := range 4 {
				c := openClient(t, ln.Addr().String(), cfg, fmt.Sprintf("x%d", g))
				sends = append(sends, async(func() error {
					for seq := range perID {
						if err := c.SendContext(ctx, numbered(g, seq)); err != nil {
							return err
						}
					}
					return nil
				}))
			}
			ca := wrapServer(t, acceptOne(t, ln), "")
			ta := newTally(4 * perID)
			stop := receiveAll(t, ca, concurrentReceivers, mode, ta)
			ta.wait(t)
			for g, sent := range sends {
				if err := await(t, sent, testTimeout, "the client's Sends"); err != nil {
					t.Fatalf("sender x%d: %v", g, err)
				}
			}
			stop()
			for k := range ta.seen { // "from/g/seq": sender g sent on ID "x<g>"
				if f := strings.Split(k, "/"); f[0] != "" && f[0] != "x"+f[1] {
					t.Fatalf("message %s arrived with the wrong ID", k)
				}
			}
		})
	})
}

// TestContractConcurrentSendersAndReceivers: four goroutines send on one
// Connection while four others receive the echoes on it; every message
// comes back exactly once.
func TestContractConcurrentSendersAndReceivers(t *testing.T) {
	const senders, perSender = 4, 250
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		forEachReceiveMode(t, func(t *testing.T, mode receiveMode) {
			ln, cfg := tr.listen(t, nil)
			c := openClient(t, ln.Addr().String(), cfg, "a")
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			var sends []<-chan error
			for g := range senders {
				sends = append(sends, async(func() error {
					for seq := range perSender {
						if err := c.SendContext(ctx, numbered(g, seq)); err != nil {
							return err
						}
					}
					return nil
				}))
			}
			ta := newTally(senders * perSender)
			stop := receiveAll(t, c, concurrentReceivers, mode, ta)
			go echoLoop(wrapServer(t, acceptOne(t, ln), "a"))
			ta.wait(t)
			for g, sent := range sends {
				if err := await(t, sent, testTimeout, "the Sends"); err != nil {
					t.Fatalf("sender %d: %v", g, err)
				}
			}
			stop()
		})
	})
}

// ---- the engine's edge cases, as a user meets them ----

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

// TestContractReopenIDWhileClosePending: closing an ID and opening it again
// at once, 300 times with window updates in flight, never fails the link: a
// bystander on the same socket keeps its link and keeps round-tripping.
func TestContractReopenIDWhileClosePending(t *testing.T) {
	const rounds = 300
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		ln, cfg := tr.listen(t, &Config{StreamWindow: 64 << 10})
		serveConns(t, ln, func(conn net.Conn) {
			c, err := Wrap(conn, WithConfig(&Config{StreamWindow: 64 << 10}))
			if err == nil {
				echoLoop(c)
			}
		})
		addr := ln.Addr().String()
		b := openClient(t, addr, cfg, "b")
		mustRoundTrip(t, b, []byte("bystander"))
		l0 := linkOf(b)
		ctx := testContext(t)
		for i := range rounds {
			x := Open(addr, WithID("x"), WithConfig(cfg))
			for j := range 3 {
				if err := roundTrip(ctx, x, pattern(40<<10, byte(i+j))); err != nil {
					x.Close()
					t.Fatalf("round %d, message %d on the reopened x: %v", i, j, err)
				}
			}
			if err := within(t, prompt, "Close of x", x.Close); err != nil {
				t.Fatal(err)
			}
			if i%10 == 9 {
				if err := roundTrip(ctx, b, []byte("bystander")); err != nil {
					t.Fatalf("round %d: the bystander: %v", i, err)
				}
				if linkOf(b) != l0 {
					t.Fatalf("round %d: the bystander's link changed (the link failed)", i)
				}
			}
		}
		t.Logf("figures: %d incarnations of x, 3 round trips of 40 KiB each, over one link with 64 KiB stream windows", rounds)
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

// TestContractDialErrorIsLinkError: a Send to an address where nothing
// listens, or a dial that times out (DialTimeout 200 ms), returns promptly
// an error matching ErrLinkLost or ErrHandshake, never a bare context
// error, also on the retries after the first failure.
func TestContractDialErrorIsLinkError(t *testing.T) {
	closedAddr := func(t *testing.T) (string, *Config) {
		ln := listenTCP(t)
		addr := ln.Addr().String()
		ln.Close()
		return addr, &Config{DialTimeout: 200 * time.Millisecond}
	}
	blackHole := func(t *testing.T) (string, *Config) {
		return "blackhole.invalid:1", &Config{
			DialTimeout: 200 * time.Millisecond,
			Dialer: func(ctx context.Context, _, _ string) (net.Conn, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
		}
	}
	for _, tc := range []struct {
		name   string
		target func(t *testing.T) (string, *Config)
	}{{"closed port", closedAddr}, {"dial times out", blackHole}} {
		t.Run(tc.name, func(t *testing.T) {
			addr, cfg := tc.target(t)
			c := openClient(t, addr, cfg, "a")
			var errs []error
			start := time.Now()
			eventually(t, "three failed Sends", func() bool {
				err := within(t, 2*time.Second, "Send to "+tc.name, func() error { return c.Send([]byte("x")) })
				if err != nil {
					errs = append(errs, err)
				}
				return len(errs) >= 3
			})
			for i, err := range errs {
				if !errors.Is(err, ErrLinkLost) && !errors.Is(err, ErrHandshake) {
					t.Errorf("failed Send #%d: %v, want ErrLinkLost or ErrHandshake (never a bare context error)", i, err)
				}
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("three failed Sends took %v", d)
			}
		})
	}
}
