// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// The client pool: one entry per (address, *Config), holding at most one
// live link shared by every client Connection to it, reference counted by
// the Connections currently bound. Dials are de-duplicated and spaced by an
// exponential backoff with jitter after failures.
//
// It is process-wide state, like http.DefaultTransport: NewConnection*
// cannot take a pool argument without breaking the seed's API.
type clientPool struct {
	mu      sync.Mutex
	entries map[poolKey]*poolEntry
}

type poolKey struct {
	address string
	cfg     *Config // the caller's pointer; nil for defaults
}

type poolEntry struct {
	key  poolKey
	cfg  *Config // resolved
	pool *clientPool

	mu       sync.Mutex
	link     *link
	refs     int
	dialing  chan struct{} // closed when the dial in progress ends
	failures int
	nextDial time.Time
	lastErr  error
}

var defaultPool = &clientPool{entries: make(map[poolKey]*poolEntry)}

// hold returns the entry for (address, cfg) and counts the caller as one of
// its users, atomically with respect to forgetIfUnused.
func (p *clientPool) hold(address string, cfg, resolved *Config) *poolEntry {
	k := poolKey{address, cfg}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.entries[k]
	if e == nil {
		e = &poolEntry{key: k, cfg: resolved, pool: p}
		p.entries[k] = e
	}
	e.mu.Lock()
	e.refs++
	e.mu.Unlock()
	return e
}

// acquire returns the entry's live link, dialling one if needed. The
// caller holds the entry (hold).
func (e *poolEntry) acquire(ctx context.Context) (*link, error) {
	e.mu.Lock()
	for {
		if l := e.link; l != nil && !l.failed() && !l.goingAway.Load() {
			e.mu.Unlock()
			return l, nil
		}
		if e.dialing != nil {
			ch := e.dialing
			e.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			e.mu.Lock()
			continue
		}
		if wait := time.Until(e.nextDial); wait > 0 {
			e.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("%w (last dial error: %v)", ctx.Err(), e.lastDialError())
			}
			e.mu.Lock()
			continue
		}
		e.dialing = make(chan struct{})
		e.mu.Unlock()

		l, err := dialLink(ctx, e)

		e.mu.Lock()
		close(e.dialing)
		e.dialing = nil
		if err != nil && ctx.Err() != nil {
			e.mu.Unlock() // canceled by our caller (Close): not the server's fault
			return nil, err
		}
		if err != nil {
			e.failures++
			e.lastErr = err
			e.nextDial = time.Now().Add(backoff(e.cfg, e.failures))
			e.mu.Unlock()
			return nil, err
		}
		e.failures, e.lastErr = 0, nil
		// A link the peer sent GOAWAY on is left to its remaining users;
		// the last of them closes it (release).
		e.link = l
	}
}

func (e *poolEntry) lastDialError() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastErr
}

// backoff is min * 2^(failures-1), capped, with ±50% jitter so that many
// clients of a restarted server do not redial in lockstep.
func backoff(cfg *Config, failures int) time.Duration {
	d := cfg.ReconnectBackoffMin << min(failures-1, 30)
	if d <= 0 || d > cfg.ReconnectBackoffMax {
		d = cfg.ReconnectBackoffMax
	}
	return d/2 + rand.N(d)
}

// release drops one user (bound to l, or nil); the last user closes the
// entry's link and lets the pool forget the entry.
func (e *poolEntry) release(l *link) {
	e.mu.Lock()
	e.refs--
	last := e.refs == 0 && e.link != nil
	cur := e.link
	if last {
		e.link = nil
	}
	e.mu.Unlock()
	if last {
		cur.close()
	}
	e.forgetIfUnused()
	if l != nil && cur != l && !l.failed() && l.nstreams.Load() == 0 {
		l.close() // an older link the peer asked us to leave (GOAWAY)
	}
}

// dialLink dials and wraps TLS if configured. It does not wait for the
// peer's HELLO: senders may use InitialWindow at once (0-RTT).
func dialLink(ctx context.Context, e *poolEntry) (*link, error) {
	cfg := e.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	var conn net.Conn
	var err error
	if cfg.Dialer != nil {
		conn, err = cfg.Dialer(ctx, "tcp", e.key.address)
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", e.key.address)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %w", ErrLinkLost, e.key.address, err)
	}
	if cfg.TLSConfig != nil {
		tc := cfg.TLSConfig
		if tc.ServerName == "" {
			tc = tc.Clone()
			if host, _, err := net.SplitHostPort(e.key.address); err == nil {
				tc.ServerName = host
			}
		}
		// The TLS handshake runs on the link's first read and write, in
		// its own goroutines: a Send must not wait for a server that has
		// not accepted the socket yet. Its failure fails the link with
		// ErrHandshake.
		conn = tls.Client(conn, tc)
	}
	return newLink(conn, cfg, true, linkHooks{}), nil
}

// forgetIfUnused drops the entry from its pool once nothing uses it, so a
// process that talks to many addresses over time does not keep them all.
// Backoff state goes with it: an unused entry has nobody to protect.
func (e *poolEntry) forgetIfUnused() {
	e.pool.mu.Lock()
	defer e.pool.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.refs == 0 && e.link == nil && e.dialing == nil && e.pool.entries[e.key] == e {
		delete(e.pool.entries, e.key)
	}
}
