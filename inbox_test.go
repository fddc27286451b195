// SPDX-License-Identifier: MIT

package tcpconn

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestFifoPopsInPushOrder: pop returns what was pushed, oldest first, and
// reports false when empty; len counts what is left.
func TestFifoPopsInPushOrder(t *testing.T) {
	for _, ops := range []string{"-", "1-", "1--", "123---", "12-3--", "12--34---"} { // digit: push; -: pop
		var q fifo[byte]
		var want []byte
		for i, op := range []byte(ops) {
			if op != '-' {
				q.push(op)
				want = append(want, op)
			} else if v, ok := q.pop(); ok != (len(want) > 0) || ok && v != want[0] {
				t.Fatalf("%q, op %d: pop = %c, %v; want %q first", ops, i, v, ok, want)
			} else if ok {
				want = want[1:]
			}
			if q.len() != len(want) {
				t.Fatalf("%q, op %d: len %d, want %d", ops, i, q.len(), len(want))
			}
		}
	}
}

// TestFifoStartsOverOnceDrained: a popped slot no longer holds its value;
// a drained fifo's next push goes to index 0, and its slice is dropped if
// it has more than 64 slots, kept otherwise.
func TestFifoStartsOverOnceDrained(t *testing.T) {
	for _, tc := range []struct {
		cap     int
		dropped bool
	}{{3, false}, {64, false}, {65, true}, {128, true}} {
		q := fifo[*int]{items: make([]*int, 0, tc.cap)}
		for range 3 {
			q.push(new(int))
		}
		for q.len() > 0 {
			if q.pop(); q.head > 0 && q.items[q.head-1] != nil {
				t.Fatalf("capacity %d: slot %d still holds what pop returned", tc.cap, q.head-1)
			}
		}
		if (q.items == nil) != tc.dropped || q.head != 0 {
			t.Errorf("capacity %d, drained: slice nil %v, head %d; want nil %v, head 0", tc.cap, q.items == nil, q.head, tc.dropped)
		}
		q.push(new(int))
		if q.head != 0 || len(q.items) != 1 {
			t.Errorf("capacity %d, drained, pushed: head %d of %d items, want 0 of 1", tc.cap, q.head, len(q.items))
		}
	}
}

// wokenOf shows which waiters hold a wake-up: "10", the first of two.
func wokenOf(ws ...*waiter) string {
	b := make([]byte, len(ws))
	for i, w := range ws {
		b[i] = '0' + byte(len(w.ch))
	}
	return string(b)
}

// TestInboxWakesTheOldestReceiverFirst: each wakeLocked wakes one parked
// receiver, the oldest, and reports false once none is left.
func TestInboxWakesTheOldestReceiverFirst(t *testing.T) {
	l := socketlessLink()
	s := l.newStream("a", nil, nil)
	ws := []*waiter{s.parkLocked(), s.parkLocked(), s.parkLocked()}
	for i, want := range []string{"100", "110", "111"} {
		if ok := s.wakeLocked(); !ok || wokenOf(ws...) != want || l.token.parked.Load() != int32(2-i) {
			t.Fatalf("wake %d: %v, woken %s, parked %d; want true, %s, %d", i+1, ok, wokenOf(ws...), l.token.parked.Load(), want, 2-i)
		}
	}
	if s.wakeLocked() {
		t.Fatal("wakeLocked with nobody parked reported a receiver woken")
	}
}

// TestInboxFailWakesEveryoneAndKeepsTheFirstError: fail wakes every parked
// receiver and every sender waiting for credit; a second fail keeps the
// first error.
func TestInboxFailWakesEveryoneAndKeepsTheFirstError(t *testing.T) {
	l := socketlessLink()
	s := l.newStream("a", nil, nil)
	ws := []*waiter{s.parkLocked(), s.parkLocked(), s.parkLocked()}
	l.wq.mu.Lock()
	credit := l.wq.creditWaitLocked()
	l.wq.mu.Unlock()
	first := errors.New("first")
	s.fail(first)
	if wokenOf(ws...) != "111" || len(s.waiters) != 0 || l.token.parked.Load() != 0 || !isClosed(credit) {
		t.Errorf("failed: woken %s, %d in line, parked %d, credit waiters woken %v; want 111, 0, 0, true",
			wokenOf(ws...), len(s.waiters), l.token.parked.Load(), isClosed(credit))
	}
	s.fail(errors.New("second"))
	if err := s.error(); err != first {
		t.Errorf("error() = %v after a second fail, want the first", err)
	}
}

// TestInboxUnparkPassesAWakeUpOn: a receiver that gives up before it is
// woken just leaves the line; one that was woken passes its wake-up to the
// next parked receiver when there is a message or an error to take.
func TestInboxUnparkPassesAWakeUpOn(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		woken, message, failed bool
		nextWoken              bool
	}{
		{"withdrawn before a wake-up", false, true, false, false},
		{"woken, a message queued", true, true, false, true},
		{"woken, the inbox failed", true, false, true, true},
		{"woken, nothing to take", true, false, false, false},
	} {
		l := socketlessLink()
		s := l.newStream("a", nil, nil)
		w, next := s.parkLocked(), s.parkLocked()
		if tc.woken {
			s.wakeLocked()
		}
		if tc.message {
			s.queue.push(message{data: []byte("m")})
		}
		if tc.failed {
			s.err = ErrClosed
		}
		s.unpark(w, s)
		inLine := 1
		if tc.nextWoken {
			inLine = 0
		}
		if (len(next.ch) == 1) != tc.nextWoken || len(s.waiters) != inLine || inLine == 1 && s.waiters[0] != next ||
			l.token.parked.Load() != int32(inLine) {
			t.Errorf("%s: next woken %v, %d in line, parked %d; want woken %v, the next alone in line %v",
				tc.name, len(next.ch) == 1, len(s.waiters), l.token.parked.Load(), tc.nextWoken, inLine == 1)
		}
	}
}

// TestCatchAllLinesARecordUpOnce: pushing a record already in the ready
// line leaves it there once; push reports whether it woke a receiver.
func TestCatchAllLinesARecordUpOnce(t *testing.T) {
	l := socketlessLink()
	ca := &catchAll{inbox: inbox{link: l}}
	s := l.newStream("a", nil, nil)
	if ca.push(s) || ca.push(s) {
		t.Fatal("push reported a receiver woken while none was parked")
	}
	if w := ca.parkLocked(); !ca.push(s) || len(w.ch) != 1 {
		t.Fatal("push did not wake the parked receiver")
	}
	if n := ca.ready.len(); n != 1 || !s.inReady {
		t.Errorf("pushed 3 times: %d in the ready line (inReady %v), want 1", n, s.inReady)
	}
}

// TestCatchAllTakesTheOldestReadyRecordFirst: popLocked takes a message
// from the oldest ready record, keeps the record in line (at its end)
// while it holds more, and skips a record that got an owner, leaving its
// messages queued.
func TestCatchAllTakesTheOldestReadyRecordFirst(t *testing.T) {
	type record struct {
		id    string
		n     int  // messages queued: id1, id2...
		owned bool // got an owner once lined up
	}
	for _, tc := range []struct {
		name    string
		records []record
		want    string
	}{
		{"one record", []record{{"a", 2, false}}, "a1 a2"},
		{"in line order", []record{{"b", 1, false}, {"a", 1, false}}, "b1 a1"},
		{"back in line while it holds more", []record{{"a", 3, false}, {"b", 1, false}}, "a1 b1 a2 a3"},
		{"an owned record skipped", []record{{"a", 1, false}, {"c", 1, true}, {"b", 2, false}}, "a1 b1 b2"},
		{"every record owned", []record{{"c", 2, true}}, ""},
	} {
		l := socketlessLink()
		ca := &catchAll{inbox: inbox{link: l}}
		streams := make([]*stream, len(tc.records))
		for i, r := range tc.records {
			s := l.newStream(r.id, nil, nil)
			for j := range r.n {
				s.queue.push(message{data: fmt.Appendf(nil, "%s%d", r.id, j+1)})
			}
			ca.push(s)
			if r.owned {
				s.owner = &Connection{}
			}
			streams[i] = s
		}
		var got []string
		for s, m, ok := ca.popLocked(); ok; s, m, ok = ca.popLocked() {
			if got = append(got, string(m.data)); s.id != string(m.data[:1]) {
				t.Errorf("%s: %s came with record %q", tc.name, m.data, s.id)
			}
		}
		if g := strings.Join(got, " "); g != tc.want || ca.hasMessageLocked() {
			t.Errorf("%s: took %q, %d left in line; want %q, none", tc.name, g, ca.ready.len(), tc.want)
		}
		for i, s := range streams {
			left := 0
			if tc.records[i].owned {
				left = tc.records[i].n
			}
			if s.inReady || s.queue.len() != left {
				t.Errorf("%s: record %s: inReady %v, %d queued; want false, %d", tc.name, s.id, s.inReady, s.queue.len(), left)
			}
		}
	}
}

// TestRetiredCatchAllLetsGoOfItsLine: retire empties the ready line, wakes
// its receivers with the error, drains the records nobody can find again
// (retired, unowned), leaves the others' messages for the next catch-all,
// and makes push take nothing.
func TestRetiredCatchAllLetsGoOfItsLine(t *testing.T) {
	l := socketlessLink()
	ca := &catchAll{inbox: inbox{link: l}}
	records := []struct {
		retired, owned, drained bool
		s                       *stream
	}{{false, false, false, nil}, {true, false, true, nil}, {true, true, false, nil}, {false, true, false, nil}}
	for i := range records {
		r := &records[i]
		r.s = l.newStream(fmt.Sprint(i), nil, nil)
		r.s.queue.push(message{data: []byte("m")})
		ca.push(r.s)
		r.s.retired.Store(r.retired)
		if r.owned {
			r.s.owner = &Connection{}
		}
	}
	w := ca.parkLocked()
	gone := errors.New("gone")
	ca.retire(gone)
	if ca.ready.len() != 0 || len(w.ch) != 1 || ca.error() != gone {
		t.Errorf("retired: %d in line, receiver woken %v, error %v; want 0, true, %v", ca.ready.len(), len(w.ch) == 1, ca.error(), gone)
	}
	for _, r := range records {
		if r.s.inReady || (r.s.queue.len() == 0) != r.drained {
			t.Errorf("record retired %v, owned %v: inReady %v, %d queued; want drained %v", r.retired, r.owned, r.s.inReady, r.s.queue.len(), r.drained)
		}
	}
	if s := records[0].s; ca.push(s) || ca.ready.len() != 0 || s.inReady {
		t.Error("a retired catch-all took a record")
	}
}
