// SPDX-License-Identifier: MIT

package tcpconn

import (
	"sync"
	"sync/atomic"
)

// routeTable is a link's records by ID: read without locks on every frame
// (sync.Map, plus a one-entry cache for runs of frames on one ID), written
// by the token holder (records the peer opens) and by registrations
// (records this side opens). It also holds who takes records nobody owns:
// the link's catch-all, or the Listener's accept, or else nobody yet (then
// they expire after the idle timeout: unclaimed). The record lifecycle is
// in stream.go; the link methods there create and retire records through
// this table.
type routeTable struct {
	byID     sync.Map     // string -> *stream
	n        atomic.Int64 // records in byID, reserved before they are stored
	lastHit  *stream      // the last record a frame went to; the token holder's
	catchAll atomic.Pointer[catchAll]
	accept   func(*stream) bool // a Listener's offer of a peer-opened record; fixed at start

	// Lock order: a stream's mu may be held when taking unclaimedMu.
	unclaimedMu sync.Mutex
	unclaimed   map[*stream]int64 // peer-opened, unclaimed -> unix nanoseconds created; made on first use
}

// load returns the record for id.
func (t *routeTable) load(id string) (*stream, bool) {
	v, ok := t.byID.Load(id)
	if !ok {
		return nil, false
	}
	return v.(*stream), true
}

// each calls f for every record until it returns false.
func (t *routeTable) each(f func(*stream) bool) {
	t.byID.Range(func(_, v any) bool { return f(v.(*stream)) })
}

// reserve counts one more record unless that would exceed limit;
// reserving first makes concurrent registrations respect the limit.
func (t *routeTable) reserve(limit int) bool {
	if t.n.Add(1) > int64(limit) {
		t.n.Add(-1)
		return false
	}
	return true
}

// unreserve undoes a reserve whose record was not stored.
func (t *routeTable) unreserve() { t.n.Add(-1) }

// remove drops s if it is still the record for its ID, and forgets it as
// unclaimed.
func (t *routeTable) remove(s *stream) {
	if t.byID.CompareAndDelete(s.id, s) {
		s.retired.Store(true)
		t.n.Add(-1)
	}
	t.claimed(s)
}

// addUnclaimed notes s as opened by the peer and claimed by nobody, at now.
func (t *routeTable) addUnclaimed(s *stream, now int64) {
	t.unclaimedMu.Lock()
	if t.unclaimed == nil {
		t.unclaimed = make(map[*stream]int64)
	}
	t.unclaimed[s] = now
	t.unclaimedMu.Unlock()
}

// claimed forgets s as unclaimed.
func (t *routeTable) claimed(s *stream) {
	t.unclaimedMu.Lock()
	delete(t.unclaimed, s)
	t.unclaimedMu.Unlock()
}

// takeExpired forgets and returns the unclaimed records created before
// limit.
func (t *routeTable) takeExpired(limit int64) []*stream {
	var expired []*stream
	t.unclaimedMu.Lock()
	for s, born := range t.unclaimed {
		if born < limit {
			expired = append(expired, s)
			delete(t.unclaimed, s)
		}
	}
	t.unclaimedMu.Unlock()
	return expired
}
