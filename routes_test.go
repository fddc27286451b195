// SPDX-License-Identifier: MIT

package tcpconn

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// storeRecord stores a fresh record for id in tab, counted as reserve does.
func storeRecord(tab *routeTable, id string) *stream {
	tab.n.Add(1)
	s := &stream{id: id, acks: new(atomic.Int32)}
	tab.byID.Store(id, s)
	return s
}

// TestRouteTableLoadAndEachSeeTheStoredRecords checks that load finds a
// stored record and nothing else, and that each visits every record and
// stops when its function returns false.
func TestRouteTableLoadAndEachSeeTheStoredRecords(t *testing.T) {
	var tab routeTable
	a, b := storeRecord(&tab, "a"), storeRecord(&tab, "b")
	if s, ok := tab.load("a"); !ok || s != a {
		t.Fatalf(`load("a") = %p, %v; want %p, true`, s, ok, a)
	}
	if s, ok := tab.load("c"); ok || s != nil {
		t.Fatalf(`load("c") = %p, %v; want nil, false`, s, ok)
	}
	var seen []*stream
	tab.each(func(s *stream) bool { seen = append(seen, s); return true })
	if len(seen) != 2 || !slices.Contains(seen, a) || !slices.Contains(seen, b) {
		t.Fatalf("each visited %d records, want a and b", len(seen))
	}
	n := 0
	if tab.each(func(*stream) bool { n++; return false }); n != 1 {
		t.Fatalf("each visited %d records after false, want 1", n)
	}
}

// TestRouteTableReserveRespectsTheLimit checks that concurrent
// reservations, some released again as records close, never hold more
// records than the limit, that the count ends at what is still held, and
// that the table then takes exactly the rest up to the limit.
func TestRouteTableReserveRespectsTheLimit(t *testing.T) {
	for _, limit := range []int{0, 1, 7, 64} {
		var tab routeTable
		var held, kept atomic.Int64
		var wg sync.WaitGroup
		for g := range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 50 {
					if !tab.reserve(limit) {
						continue
					}
					if h := held.Add(1); h > int64(limit) {
						t.Errorf("limit %d: %d records held", limit, h)
					}
					if g%2 == 0 { // keep it: it stays counted
						kept.Add(1)
						return
					}
					held.Add(-1)
					tab.n.Add(-1) // released as remove does
				}
			}()
		}
		wg.Wait()
		if n, k := tab.n.Load(), kept.Load(); n != k || k > int64(limit) {
			t.Errorf("limit %d: count %d with %d records kept", limit, n, k)
		}
		rest := 0
		for tab.reserve(limit) {
			rest++
		}
		if k := kept.Load(); int(k)+rest != limit {
			t.Errorf("limit %d: %d records kept, then %d more fit", limit, k, rest)
		}
	}
}

// TestRouteTableRemoveOnlyRemovesTheCurrentRecord checks that removing a
// replaced incarnation leaves its successor and the count alone, and that
// removing the current record drops it, marks it retired and uncounts it
// once.
func TestRouteTableRemoveOnlyRemovesTheCurrentRecord(t *testing.T) {
	var tab routeTable
	old := storeRecord(&tab, "a")
	cur := &stream{id: "a", acks: old.acks}
	tab.byID.Store("a", cur) // a new incarnation takes old's place and count
	tab.addUnclaimed(old, 1)

	tab.remove(old)
	if s, _ := tab.load("a"); s != cur || tab.n.Load() != 1 || old.retired.Load() {
		t.Fatalf("remove(replaced): record %p (want %p), count %d, retired %v", s, cur, tab.n.Load(), old.retired.Load())
	}
	if got := tab.takeExpired(2); len(got) != 0 {
		t.Fatal("remove(replaced) left it unclaimed")
	}
	for range 2 {
		tab.remove(cur)
	}
	if _, ok := tab.load("a"); ok || tab.n.Load() != 0 || !cur.retired.Load() {
		t.Fatalf("remove(current) twice: loaded %v, count %d, retired %v", ok, tab.n.Load(), cur.retired.Load())
	}
}

// TestRouteTableTakeExpiredTakesRecordsCreatedBeforeTheLimit checks that
// takeExpired returns the unclaimed records created strictly before its
// limit, once, and never a claimed one.
func TestRouteTableTakeExpiredTakesRecordsCreatedBeforeTheLimit(t *testing.T) {
	for _, tc := range []struct {
		limit int64
		want  []string
	}{{10, nil}, {11, []string{"a"}}, {30, []string{"a", "b"}}, {31, []string{"a", "b", "d"}}} {
		var tab routeTable
		for id, born := range map[string]int64{"a": 10, "b": 20, "c": 25, "d": 30} {
			s := &stream{id: id}
			tab.addUnclaimed(s, born)
			if id == "c" { // claimed: never expires
				tab.claimed(s)
			}
		}
		var got []string
		for _, s := range tab.takeExpired(tc.limit) {
			got = append(got, s.id)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("takeExpired(%d) = %v, want %v", tc.limit, got, tc.want)
		}
		if again := tab.takeExpired(tc.limit); len(again) != 0 {
			t.Errorf("takeExpired(%d) again returned %d records", tc.limit, len(again))
		}
	}
}
