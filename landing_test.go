// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// TestLandingTakesOnlyAMessageThatMayGoFirst: the socket's reader copies a
// message into the buffer a parked receiver offered only when all of it is
// buffered, it fits, and nothing of the stream's must come before it;
// otherwise it reads nothing and the message goes the usual way.
func TestLandingTakesOnlyAMessageThatMayGoFirst(t *testing.T) {
	payload := []byte("0123456789")
	for _, tc := range []struct {
		name     string
		offer    int // bytes offered; 0: none
		buffered int // bytes of the payload the frame reader holds
		setup    func(s *stream)
		lands    bool
	}{
		{"lands", 16, 10, nil, true},
		{"lands in a buffer of its size", 10, 10, nil, true},
		{"nothing offered", 0, 10, nil, false},
		{"the buffer is too small", 9, 10, nil, false},
		{"not all of it buffered", 16, 9, nil, false},
		{"a message queued ahead of it", 16, 10, func(s *stream) { s.queue.push(message{data: []byte("first")}) }, false},
		{"held behind one on the lane", 16, 10, func(s *stream) { s.order.pending = 1 }, false},
		{"closed here", 16, 10, func(s *stream) { s.state.Store(streamLocalClosed) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := socketlessLink()
			l.reading.br = newFrameReader(bytes.NewReader(payload[:tc.buffered]), nil)
			if _, err := l.reading.br.Peek(tc.buffered); err != nil {
				t.Fatal(err)
			}
			s := l.newStream("a", nil, nil)
			if tc.setup != nil {
				tc.setup(s)
			}
			s.mu.Lock()
			w := s.parkLocked()
			buf := make([]byte, tc.offer)
			if tc.offer > 0 {
				s.offerLandingLocked(w, buf)
			}
			s.mu.Unlock()
			if got := l.land(s, len(payload)); got != tc.lands {
				t.Fatalf("land = %v, want %v", got, tc.lands)
			}
			woken := len(w.ch) == 1
			m := s.takeLanded(w)
			if tc.lands {
				if !woken || !bytes.Equal(m.data, payload) || &m.data[0] != &buf[0] || l.reading.br.Buffered() != 0 {
					t.Errorf("landed: woken %v, %q in the offered buffer %v, %d bytes left buffered; want true, %q, true, 0",
						woken, m.data, len(m.data) > 0 && &m.data[0] == &buf[0], l.reading.br.Buffered(), payload)
				}
			} else if woken || m.data != nil || l.reading.br.Buffered() != tc.buffered {
				t.Errorf("not landed: woken %v, %q taken, %d bytes buffered; want false, nothing, %d", woken, m.data, l.reading.br.Buffered(), tc.buffered)
			}
			if n := l.landings.Load(); n != 0 {
				t.Errorf("%d offers counted after the receiver took its buffer back, want 0", n)
			}
			if s.landing != nil && s.landing.owner != nil {
				t.Error("the offer outlived takeLanded")
			}
		})
	}
}

// TestLandingOneReceiverAtATime: a second receiver of the same stream
// parks without an offer, and a second message does not land in the
// first receiver's buffer before that receiver took its first.
func TestLandingOneReceiverAtATime(t *testing.T) {
	l := socketlessLink()
	l.reading.br = newFrameReader(bytes.NewReader([]byte("onetwo")), nil)
	if _, err := l.reading.br.Peek(6); err != nil {
		t.Fatal(err)
	}
	s := l.newStream("a", nil, nil)
	s.mu.Lock()
	first, second := s.parkLocked(), s.parkLocked()
	s.offerLandingLocked(first, make([]byte, 8))
	s.offerLandingLocked(second, make([]byte, 8))
	s.mu.Unlock()
	if s.landing.owner != first || l.landings.Load() != 1 {
		t.Fatalf("offers: owner is the first receiver %v, %d counted; want true, 1", s.landing.owner == first, l.landings.Load())
	}
	if !l.land(s, 3) {
		t.Fatal("the first message did not land")
	}
	if l.land(s, 3) {
		t.Fatal("a second message landed in a buffer that holds one already")
	}
	if len(second.ch) != 0 {
		t.Error("the second receiver was woken for a message that landed in the first's buffer")
	}
	if m := s.takeLanded(second); m.data != nil {
		t.Errorf("the second receiver took %q, which landed in the first's buffer", m.data)
	}
	if m := s.takeLanded(first); string(m.data) != "one" {
		t.Errorf("the first receiver took %q, want %q", m.data, "one")
	}
}

// TestReceiveAppendCanceledKeepsWhatLanded: receivers that give up at
// random points while another Connection's receiver reads the shared
// socket (so that their messages land in their buffers), one message at
// a time, lose nothing and
// see nothing twice: a call that gave up returns the message that landed
// in its buffer, or leaves it queued for the next call.
func TestReceiveAppendCanceledKeepsWhatLanded(t *testing.T) {
	const messages = 2000
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		ln, cfg := tr.listen(t, nil)
		holder := openClient(t, ln.Addr().String(), cfg, "holder")
		c := openClient(t, ln.Addr().String(), cfg, "impatient")
		// holder's receiver waits on the socket for a message that never
		// comes: it reads c's messages and lands them.
		held := async(func() error {
			_, err := holder.ReceiveAppend(context.Background(), make([]byte, 0, 1<<10))
			return err
		})
		srv := wrapServer(t, acceptOne(t, ln), "impatient")
		ctx := testContext(t)
		// One message at a time, each after the last was taken, so that
		// most arrive while c's receiver is parked, or giving up.
		sent := async(func() error {
			for seq := range messages {
				if err := srv.SendContext(ctx, numbered(0, seq)); err != nil {
					return err
				}
				if _, err := srv.ReceiveContext(ctx); err != nil {
					return err
				}
			}
			return nil
		})
		buf := make([]byte, 0, 64<<10)
		rng := rand.New(rand.NewPCG(1, 2))
		for next := 0; next < messages; {
			if ctx.Err() != nil {
				t.Fatalf("%d of %d messages arrived within the test's time", next, messages)
			}
			wait, cancel := context.WithTimeout(ctx, time.Duration(rng.IntN(200))*time.Microsecond)
			out, err := c.ReceiveAppend(wait, buf[:0])
			cancel()
			switch {
			case errors.Is(err, context.DeadlineExceeded):
				continue
			case err != nil:
				t.Fatalf("message %d: %v", next, err)
			}
			if _, seq, err := unnumber(out); err != nil || seq != next {
				t.Fatalf("got message %d (%v), want %d", seq, err, next)
			}
			mustSend(t, c, nil)
			next++
		}
		if err := await(t, sent, testTimeout, "the server's Sends"); err != nil {
			t.Fatal(err)
		}
		holder.Close()
		wantErr(t, await(t, held, prompt, "the holder's ReceiveAppend after Close"), ErrClosed)
	})
}
