// SPDX-License-Identifier: MIT

package tcpconn

import (
	"errors"
	"fmt"
)

// LinkEventKind says what happened to a client's link or target.
type LinkEventKind int

// Kinds of LinkEvent.
const (
	// LinkUp: a link to Endpoint was dialled.
	LinkUp LinkEventKind = iota + 1
	// LinkGoAway: the server of Endpoint asked the client to open nothing
	// new on the link; Draining tells whether it also asked the client to
	// move the logical connections already there (Listener.Shutdown,
	// MaxLinkAge), which the client does at a quiet point of each.
	LinkGoAway
	// LinkLost: the link ended; Err says why (ErrClosed when this side
	// closed it).
	LinkLost
	// EndpointEjected: Endpoint failed to dial (Err) or is shutting down;
	// placement skips it until its backoff ends or a link to it is up.
	EndpointEjected
	// EndpointsResolved: Target resolved to a new set, Endpoints.
	EndpointsResolved
	// ResolveFailed: a lookup of Target failed or found nothing (Err); the
	// last good set is kept and the lookup is retried.
	ResolveFailed
)

var linkEventNames = [...]string{"", "LinkUp", "LinkGoAway", "LinkLost", "EndpointEjected", "EndpointsResolved", "ResolveFailed"}

// String returns the kind's name.
func (k LinkEventKind) String() string {
	if k > 0 && int(k) < len(linkEventNames) {
		return linkEventNames[k]
	}
	return fmt.Sprintf("LinkEventKind(%d)", int(k))
}

// LinkEvent is what Config.OnLinkEvent receives about a Client's links and
// targets.
type LinkEvent struct {
	Kind      LinkEventKind
	Target    string   // the target with a scheme (EndpointEjected, EndpointsResolved, ResolveFailed); empty for link events
	Endpoint  string   // the address dialled ("host:port")
	LinkID    string   // the link's ID, as in LinkStats and log records
	Draining  bool     // LinkGoAway: the server asked for its logical connections to move
	Endpoints []string // EndpointsResolved: the new set
	Err       error
}

// emit hands ev to the Config's callback, if any.
func (c *Config) emit(ev LinkEvent) {
	if c.OnLinkEvent != nil {
		c.OnLinkEvent(ev)
	}
}

// errShutdown is why an endpoint whose server is shutting down is ejected.
var errShutdown = errors.New("tcpconn: the server is shutting down")

// linkEvent reports ev about l, a link of cl's pool, and lets the fleets
// that hold its endpoint react: a link up makes the endpoint healthy; a
// loss or a GOAWAY asks for a lookup; a shutdown ejects the endpoint; a
// draining GOAWAY moves the Connections on l (drain.go).
func (cl *Client) linkEvent(l *link, ev LinkEvent, code goAwayCode) {
	ev.Endpoint, ev.LinkID = l.endpoint, l.id.Load().String()
	l.cfg.emit(ev)
	fleets := cl.fleetsOf(l.endpoint)
	switch ev.Kind {
	case LinkUp:
		for _, f := range fleets {
			f.healthy(l.endpoint)
		}
	case LinkLost:
		if errors.Is(ev.Err, ErrClosed) {
			return // closed by this side: nothing to learn
		}
		for _, f := range fleets {
			f.reResolve()
		}
	case LinkGoAway:
		l.logger().Info("tcpconn: server going away", "draining", ev.Draining)
		for _, f := range fleets {
			if code == goAwayShutdown {
				f.eject(l.endpoint, errShutdown)
			} else {
				f.reResolve()
			}
		}
		if ev.Draining {
			l.moveAway.Store(true) // before moveFrom: a Connection bound later moves itself
			cl.moveFrom(l)
		}
	}
}
