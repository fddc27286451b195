// SPDX-License-Identifier: MIT

package tcpconn

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Counters: per link, summed per scope (a Client, a Listener, the sockets
// wrapped with Wrap*) and for the whole process. A link belongs to the
// process scope and to its owner's; its counters are folded into both when
// it closes, so totals survive the link.

// Stats is a snapshot of counters: the process's (ReadStats), a Client's or
// a Listener's. Links and Connections are gauges; the rest count up.
type Stats struct {
	Links          int64  // physical links open
	Connections    int64  // logical connections bound to an open link (one moving off a draining link counts on both until the old one ends)
	MessagesIn     uint64 // messages received
	MessagesOut    uint64 // messages handed to the socket
	BytesIn        uint64 // payload bytes received
	BytesOut       uint64 // payload bytes handed to the socket
	Reconnects     uint64 // client Connections re-attached after their socket was lost
	ProtocolErrors uint64 // links closed for a protocol violation
}

// LinkStats describes one open physical link.
type LinkStats struct {
	// ID names the link on both ends: the dialling side's UUID, sent in its
	// HELLO and adopted by the server. It is also in every log record about
	// the link ("link" attribute), so client and server logs line up.
	ID         string
	Client     bool   // the dialling side
	LocalAddr  string // this end's address
	RemoteAddr string // the peer's address
	// Endpoint is the address a client dialled for it (an endpoint of its
	// target, or the plain address); empty on a server.
	Endpoint string
	// GoingAway: the peer sent GOAWAY; nothing new opens on the link.
	GoingAway   bool
	Connections int64 // logical connections bound to it
	MessagesIn  uint64
	MessagesOut uint64
	BytesIn     uint64
	BytesOut    uint64
	BytesQueued int64         // bytes waiting in its write queue
	RTT         time.Duration // measured by the last PING/PONG (one follows the HELLO); 0 before one
	// Window is the link's receive window now: LinkWindow, grown (with
	// bytes from the Budget) while its reader kept up, or shrunk back.
	Window int64
	// Lane reports a bulk lane open beside the link's socket (its bytes
	// and messages count in the figures above).
	Lane bool
}

type linkCounters struct {
	messagesIn, messagesOut, bytesIn, bytesOut atomic.Uint64
}

func (c *linkCounters) addTo(r *linkCounters) {
	r.messagesIn.Add(c.messagesIn.Load())
	r.messagesOut.Add(c.messagesOut.Load())
	r.bytesIn.Add(c.bytesIn.Load())
	r.bytesOut.Add(c.bytesOut.Load())
}

// scope aggregates the links of one owner.
type scope struct {
	links          sync.Map // *link -> struct{}
	reconnects     atomic.Uint64
	protocolErrors atomic.Uint64
	retired        linkCounters // counters of its links already closed
}

// processScope holds every link of the process (ReadStats); wrapScope the
// sockets wrapped with Wrap* (no Listener or Client owns them).
var processScope, wrapScope scope

func (s *scope) add(l *link) { s.links.Store(l, struct{}{}) }

func (s *scope) remove(l *link) {
	if _, ok := s.links.LoadAndDelete(l); ok {
		l.counters.addTo(&s.retired)
	}
}

func (s *scope) stats() Stats {
	st := Stats{
		MessagesIn:     s.retired.messagesIn.Load(),
		MessagesOut:    s.retired.messagesOut.Load(),
		BytesIn:        s.retired.bytesIn.Load(),
		BytesOut:       s.retired.bytesOut.Load(),
		Reconnects:     s.reconnects.Load(),
		ProtocolErrors: s.protocolErrors.Load(),
	}
	s.links.Range(func(k, _ any) bool {
		l := k.(*link)
		st.Links++
		st.Connections += l.bound.Load()
		st.MessagesIn += l.counters.messagesIn.Load()
		st.MessagesOut += l.counters.messagesOut.Load()
		st.BytesIn += l.counters.bytesIn.Load()
		st.BytesOut += l.counters.bytesOut.Load()
		return true
	})
	return st
}

func (s *scope) linkStats() []LinkStats {
	var out []LinkStats
	s.links.Range(func(k, _ any) bool {
		out = append(out, k.(*link).stats())
		return true
	})
	return out
}

// ReadStats returns the process-wide counters.
func ReadStats() Stats { return processScope.stats() }

// ReadLinkStats describes every open link of the process.
func ReadLinkStats() []LinkStats { return processScope.linkStats() }

func (l *link) stats() LinkStats {
	l.wq.mu.Lock()
	queued := l.wq.wb.size
	l.wq.mu.Unlock()
	return LinkStats{
		ID:          l.id.Load().String(),
		Client:      l.client,
		LocalAddr:   l.conn.LocalAddr().String(),
		RemoteAddr:  l.conn.RemoteAddr().String(),
		Endpoint:    l.endpoint,
		GoingAway:   l.goingAway.Load(),
		Connections: l.bound.Load(),
		MessagesIn:  l.counters.messagesIn.Load(),
		MessagesOut: l.counters.messagesOut.Load(),
		BytesIn:     l.counters.bytesIn.Load(),
		BytesOut:    l.counters.bytesOut.Load(),
		BytesQueued: int64(queued),
		RTT:         time.Duration(l.keepAlive.rtt.Load()),
		Window:      max(l.inflow.window.size.Load(), 0),
		Lane:        l.hasLane(),
	}
}

// setID names the link and the logger of its records.
func (l *link) setID(id uuid.UUID) {
	l.id.Store(&id)
	side := "server"
	if l.client {
		side = "client"
	}
	log := l.cfg.logger().With("link", id.String(), "side", side, "remote", l.conn.RemoteAddr().String())
	if l.endpoint != "" {
		log = log.With("endpoint", l.endpoint)
	}
	l.log.Store(log)
}

func (l *link) logger() *slog.Logger { return l.log.Load() }
