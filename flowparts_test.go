// SPDX-License-Identifier: MIT

package tcpconn

import (
	"math"
	"testing"
)

// TestInflowChargeRefusesOnceTheCreditWasNotPositive checks that a frame
// is accepted while credit is positive, even one that overdraws it, that
// the next is refused, that a grant makes room again, and that charge
// tells when the credit is spent (the receiver then returns what it owes).
func TestInflowChargeRefusesOnceTheCreditWasNotPositive(t *testing.T) {
	type step struct {
		charge, grant int64
		ok, spent     bool // charge's answers
	}
	for _, tc := range []struct {
		name  string
		size  int64
		steps []step
	}{
		{"within", 100, []step{{charge: 60, ok: true}, {charge: 39, ok: true}, {charge: 1, ok: true, spent: true}}},
		{"spent exactly", 100, []step{{charge: 60, ok: true}, {charge: 40, ok: true, spent: true}, {charge: 1, spent: true}}},
		{"overdrawn once", 100, []step{{charge: 60, ok: true}, {charge: 60, ok: true, spent: true}, {charge: 1, spent: true}}},
		{"no credit", 0, []step{{charge: 1, spent: true}}},
		{"granted back", 100, []step{{charge: 150, ok: true, spent: true}, {grant: 80}, {charge: 29, ok: true}, {charge: 1, ok: true, spent: true}, {charge: 1, spent: true}}},
	} {
		var f inflow
		f.init(tc.size, 1)
		if f.window.base != tc.size || f.window.size.Load() != tc.size {
			t.Fatalf("%s: init: window %d of base %d", tc.name, f.window.size.Load(), f.window.base)
		}
		for i, s := range tc.steps {
			if s.grant != 0 {
				f.grant(s.grant)
			} else if ok, spent := f.charge(s.charge); ok != s.ok || spent != s.spent {
				t.Errorf("%s: step %d: charge(%d) = %v, %v, want %v, %v", tc.name, i, s.charge, ok, spent, s.ok, s.spent)
			}
		}
	}
}

// TestLinkInflowHoldRespectsTheLimitAndTheBudget checks that hold reserves
// from the Budget only within the link's limit and the Budget's room, and
// that a refused hold leaves both counts as they were.
func TestLinkInflowHoldRespectsTheLimitAndTheBudget(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		budget, others, limit int64 // others: reserved by other links
		held, cost            int64
		ok                    bool
	}{
		{"fits", 100, 0, 100, 0, 40, true},
		{"up to the limit", 100, 0, 100, 60, 40, true},
		{"past the limit", 1000, 0, 100, 80, 30, false},
		{"past the budget", 100, 70, 1000, 0, 40, false},
		{"past the budget with some held", 100, 30, 1000, 40, 40, false},
	} {
		f := linkInflow{budget: NewBudget(tc.budget)}
		f.budget.reserve(tc.others)
		if tc.held > 0 && !f.hold(tc.held, tc.limit) {
			t.Fatalf("%s: holding %d refused", tc.name, tc.held)
		}
		want := tc.held
		if tc.ok {
			want += tc.cost
		}
		if ok := f.hold(tc.cost, tc.limit); ok != tc.ok {
			t.Errorf("%s: hold(%d) = %v, want %v", tc.name, tc.cost, ok, tc.ok)
		}
		if h, u := f.held.Load(), f.budget.InUse(); h != want || u != tc.others+want {
			t.Errorf("%s: held %d, Budget in use %d; want %d, %d", tc.name, h, u, want, tc.others+want)
		}
	}
}

// TestLinkInflowUnholdGivesBackToTheBudget checks that bytes unheld go
// back to the Budget and make room under the link's limit again.
func TestLinkInflowUnholdGivesBackToTheBudget(t *testing.T) {
	f := linkInflow{budget: NewBudget(1000)}
	if !f.hold(60, 100) || !f.hold(40, 100) || f.hold(1, 100) {
		t.Fatal("holds up to a limit of 100: wrong answers")
	}
	f.unhold(60)
	if h, u := f.held.Load(), f.budget.InUse(); h != 40 || u != 40 {
		t.Fatalf("after unhold: held %d, Budget in use %d; want 40, 40", h, u)
	}
	if !f.hold(60, 100) {
		t.Fatal("a hold refused after unhold made room")
	}
}

// TestOutflowOpensWhileSpentIsBelowTheWindow checks that a frame may start
// while credit is positive (so one frame may overdraw it), and that take
// adds up what was spent.
func TestOutflowOpensWhileSpentIsBelowTheWindow(t *testing.T) {
	for _, tc := range []struct {
		takes []int64
		open  bool
	}{{nil, true}, {[]int64{60, 39}, true}, {[]int64{60, 40}, false}, {[]int64{99, 41}, false}} {
		var o outflow
		var spent int64
		for _, n := range tc.takes {
			o.take(n)
			spent += n
		}
		if o.spent != spent || o.open(100) != tc.open {
			t.Errorf("took %v of 100: spent %d, open %v; want %d, %v", tc.takes, o.spent, o.open(100), spent, tc.open)
		}
	}
}

// TestOutflowGiveRefusesCreditBeyondMaxWindow checks that a WINDOW is
// accepted while the credit it leaves stays within maxWindow.
func TestOutflowGiveRefusesCreditBeyondMaxWindow(t *testing.T) {
	for _, tc := range []struct {
		window, spent int64
		inc           uint32
		ok            bool
	}{
		{1 << 20, 100, 100, true},
		{1 << 20, 100, 300, true},
		{maxWindow, 10, 10, true},
		{maxWindow, 10, 11, false},
		{maxWindow, 0, 1, false},
		{1 << 20, 0, math.MaxUint32, false},
	} {
		o := outflow{spent: tc.spent}
		if ok := o.give(tc.inc, tc.window); ok != tc.ok {
			t.Errorf("window %d, spent %d: give(%d) = %v, want %v", tc.window, tc.spent, tc.inc, ok, tc.ok)
		}
		if tc.ok && o.spent != tc.spent-int64(tc.inc) {
			t.Errorf("window %d: spent %d after give(%d), want %d", tc.window, o.spent, tc.inc, tc.spent-int64(tc.inc))
		}
	}
}
