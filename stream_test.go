// SPDX-License-Identifier: MIT

package tcpconn

import (
	"errors"
	"testing"
)

// socketlessLink is a link without a socket or goroutines, as newLink sets
// up its windows: its write queue has failed, so the window updates it
// queues go nowhere, and it holds from a Budget of its own.
func socketlessLink() *link {
	l := &link{cfg: DefaultConfig()}
	l.wq.init()
	l.wq.err = errors.New("no socket")
	l.inflow.init(int64(l.cfg.LinkWindow), nanotime())
	l.inflow.budget = NewBudget(1 << 20)
	return l
}

// linkCreditBack is the link credit l gave back to the peer: owed (not yet
// sent) or granted.
func linkCreditBack(l *link) int64 {
	return l.inflow.window.owed.Load() + l.inflow.credit.Load() - l.inflow.window.base
}

// deliverCost queues a message of cost bytes on s, with the link's Budget
// full if held is false so that it cannot hold it.
func deliverCost(s *stream, cost int64, held bool) {
	b := s.link.inflow.budget
	room := b.Limit() - b.InUse()
	if !held {
		b.reserve(room)
		defer b.release(room)
	}
	s.deliver(message{data: make([]byte, cost-messageOverhead)})
}

// TestReleaseLinkGivesHeldBytesToTheBudgetFirst: releaseLink gives back to
// the Budget what s holds, up to the bytes released, and only the rest to
// the peer as link credit.
func TestReleaseLinkGivesHeldBytesToTheBudgetFirst(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		held, release, toBack int64 // toBack: what goes back to the Budget
	}{
		{"nothing held", 0, 100, 0},
		{"more held than released", 300, 100, 100},
		{"as much held as released", 100, 100, 100},
		{"part of it held", 40, 100, 40},
	} {
		l := socketlessLink()
		s := l.newStream("a", nil, nil)
		if tc.held > 0 {
			if !l.inflow.hold(tc.held, int64(l.cfg.MaxLinkWindow)) {
				t.Fatalf("%s: holding %d refused", tc.name, tc.held)
			}
			s.held.Add(tc.held)
		}
		s.releaseLink(tc.release, controlAsync)
		left := tc.held - tc.toBack
		if u, h, lh := l.inflow.budget.InUse(), s.held.Load(), l.inflow.held.Load(); u != left || h != left || lh != left {
			t.Errorf("%s: Budget in use %d, held by the record %d, by the link %d; want %d", tc.name, u, h, lh, left)
		}
		if c := linkCreditBack(l); c != tc.release-tc.toBack {
			t.Errorf("%s: %d of link credit back, want %d", tc.name, c, tc.release-tc.toBack)
		}
	}
}

// TestDeliveriesAndReleasesLeaveTheBudgetAsItWas: whatever the order of
// held and unheld deliveries and of releases of the same total, the
// Budget ends where it started, nothing stays held, and every byte went
// back to the peer as link credit once (a held one when queued).
func TestDeliveriesAndReleasesLeaveTheBudgetAsItWas(t *testing.T) {
	type step struct {
		deliver, release int64
		held             bool
	}
	held := func(cost int64) step { return step{deliver: cost, held: true} }
	unheld := func(cost int64) step { return step{deliver: cost} }
	release := func(n int64) step { return step{release: n} }
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"held", []step{held(100), release(100)}},
		{"unheld", []step{unheld(100), release(100)}},
		{"held, then unheld", []step{held(100), unheld(200), release(100), release(200)}},
		{"unheld, then held", []step{unheld(100), held(200), release(100), release(200)}},
		{"interleaved", []step{held(100), release(100), unheld(50), held(70), release(50), release(70)}},
		{"all at once", []step{held(100), unheld(200), held(300), release(600)}},
		{"in other pieces", []step{held(100), held(100), unheld(100), release(150), release(150)}},
	} {
		l := socketlessLink()
		l.inflow.budget.reserve(1000) // other links'
		s := l.newStream("a", nil, nil)
		var delivered, released int64
		for i, st := range tc.steps {
			before := s.held.Load()
			if st.deliver > 0 {
				deliverCost(s, st.deliver, st.held)
				delivered += st.deliver
				want := int64(0)
				if st.held {
					want = st.deliver
				}
				if got := s.held.Load() - before; got != want {
					t.Fatalf("%s: step %d: delivery of %d held %d, want %d", tc.name, i, st.deliver, got, want)
				}
			} else {
				s.releaseLink(st.release, controlAsync)
				released += st.release
			}
			if h := s.held.Load(); h > delivered-released {
				t.Fatalf("%s: step %d: %d held, more than the %d not released", tc.name, i, h, delivered-released)
			}
		}
		if u, h, c := l.inflow.budget.InUse(), s.held.Load(), linkCreditBack(l); u != 1000 || h != 0 || c != delivered {
			t.Errorf("%s: Budget in use %d, held %d, link credit back %d; want 1000, 0, %d", tc.name, u, h, c, delivered)
		}
	}
}

// TestStreamDrainReleasesEveryQueuedMessage: drain empties the queue and
// gives the held bytes back to the Budget, the rest as link credit.
func TestStreamDrainReleasesEveryQueuedMessage(t *testing.T) {
	l := socketlessLink()
	s := l.newStream("a", nil, nil)
	deliverCost(s, 100, true)
	deliverCost(s, 200, false)
	deliverCost(s, 300, true)
	if u := l.inflow.budget.InUse(); u != 400 {
		t.Fatalf("%d of the Budget in use before drain, want 400", u)
	}
	s.drain()
	if n, u, h, c := s.queue.len(), l.inflow.budget.InUse(), s.held.Load(), linkCreditBack(l); n != 0 || u != 0 || h != 0 || c != 600 {
		t.Errorf("drained: %d queued, Budget in use %d, held %d, link credit back %d; want 0, 0, 0, 600", n, u, h, c)
	}
}
