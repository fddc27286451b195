// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// A fleet is the set of endpoints behind one target with a scheme, as a
// Client follows it: the last good answer of its Resolver, the health of
// each endpoint, and the loop that looks the target up again. Connections
// to the target are placed on an endpoint (placement.go) and then use that
// endpoint's pool entry like a Connection to a plain address does, so
// dialling, backoff and GOAWAY work the same per endpoint.
//
// A fleet lives while a Connection to its target is open; the last Close
// stops its loop.
type fleet struct {
	key    poolKey // the target as written, and the caller's Config on DefaultClient
	target Target
	cfg    *Config // resolved
	client *Client
	refs   int // guarded by Client.fleetMu

	life context.Context // ends with the last user: stops lookups in progress
	stop context.CancelFunc
	kick chan struct{} // a lookup is wanted now (rate limited)
	done chan struct{} // closed when the loop has ended

	mu        sync.Mutex
	endpoints []*endpoint   // last good set, sorted by address
	gen       int           // lookups completed
	lastErr   error         // of the last lookup, nil if it succeeded
	changed   chan struct{} // closed and replaced when a lookup completes
	placed    idPlacements  // where its named Connections are, for the load bound
}

// endpoint is one address of a fleet and its health; guarded by fleet.mu.
type endpoint struct {
	addr         string
	failures     int       // consecutive failed dials (or shutdowns)
	ejectedUntil time.Time // placement skips it until then
}

// Limits of re-resolution.
const (
	// resolveJitter spreads the lookups of many clients of one name.
	resolveJitter = 0.2
	// maxEagerResolveGap bounds how often failures may trigger a lookup:
	// a fleet going down must not turn into a storm of DNS queries.
	maxEagerResolveGap = time.Second
)

// holdFleet returns the fleet of target, counting the caller as a user.
func (cl *Client) holdFleet(t Target, key, resolved *Config) *fleet {
	k := poolKey{t.String(), key}
	cl.fleetMu.Lock()
	defer cl.fleetMu.Unlock()
	if f := cl.fleets[k]; f != nil {
		f.refs++
		return f
	}
	f := &fleet{key: k, target: t, cfg: resolved, client: cl, refs: 1,
		kick: make(chan struct{}, 1), done: make(chan struct{}), changed: make(chan struct{})}
	f.life, f.stop = context.WithCancel(context.Background())
	if cl.fleets == nil {
		cl.fleets = make(map[poolKey]*fleet)
	}
	cl.fleets[k] = f
	go f.run()
	return f
}

// release drops one user; the last one stops the loop.
func (f *fleet) release() {
	cl := f.client
	cl.fleetMu.Lock()
	f.refs--
	last := f.refs == 0
	if last {
		delete(cl.fleets, f.key)
	}
	cl.fleetMu.Unlock()
	if last {
		f.stop()
	}
}

// fleetsOf returns the Client's fleets that hold endpoint addr.
func (cl *Client) fleetsOf(addr string) []*fleet {
	cl.fleetMu.Lock()
	defer cl.fleetMu.Unlock()
	var out []*fleet
	for _, f := range cl.fleets {
		f.mu.Lock()
		if f.indexLocked(addr) >= 0 {
			out = append(out, f)
		}
		f.mu.Unlock()
	}
	return out
}

// run looks the target up now, then every ResolveInterval (with jitter),
// at once when kicked, and after a failure with the reconnect backoff
// while no endpoint is known; never more often than every gap.
func (f *fleet) run() {
	defer close(f.done)
	gap := min(maxEagerResolveGap, f.cfg.ResolveInterval)
	failures := 0
	for {
		last := time.Now()
		ok := f.resolve()
		wait := jitter(f.cfg.ResolveInterval, resolveJitter)
		if ok {
			failures = 0
		} else if failures++; f.empty() {
			wait = min(wait, backoff(f.cfg, failures))
		}
		if !f.sleep(wait, f.kick) {
			return
		}
		if !f.sleep(gap-time.Since(last), nil) {
			return
		}
	}
}

// sleep waits for d or a kick (nil: none), and reports false if the
// fleet's life ended first.
func (f *fleet) sleep(d time.Duration, kick <-chan struct{}) bool {
	if d <= 0 {
		return f.life.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-f.life.Done():
		return false
	case <-t.C:
	case <-kick:
	}
	return true
}

// jitter returns d ± frac·d, at random.
func jitter(d time.Duration, frac float64) time.Duration {
	span := time.Duration(float64(d) * frac)
	if span <= 0 {
		return d
	}
	return d - span + rand.N(2*span+1)
}

// resolve runs one lookup and keeps its answer if it has any endpoint.
func (f *fleet) resolve() bool {
	ctx, cancel := context.WithTimeout(f.life, f.cfg.DialTimeout)
	addrs, err := f.cfg.resolver().Resolve(ctx, f.target)
	cancel()
	if f.life.Err() != nil {
		return false
	}
	if err == nil && len(addrs) == 0 {
		err = fmt.Errorf("%w: %s: no endpoints", ErrResolve, f.target)
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	f.mu.Lock()
	changed := false
	if err == nil {
		changed = !slices.EqualFunc(f.endpoints, addrs, func(e *endpoint, a string) bool { return e.addr == a })
		if changed {
			next := make([]*endpoint, len(addrs))
			for i, a := range addrs {
				if j := f.indexLocked(a); j >= 0 {
					next[i] = f.endpoints[j] // keeps its health
				} else {
					next[i] = &endpoint{addr: a}
				}
			}
			f.endpoints = next
		}
	}
	f.gen++
	f.lastErr = err
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	switch {
	case err != nil:
		f.cfg.logger().Warn("tcpconn: lookup failed; keeping the last endpoints", "target", f.target.String(), "err", err)
		f.cfg.emit(LinkEvent{Kind: ResolveFailed, Target: f.target.String(), Err: err})
	case changed:
		f.cfg.logger().Info("tcpconn: target resolved", "target", f.target.String(), "endpoints", addrs)
		f.cfg.emit(LinkEvent{Kind: EndpointsResolved, Target: f.target.String(), Endpoints: addrs})
	}
	return err == nil
}

func (f *fleet) empty() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.endpoints) == 0
}

func (f *fleet) indexLocked(addr string) int {
	i, ok := slices.BinarySearchFunc(f.endpoints, addr, func(e *endpoint, a string) int {
		switch {
		case e.addr < a:
			return -1
		case e.addr > a:
			return 1
		}
		return 0
	})
	if !ok {
		return -1
	}
	return i
}

// reResolve asks the loop for a lookup now; it is rate limited there.
func (f *fleet) reResolve() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// place returns the endpoint for c: by rendezvous on its ID under the
// load bound, or by two choices on load for a catch-all, among healthy
// endpoints not in skip (else among any not in skip: healthy is then
// false). A named c counts at the endpoint returned (idPlacements) until it
// is placed again or forgotten. Before the first answer it waits for one;
// with no endpoint known it waits for the next lookup and reports its
// error.
func (f *fleet) place(ctx context.Context, c *Connection, skip []string) (addr string, healthy bool, err error) {
	f.mu.Lock()
	if len(f.endpoints) == 0 {
		want := f.gen + 1
		for len(f.endpoints) == 0 && f.gen < want {
			ch := f.changed
			f.mu.Unlock()
			f.reResolve()
			select {
			case <-ch:
			case <-ctx.Done():
				return "", false, ctx.Err()
			}
			f.mu.Lock()
		}
		if len(f.endpoints) == 0 {
			err := f.lastErr
			f.mu.Unlock()
			return "", false, err
		}
	}
	addrs := make([]string, len(f.endpoints))
	up := make([]bool, len(f.endpoints))
	now := time.Now()
	for i, e := range f.endpoints {
		addrs[i] = e.addr
		up[i] = !now.Before(e.ejectedUntil) && !slices.Contains(skip, e.addr)
	}
	if !c.catchAll {
		defer f.mu.Unlock()
		i, healthy := f.placeNamedLocked(c, addrs, up, skip)
		if i < 0 {
			return "", false, fmt.Errorf("%w: %s: every endpoint failed", ErrLinkLost, f.target)
		}
		if !isClosed(c.closed) { // else Close forgot it already (see idPlacements)
			f.placed.set(c, addrs[i])
		}
		return addrs[i], healthy, nil
	}
	f.mu.Unlock()

	load := make([]int64, len(addrs))
	for i, a := range addrs {
		load[i] = f.client.linkLoad(a, f.key.cfg)
	}
	// First among healthy endpoints with room (a link holds one
	// catch-all), then among any not tried.
	room := func(i int) bool { return up[i] && load[i] < catchAllFull }
	if i := twoChoices(len(addrs), room, func(i int) int64 { return load[i] }); i >= 0 {
		return addrs[i], true, nil
	}
	if i := twoChoices(len(addrs), untried(addrs, skip), func(i int) int64 { return load[i] }); i >= 0 {
		return addrs[i], false, nil
	}
	return "", false, fmt.Errorf("%w: %s: every endpoint failed", ErrLinkLost, f.target)
}

// placeNamedLocked picks c's endpoint: the first of its rendezvous order
// among healthy ones (up) below the load bound; if every healthy one is
// full (its own count aside, c could find all at the bound), the first
// healthy one; else the first not in skip.
//
// The bound counts every endpoint of the set, ejected ones too (as long
// as the healthy ones can hold every ID): a replica that is lost for a
// while must not raise the bound, or IDs that the bound kept off their
// first choice would go there, and leave again when it returns.
func (f *fleet) placeNamedLocked(c *Connection, addrs []string, up []bool, skip []string) (int, bool) {
	healthy := 0
	for _, u := range up {
		if u {
			healthy++
		}
	}
	total := f.placed.total(c)
	limit := capacity(f.cfg.PlacementBalance, total+1, len(addrs))
	if healthy > 0 {
		limit = max(limit, math.Ceil(float64(total+1)/float64(healthy)))
	}
	below := func(i int) bool {
		return up[i] && float64(f.placed.loadOf(addrs[i], c)) < limit
	}
	if i := rendezvous(c.id, addrs, below); i >= 0 {
		return i, true
	}
	if i := rendezvous(c.id, addrs, func(i int) bool { return up[i] }); i >= 0 {
		return i, true
	}
	return rendezvous(c.id, addrs, untried(addrs, skip)), false
}

// untried accepts the endpoints not in skip.
func untried(addrs, skip []string) func(int) bool {
	return func(i int) bool { return !slices.Contains(skip, addrs[i]) }
}

// forget stops counting c (it closed).
func (f *fleet) forget(c *Connection) {
	if c.catchAll {
		return
	}
	f.mu.Lock()
	f.placed.forget(c)
	f.mu.Unlock()
}

// stay counts c at addr again: a move that found no new place leaves c
// where it was.
func (f *fleet) stay(c *Connection, addr string) {
	f.mu.Lock()
	if !isClosed(c.closed) {
		f.placed.set(c, addr)
	}
	f.mu.Unlock()
}

// eject takes addr out of placement for its backoff, after a failed dial
// or a shutdown, and asks for a lookup.
func (f *fleet) eject(addr string, why error) {
	f.mu.Lock()
	i := f.indexLocked(addr)
	var until time.Time
	if i >= 0 {
		e := f.endpoints[i]
		e.failures++
		e.ejectedUntil = time.Now().Add(backoff(f.cfg, e.failures))
		until = e.ejectedUntil
	}
	f.mu.Unlock()
	if i >= 0 {
		f.cfg.logger().Info("tcpconn: endpoint ejected", "target", f.target.String(), "endpoint", addr, "until", until, "err", why)
		f.cfg.emit(LinkEvent{Kind: EndpointEjected, Target: f.target.String(), Endpoint: addr, Err: why})
	}
	f.reResolve()
}

// healthy marks addr as reachable again (a link to it is up).
func (f *fleet) healthy(addr string) {
	f.mu.Lock()
	if i := f.indexLocked(addr); i >= 0 {
		f.endpoints[i].failures, f.endpoints[i].ejectedUntil = 0, time.Time{}
	}
	f.mu.Unlock()
}

// catchAllFull is the load of a link that has its catch-all.
const catchAllFull = 1 << 62

// linkLoad is what the power of two choices compares for a catch-all: the
// Connections bound to addr's link, and a link that has a catch-all
// already counts as full (a link has one).
func (cl *Client) linkLoad(addr string, cfg *Config) int64 {
	p := &cl.pool
	p.mu.Lock()
	e := p.entries[poolKey{addr, cfg}]
	p.mu.Unlock()
	if e == nil {
		return 0
	}
	e.mu.Lock()
	l := e.link
	e.mu.Unlock()
	switch {
	case l == nil:
		return 0
	case l.routes.catchAll.Load() != nil:
		return catchAllFull
	}
	return l.bound.Load()
}
