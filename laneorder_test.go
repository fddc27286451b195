// SPDX-License-Identifier: MIT

package tcpconn

import (
	"errors"
	"slices"
	"testing"
)

// laneEvent is what arrives for one record, in the order it arrives: a
// message on the link's socket, a BULK announcement, the bytes of the
// oldest announced message off the lane, or the peer's CLOSE.
type laneEvent struct {
	main  string // a message on the link's socket
	bulk  bool   // BULK for the next lane message
	lane  string // the oldest announced message arrives
	close bool   // the peer's CLOSE
}

// TestLaneOrderDeliversInSendOrder: whatever the lane's timing, the record
// queues messages in the order they were sent, and the peer's CLOSE takes
// effect only after the messages sent before it.
func TestLaneOrderDeliversInSendOrder(t *testing.T) {
	for _, tc := range []struct {
		name       string
		events     []laneEvent
		want       []string
		wantClosed bool
	}{
		{"no lane", []laneEvent{{main: "a"}, {main: "b"}}, []string{"a", "b"}, false},
		{"lane message before later ones", []laneEvent{{bulk: true}, {main: "b"}, {main: "c"}, {lane: "A"}}, []string{"A", "b", "c"}, false},
		{"messages before the announcement go first", []laneEvent{{main: "a"}, {bulk: true}, {main: "b"}, {lane: "A"}}, []string{"a", "A", "b"}, false},
		{"two lane messages with one between", []laneEvent{{bulk: true}, {main: "b"}, {bulk: true}, {main: "c"}, {lane: "A"}, {lane: "B"}},
			[]string{"A", "b", "B", "c"}, false},
		{"the second lane message holds what follows it", []laneEvent{{bulk: true}, {main: "b"}, {bulk: true}, {main: "c"}, {lane: "A"}},
			[]string{"A", "b"}, false},
		{"the peer's CLOSE waits for the lane", []laneEvent{{bulk: true}, {main: "b"}, {close: true}}, nil, false},
		{"then takes effect after it", []laneEvent{{bulk: true}, {main: "b"}, {close: true}, {lane: "A"}}, []string{"A", "b"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := socketlessLink()
			s := l.newStream("x", new(Connection), nil) // owned: a record nobody owns is drained at the peer's CLOSE
			for _, e := range tc.events {
				switch {
				case e.bulk:
					s.expectLane()
				case e.lane != "":
					s.fromLane(message{data: []byte(e.lane)})
				case e.close:
					if err := l.onPeerClose(s, closeNormal); err != nil {
						t.Fatal(err)
					}
				default:
					s.deliver(message{data: []byte(e.main)})
				}
			}
			var got []string
			s.mu.Lock()
			for {
				m, ok := s.popMessageLocked()
				if !ok {
					break
				}
				got = append(got, string(m.data))
			}
			closed := errors.Is(s.err, ErrPeerClosed)
			s.mu.Unlock()
			if !slices.Equal(got, tc.want) || closed != tc.wantClosed {
				t.Fatalf("queued %q, closed %v; want %q, closed %v", got, closed, tc.want, tc.wantClosed)
			}
		})
	}
}

// TestLaneAbandonedReleasesWhatArrivedWhole: when the link fails with a
// lane message pending, the messages held behind it are queued (they
// arrived whole) and the held CLOSE takes effect.
func TestLaneAbandonedReleasesWhatArrivedWhole(t *testing.T) {
	l := socketlessLink()
	s := l.newStream("x", new(Connection), nil) // owned: a record nobody owns is drained at the peer's CLOSE
	s.expectLane()
	s.deliver(message{data: []byte("b")})
	s.expectLane()
	s.deliver(message{data: []byte("c")})
	if err := l.onPeerClose(s, closeNormal); err != nil {
		t.Fatal(err)
	}
	s.laneAbandoned()
	s.mu.Lock()
	defer s.mu.Unlock()
	var got []string
	for {
		m, ok := s.popMessageLocked()
		if !ok {
			break
		}
		got = append(got, string(m.data))
	}
	if !slices.Equal(got, []string{"b", "c"}) || !errors.Is(s.err, ErrPeerClosed) || s.order.pending != 0 {
		t.Fatalf("queued %q, err %v, pending %d; want b, c, ErrPeerClosed, 0", got, s.err, s.order.pending)
	}
}
