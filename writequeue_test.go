// SPDX-License-Identifier: MIT

package tcpconn

import (
	"errors"
	"testing"
)

// TestWriteQueueTakeSwapsInTheSpareAndRecycleRestoresIt checks that take
// hands over what was queued and leaves the empty spare to queue into, and
// that the two batches of init alternate once written batches are recycled.
func TestWriteQueueTakeSwapsInTheSpareAndRecycleRestoresIt(t *testing.T) {
	var q writeQueue
	q.init()
	first, second := q.wb, q.spare
	if first == nil || second == nil || first == second {
		t.Fatalf("init: wb %p, spare %p; want two batches", first, second)
	}
	for round, want := range []*writeBatch{first, second, first} {
		q.wb.appendCopy([]byte("frame"), nil)
		b := q.takeLocked()
		if b != want || b.empty() {
			t.Fatalf("round %d: took %p (empty %v), want %p with the frame", round, b, b.empty(), want)
		}
		if q.wb == b || q.wb == nil || !q.wb.empty() || q.spare != nil {
			t.Fatalf("round %d: after take wb %p, spare %p; want the empty spare and none", round, q.wb, q.spare)
		}
		b.finish(nil)
		q.recycleLocked(b)
		if q.spare != b {
			t.Fatalf("round %d: the written batch is not the spare", round)
		}
	}
}

// TestWriteQueuePutBackUndoesTake checks that a batch with nothing to
// write goes back where it was, with the spare.
func TestWriteQueuePutBackUndoesTake(t *testing.T) {
	var q writeQueue
	q.init()
	wb, spare := q.wb, q.spare
	q.putBackLocked(q.takeLocked())
	if q.wb != wb || q.spare != spare {
		t.Fatalf("after take and putBack: wb %p, spare %p; want %p, %p", q.wb, q.spare, wb, spare)
	}
}

// TestWriteQueueTakeReturnsNilOnceFailed checks that nothing is written
// once the link failed, and that the queue is left as it was.
func TestWriteQueueTakeReturnsNilOnceFailed(t *testing.T) {
	var q writeQueue
	q.init()
	wb, spare := q.wb, q.spare
	q.err = errors.New("link lost")
	if b := q.takeLocked(); b != nil {
		t.Fatalf("take after failure returned %p, want nil", b)
	}
	if q.wb != wb || q.spare != spare {
		t.Fatal("take after failure changed the queue")
	}
}

// TestWriteQueueRecycleKeepsASpareOnlyWhenThereIsNone checks that a written
// batch becomes the spare only if the spare slot is empty.
func TestWriteQueueRecycleKeepsASpareOnlyWhenThereIsNone(t *testing.T) {
	for _, tc := range []struct {
		name         string
		spare        *writeBatch
		keepsWritten bool
	}{
		{"no spare", nil, true},
		{"a spare", &writeBatch{}, false},
	} {
		q := writeQueue{wb: &writeBatch{}, spare: tc.spare}
		b := &writeBatch{}
		q.recycleLocked(b)
		want := tc.spare
		if tc.keepsWritten {
			want = b
		}
		if q.spare != want {
			t.Errorf("%s: spare %p, want %p", tc.name, q.spare, want)
		}
	}
}

// TestWriteQueueCreditWaitersShareOneChannelUntilWoken checks that every
// sender waiting for credit waits on one channel, that a wake closes it,
// and that later waiters get a new one.
func TestWriteQueueCreditWaitersShareOneChannelUntilWoken(t *testing.T) {
	var q writeQueue
	q.init()
	q.wakeCreditLocked() // nobody waits: nothing to close
	a, b := q.creditWaitLocked(), q.creditWaitLocked()
	if a != b || isClosed(a) {
		t.Fatalf("two waiters: channels %p and %p (closed %v); want one open channel", a, b, isClosed(a))
	}
	q.wakeCreditLocked()
	if !isClosed(a) {
		t.Fatal("wake did not close the waiters' channel")
	}
	c := q.creditWaitLocked()
	if c == a || isClosed(c) {
		t.Fatal("a waiter after the wake got the closed channel")
	}
}
