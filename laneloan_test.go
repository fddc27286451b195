// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// loanFixture is a client whose messages reach a server Connection
// through a fault proxy (paused on demand) with the link's
// bulk lane up, the server's receiver driven by the test.
type loanFixture struct {
	proxy  *faultProxy
	client *Connection
	server *Connection
	st     *stream // the server Connection's record
}

// newLoanFixture starts it over tr (a transport with sockets: TCP or TLS).
func newLoanFixture(t *testing.T, tr testTransport) *loanFixture {
	t.Helper()
	return newLoanFixtureWith(t, tr, &Config{})
}

// newLoanFixtureWith is newLoanFixture with both sides' Config.
func newLoanFixtureWith(t *testing.T, tr testTransport, base *Config) *loanFixture {
	t.Helper()
	ln, cfg := tr.listen(t, base)
	srv, err := NewListener(ln, serverSide(cfg))
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan *Connection, 1)
	release := make(chan struct{})
	serveListener(t, srv, func(c *Connection) {
		accepted <- c
		<-release
	})
	t.Cleanup(func() { close(release) }) // before serveListener's, which waits for the handler
	f := &loanFixture{proxy: newFaultProxy(t, ln.Addr().String())}
	f.client = closeAtCleanup(t, Open(f.proxy.Addr(), WithID("loan"), WithConfig(cfg)))
	// A small message each way, then a large one: small traffic shares
	// the link, so the large one opens the lane.
	mustSend(t, f.client, []byte("hello"))
	select {
	case f.server = <-accepted:
	case <-time.After(testTimeout):
		t.Fatal("no server Connection")
	}
	f.receive(t, make([]byte, 0, 64))
	f.st = f.server.bind.Load().st
	mustSend(t, f.server, []byte("hello back"))
	mustReceive(t, f.client)
	mustSend(t, f.client, pattern(1<<20, 1))
	f.receive(t, make([]byte, 0, 2<<20))
	eventually(t, "a lane", func() bool { return linkOf(f.client).hasLane() })
	return f
}

// receive is one ReceiveAppend on the server into buf.
func (f *loanFixture) receive(t *testing.T, buf []byte) []byte {
	t.Helper()
	out, err := f.server.ReceiveAppend(testContext(t), buf)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// lent reports whether a lane message is being read into the server
// receiver's buffer.
func (f *loanFixture) lent() bool {
	f.st.mu.Lock()
	defer f.st.mu.Unlock()
	return f.st.loan != nil && f.st.loan.lm != nil
}

// trickle is the proxy's rate while a test watches a lane message arrive:
// read straight into a receiver's buffer, 16 MiB can otherwise land
// between two looks.
const trickle = 32 << 20

// lendOnce makes the server's receiver lend its buffer to a lane message:
// it waits in ReceiveAppend, with room for it, before the message is sent.
func (f *loanFixture) lendOnce(t *testing.T) {
	t.Helper()
	mustSend(t, f.client, []byte("small")) // keeps the next one on the lane
	f.receive(t, make([]byte, 0, 8))
	got := async(func() error {
		_, err := f.server.ReceiveAppend(testContext(t), make([]byte, 0, 2<<20))
		return err
	})
	eventually(t, "the receiver waiting", func() bool {
		f.st.mu.Lock()
		defer f.st.mu.Unlock()
		return len(f.st.waiters) > 0
	})
	f.proxy.rate.Store(trickle) // the offer comes before the message is whole
	defer f.proxy.rate.Store(0)
	lent := f.st.link.lanes.lent.Load()
	mustSend(t, f.client, pattern(1<<20, 4))
	if err := await(t, got, testTimeout, "the message"); err != nil {
		t.Fatal(err)
	}
	if f.st.link.lanes.lent.Load() == lent {
		t.Fatal("the message was not read into the receiver's buffer")
	}
}

// awaited reports whether the lane's reader waits for the server
// receiver's offer.
func (f *loanFixture) awaited() bool {
	f.st.mu.Lock()
	defer f.st.mu.Unlock()
	return f.st.loan != nil && f.st.loan.wanted != nil
}

// sameArray reports whether out begins at buf's backing array: a message
// read into buf, or copied there (lanes.lent tells the two apart).
func sameArray(out, buf []byte) bool {
	return cap(buf) > 0 && len(out) > 0 && &out[0] == &buf[:1][0]
}

// TestLaneLoanOrderAndContent: lane messages read straight into the
// receiver's buffer arrive whole and in their ID's order among small
// messages, and the buffer is really read into (no copy of ours).
func TestLaneLoanOrderAndContent(t *testing.T) {
	for _, tr := range testTransports[:2] { // sockets: the proxy forwards TCP
		t.Run(tr.name, func(t *testing.T) {
			f := newLoanFixture(t, tr)
			const n = 6
			f.proxy.rate.Store(trickle) // a receiver is back before each message is whole
			sent := async(func() error {
				for i := range n {
					if err := f.client.SendContext(testContext(t), pattern(1<<20+i, byte(10+i))); err != nil {
						return err
					}
					if err := f.client.SendContext(testContext(t), []byte{byte(i)}); err != nil {
						return err
					}
				}
				return nil
			})
			buf := make([]byte, 0, 2<<20)
			lent := f.st.link.lanes.lent.Load()
			for i := range n {
				out := f.receive(t, buf)
				if !bytes.Equal(out, pattern(1<<20+i, byte(10+i))) {
					t.Fatalf("message %d: %d bytes, not the %d sent", i, len(out), 1<<20+i)
				}
				if small := f.receive(t, make([]byte, 0, 8)); !bytes.Equal(small, []byte{byte(i)}) {
					t.Fatalf("after message %d came %v", i, small)
				}
			}
			if err := await(t, sent, testTimeout, "the sends"); err != nil {
				t.Fatal(err)
			}
			if f.st.link.lanes.lent.Load() == lent {
				t.Fatalf("none of %d lane messages was read into the receiver's buffer", n)
			}
		})
	}
}

// TestLaneLoanOfferedLate: a receiver that offers its buffer while the
// lane's reader is in the middle of the message, reading it into a buffer
// of ours, gets it: the reader, interrupted, moves what arrived into the
// buffer and reads the rest there, before the message is complete.
func TestLaneLoanOfferedLate(t *testing.T) {
	for _, tr := range testTransports[:2] {
		t.Run(tr.name, func(t *testing.T) {
			f := newLoanFixture(t, tr)
			big := pattern(DefaultMaxMessageSize, 3)
			mustSend(t, f.client, []byte("small")) // keeps big on the lane
			f.proxy.rate.Store(trickle)            // so that the test sees the message in flight
			sent := async(func() error { return f.client.SendContext(testContext(t), big) })
			f.receive(t, make([]byte, 0, 8))
			l := f.st.link
			start := l.lanes.read.Load()
			eventually(t, "the message begun in a buffer of ours", func() bool { return l.lanes.read.Load() > start })
			f.proxy.pauseUp() // the rest waits in the proxy: the message cannot complete
			f.proxy.rate.Store(0)
			buf := make([]byte, 0, len(big))
			got := make(chan []byte, 1)
			go func() {
				out, err := f.server.ReceiveAppend(testContext(t), buf)
				if err != nil {
					t.Error(err)
				}
				got <- out
			}()
			eventually(t, "the buffer taken while the message is incomplete", f.lent)
			f.proxy.resumeUp()
			var out []byte
			select {
			case out = <-got:
			case <-time.After(testTimeout):
				t.Fatal("the message never arrived")
			}
			if !bytes.Equal(out, big) || !sameArray(out, buf) {
				t.Fatalf("%d bytes (in the buffer: %v), want the %d sent, in the buffer", len(out), sameArray(out, buf), len(big))
			}
			if err := await(t, sent, testTimeout, "the send"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestLaneLoanAwaited: a receiver that lent its buffer before and is busy
// when the next lane message comes gets that message in its buffer: the
// lane's reader waits for its offer instead of reading the message into a
// buffer of ours. The wait is bounded, and ends with the Connection and
// with the link.
func TestLaneLoanAwaited(t *testing.T) {
	// sendBig sends msg on the lane, a small message first keeping it
	// there, and receives the small one into a buffer too small to lend.
	sendBig := func(t *testing.T, f *loanFixture, msg []byte) <-chan error {
		mustSend(t, f.client, []byte("small"))
		sent := async(func() error { return f.client.SendContext(testContext(t), msg) })
		f.receive(t, make([]byte, 0, 8))
		return sent
	}
	for _, tr := range testTransports[:2] {
		t.Run(tr.name+"/offered", func(t *testing.T) {
			f := newLoanFixtureWith(t, tr, &Config{laneLoanWait: time.Hour})
			f.lendOnce(t)
			msg := pattern(1<<20, 5)
			l := f.st.link
			start := l.lanes.read.Load()
			sent := sendBig(t, f, msg)
			eventually(t, "the reader waiting for the receiver's offer", f.awaited)
			if n := l.lanes.read.Load() - start; n >= uint64(len(msg))/2 {
				t.Fatalf("the reader read %d bytes of the message before the offer", n)
			}
			buf := make([]byte, 0, len(msg))
			lent := l.lanes.lent.Load()
			if out := f.receive(t, buf); !bytes.Equal(out, msg) || l.lanes.lent.Load() == lent {
				t.Fatalf("%d bytes (lent: %v), want the %d sent, read into the buffer", len(out), l.lanes.lent.Load() != lent, len(msg))
			}
			if err := await(t, sent, testTimeout, "the send"); err != nil {
				t.Fatal(err)
			}
		})
		t.Run(tr.name+"/never offered", func(t *testing.T) {
			f := newLoanFixture(t, tr) // the default wait
			f.lendOnce(t)
			msg := pattern(1<<20, 6)
			l := f.st.link
			start := l.lanes.read.Load()
			sent := sendBig(t, f, msg)
			eventually(t, "the message read into a buffer of ours", func() bool {
				return l.lanes.read.Load()-start >= uint64(len(msg))/2 // the rest came with PART headers
			})
			if out := f.receive(t, make([]byte, 0, 8)); !bytes.Equal(out, msg) {
				t.Fatalf("%d bytes, not the %d sent", len(out), len(msg))
			}
			if err := await(t, sent, testTimeout, "the send"); err != nil {
				t.Fatal(err)
			}
		})
		// A receiver that comes without a buffer to lend, after the reader
		// began to wait or before the message was announced, ends the
		// wait (else it lasts an hour) and gets the message.
		t.Run(tr.name+"/receiver without a buffer", func(t *testing.T) {
			f := newLoanFixtureWith(t, tr, &Config{laneLoanWait: time.Hour})
			f.lendOnce(t)
			msg := pattern(1<<20, 9)
			sent := sendBig(t, f, msg)
			eventually(t, "the reader waiting for the receiver's offer", f.awaited)
			if out := f.receive(t, make([]byte, 0, 8)); !bytes.Equal(out, msg) {
				t.Fatalf("%d bytes, not the %d sent", len(out), len(msg))
			}
			if err := await(t, sent, testTimeout, "the send"); err != nil {
				t.Fatal(err)
			}
		})
		t.Run(tr.name+"/receiver without a buffer first", func(t *testing.T) {
			f := newLoanFixtureWith(t, tr, &Config{laneLoanWait: time.Hour})
			f.lendOnce(t)
			mustSend(t, f.client, []byte("small")) // keeps the next one on the lane
			f.receive(t, make([]byte, 0, 8))
			msg := pattern(1<<20, 10)
			var out []byte
			got := async(func() (err error) {
				out, err = f.server.Receive()
				return err
			})
			eventually(t, "the receiver waiting", func() bool {
				f.st.mu.Lock()
				defer f.st.mu.Unlock()
				return len(f.st.waiters) > 0 || f.st.link.token.direct.Load()
			})
			bulk := f.st.link.lanes.bulkIn.Load()
			mustSend(t, f.client, msg)
			if err := await(t, got, testTimeout, "the Receive"); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, msg) || f.st.link.lanes.bulkIn.Load() == bulk {
				t.Fatalf("%d bytes (on the lane: %v), want the %d sent, on the lane", len(out), f.st.link.lanes.bulkIn.Load() != bulk, len(msg))
			}
		})
		t.Run(tr.name+"/closed", func(t *testing.T) {
			f := newLoanFixtureWith(t, tr, &Config{laneLoanWait: time.Hour})
			f.lendOnce(t)
			sent := sendBig(t, f, pattern(1<<20, 8))
			eventually(t, "the reader waiting for the receiver's offer", f.awaited)
			l := f.st.link
			start := l.lanes.read.Load()
			f.server.Close()
			// The wait ends with the Connection (else it lasts an hour),
			// and the reader goes on: the message is read and dropped.
			eventually(t, "the message read after the Close", func() bool {
				return !f.awaited() && l.lanes.read.Load()-start >= 1<<19
			})
			if l.failed() {
				t.Fatal("closing the Connection failed its link")
			}
			if err := await(t, sent, testTimeout, "the send"); err != nil {
				t.Fatal(err)
			}
		})
		t.Run(tr.name+"/link lost", func(t *testing.T) {
			f := newLoanFixtureWith(t, tr, &Config{laneLoanWait: time.Hour})
			f.lendOnce(t)
			sendBig(t, f, pattern(1<<20, 7))
			eventually(t, "the reader waiting for the receiver's offer", f.awaited)
			f.proxy.killAll(true)
			l := f.st.link
			// The wait ends with the link (else it lasts an hour). What the
			// server's Connection gets next depends on how soon the client
			// reconnects, which may send the message again.
			eventually(t, "the link failed and its lane's reader gone", func() bool {
				return l.failed() && !f.awaited()
			})
		})
	}
}

// TestLaneLoanTakenBack: a receiver whose buffer a lane message is being
// read into stops waiting (its context ends, its Connection closes, the
// link is lost) with the message half arrived. Its call returns promptly
// with the cause, the buffer is never written after it returned, and a
// message that goes on arriving is received whole by the next call.
func TestLaneLoanTakenBack(t *testing.T) {
	cases := []struct {
		name    string
		stop    func(f *loanFixture, cancel context.CancelFunc)
		want    error
		resumes bool // the message still arrives, for the next call
	}{
		{"cancel", func(_ *loanFixture, cancel context.CancelFunc) { cancel() }, context.Canceled, true},
		{"close", func(f *loanFixture, _ context.CancelFunc) { f.server.Close() }, ErrClosed, false},
		{"link lost", func(f *loanFixture, _ context.CancelFunc) { f.proxy.killAll(true) }, ErrLinkLost, false},
	}
	for _, tr := range testTransports[:2] {
		for _, tc := range cases {
			t.Run(tr.name+"/"+tc.name, func(t *testing.T) {
				f := newLoanFixture(t, tr)
				big := pattern(DefaultMaxMessageSize, 7)
				// A small message just before: it keeps big on the lane.
				mustSend(t, f.client, []byte("small"))
				f.proxy.rate.Store(trickle) // so that the test sees the message in flight
				sent := async(func() error { return f.client.SendContext(testContext(t), big) })
				f.receive(t, make([]byte, 0, 8))
				buf := make([]byte, 0, len(big))
				ctx, cancel := context.WithCancel(testContext(t))
				defer cancel()
				got := async(func() error {
					_, err := f.server.ReceiveAppend(ctx, buf)
					return err
				})
				l := f.st.link
				start := l.lanes.read.Load()
				eventually(t, "the message begun in the buffer", func() bool {
					return f.lent() && l.lanes.read.Load() > start
				})
				f.proxy.pauseUp() // the rest waits in the proxy, but what is in flight
				f.proxy.rate.Store(0)
				if !f.lent() {
					t.Fatal("the message arrived before the pause: nothing to take back")
				}
				tc.stop(f, cancel)
				err := await(t, got, 5*time.Second, "the receiver to stop")
				wantErr(t, err, tc.want)
				full := buf[:cap(buf)]
				for i := range full {
					full[i] = 0xEE
				}
				f.proxy.resumeUp()
				if tc.resumes {
					if out := f.receive(t, make([]byte, 0, len(big))); !bytes.Equal(out, big) {
						t.Fatalf("the message resumed: %d bytes, not the %d sent", len(out), len(big))
					}
					if err := await(t, sent, testTimeout, "the send"); err != nil {
						t.Fatal(err)
					}
				} else {
					// Whatever the lane still brings goes elsewhere: wait
					// until its reader is done with the message or the link.
					eventually(t, "the lane message finished or given up", func() bool {
						return l.failed() || l.lanes.in.empty()
					})
				}
				if bytes.Count(full, []byte{0xEE}) != len(full) {
					t.Fatal("the buffer was written after its call returned")
				}
				if f.lent() {
					t.Fatal("a loan outlived its receiver")
				}
			})
		}
	}
}

// TestLaneLoanManyReceivers: several goroutines receive on one Connection
// into buffers of their own while lane messages and small ones arrive:
// one buffer is lent at a time, a message read into a buffer goes to the
// call that lent it, and every message arrives once and whole.
func TestLaneLoanManyReceivers(t *testing.T) {
	for _, tr := range testTransports[:2] {
		t.Run(tr.name, func(t *testing.T) {
			f := newLoanFixture(t, tr)
			const n, receivers = 24, 3
			size := func(i int) int {
				if i%3 == 2 {
					return 100 + i // a small one now and then
				}
				return 1<<20 + i
			}
			sent := async(func() error {
				for i := range n {
					if err := f.client.SendContext(testContext(t), pattern(size(i), byte(i))); err != nil {
						return err
					}
				}
				return nil
			})
			got := make(chan []byte, n)
			errs := make(chan error, receivers)
			for range receivers {
				go func() {
					buf := make([]byte, 0, 2<<20)
					for {
						out, err := f.server.ReceiveAppend(testContext(t), buf[:0])
						if err != nil {
							errs <- err
							return
						}
						got <- bytes.Clone(out)
					}
				}()
			}
			seen := make(map[int]bool)
			for range n {
				var m []byte
				select {
				case m = <-got:
				case err := <-errs:
					t.Fatal(err)
				case <-time.After(testTimeout):
					t.Fatalf("%d of %d messages arrived", len(seen), n)
				}
				i := len(m) - 1<<20
				if len(m) < 1<<20 {
					i = len(m) - 100
				}
				if i < 0 || i >= n || seen[i] || !bytes.Equal(m, pattern(size(i), byte(i))) {
					t.Fatalf("a message of %d bytes that was not sent, or twice", len(m))
				}
				seen[i] = true
			}
			if err := await(t, sent, testTimeout, "the sends"); err != nil {
				t.Fatal(err)
			}
			f.server.Close() // ends the receivers
			for range receivers {
				wantErr(t, await(t, errs, testTimeout, "a receiver to end"), ErrClosed)
			}
		})
	}
}
