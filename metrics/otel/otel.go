// SPDX-License-Identifier: MIT

// Package tcpconnotel bridges tcpconn's Stats and LinkStats to
// OpenTelemetry metrics: asynchronous instruments on a metric.Meter whose
// callback reads them at every collection.
//
// Register observes one or more Sources, components of the program: the
// whole process (ProcessSource), a *tcpconn.Client (ClientSource) or a
// *tcpconn.Listener (ListenerSource), each told apart by the attribute
// tcpconn.component ("process", "client", "listener"):
//
//	meter := provider.Meter(tcpconnotel.ScopeName)
//	reg, err := tcpconnotel.Register(meter, nil,
//		tcpconnotel.ProcessSource(),
//		tcpconnotel.ClientSource(client),
//		tcpconnotel.ListenerSource(ln))
//
// The process counts every link, a Client's and a Listener's included: do
// not sum over tcpconn.component.
//
// Instruments of every component, named after the semantic conventions'
// system.network.* ones (bytes are payload bytes, frame headers and control
// frames not counted; network.io.direction is "receive" or "transmit"):
//
//	tcpconn.link.count           {link}        UpDownCounter  physical links (sockets) open
//	tcpconn.connection.count     {connection}  UpDownCounter  logical connections bound to an open link
//	tcpconn.message.count        {message}     Counter        messages, by network.io.direction
//	tcpconn.io                   By            Counter        payload bytes, by network.io.direction
//	tcpconn.reconnect.count      {reconnect}   Counter        client Connections re-attached after their socket was lost
//	tcpconn.protocol_error.count {error}       Counter        links closed for a protocol violation
//	tcpconn.write_queue.size     By            UpDownCounter  bytes waiting in the open links' write queues
//	tcpconn.receive_window.size  By            UpDownCounter  the open links' receive windows, summed
//
// With Options.PerLink, each open link (at most Options.MaxLinks of them)
// is also observed on its own, with the attributes tcpconn.link.id (the
// same on both ends), tcpconn.link.side ("client" or "server"),
// network.peer.address and network.peer.port:
//
//	tcpconn.link.connection.count     {connection}  UpDownCounter
//	tcpconn.link.message.count        {message}     Counter, by network.io.direction
//	tcpconn.link.io                   By            Counter, by network.io.direction
//	tcpconn.link.write_queue.size     By            UpDownCounter
//	tcpconn.link.receive_window.size  By            UpDownCounter
//	tcpconn.link.rtt                  s             Gauge (keepalive round trip; absent until measured)
//
// Per-link attribute sets come and go with the links: every new socket (a
// reconnect, a new client of a Listener) is a new set. Their number at one
// collection is bounded by MaxLinks per Source; over time they churn with
// the sockets, which is why they are off by default.
package tcpconnotel // import "github.com/pulsyflux/tcp-conn/metrics/otel"

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"

	tcpconn "github.com/pulsyflux/tcp-conn"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// ScopeName is this package's import path, the instrumentation scope to
// name the Meter with: provider.Meter(tcpconnotel.ScopeName).
const ScopeName = "github.com/pulsyflux/tcp-conn/metrics/otel"

// DefaultMaxLinks is how many links of a Source are observed on their own
// with Options.PerLink when Options.MaxLinks is 0.
const DefaultMaxLinks = 100

// Attribute keys of this package's own (the others are the semantic
// conventions' network.io.direction, network.peer.address and
// network.peer.port).
const (
	ComponentKey = attribute.Key("tcpconn.component") // Source.Component
	LinkIDKey    = attribute.Key("tcpconn.link.id")   // LinkStats.ID
	LinkSideKey  = attribute.Key("tcpconn.link.side") // "client" (the dialling side) or "server"
)

// Source is what the callback reads at each collection: one component's
// counters and, optionally, its open links.
type Source struct {
	// Component is the value of the tcpconn.component attribute
	// ("process", "client", "listener", or a name of your own, such as
	// "orders-client", to tell two Clients apart). It must not be empty,
	// nor the same as another Source's in one Register call.
	Component string
	// Stats returns the component's counters. It must not be nil.
	Stats func() tcpconn.Stats
	// Links describes the component's open links; nil leaves out the
	// instruments drawn from LinkStats (write queue, receive window, per
	// link).
	Links func() []tcpconn.LinkStats
}

// ProcessSource reads the whole process: tcpconn.ReadStats and
// tcpconn.ReadLinkStats, every link whoever owns it (Clients, Listeners,
// and the sockets wrapped with tcpconn.Wrap*). Its component is "process".
func ProcessSource() Source {
	return Source{Component: "process", Stats: tcpconn.ReadStats, Links: tcpconn.ReadLinkStats}
}

// ClientSource reads a Client's Stats and Links; its component is
// "client" (set Component to tell two Clients apart). For the package-level
// constructors (tcpconn.Open, tcpconn.Dial, tcpconn.NewConnection...), pass
// tcpconn.DefaultClient.
func ClientSource(c *tcpconn.Client) Source {
	return Source{Component: "client", Stats: c.Stats, Links: c.Links}
}

// ListenerSource reads a Listener's Stats and Links; its component is
// "listener" (set Component to tell two Listeners apart).
func ListenerSource(ln *tcpconn.Listener) Source {
	return Source{Component: "listener", Stats: ln.Stats, Links: ln.Links}
}

// Options adjusts Register. The zero value (or nil) observes the component
// instruments only.
type Options struct {
	// Attributes are added to every observation (for example
	// attribute.String("pool", "orders")); resource
	// attributes belong to the MeterProvider instead. They must not use
	// this package's keys or network.io.direction, network.peer.address
	// and network.peer.port.
	Attributes []attribute.KeyValue
	// PerLink adds the tcpconn.link.* instruments, observed per open
	// link.
	PerLink bool
	// MaxLinks bounds the links of one Source observed per collection
	// when PerLink is set (0: DefaultMaxLinks). Beyond it, the links with
	// the smallest IDs are observed, so the same links keep their
	// attribute sets from one collection to the next; the component
	// instruments still count every link.
	MaxLinks int
}

// instruments are the ones Register creates.
type instruments struct {
	links, connections, messages, io, reconnects, protocolErrors metric.Int64Observable
	queued, window                                               metric.Int64Observable

	linkConnections, linkMessages, linkIO, linkQueued, linkWindow metric.Int64Observable
	linkRTT                                                       metric.Float64Observable
}

// source is a Source with its attribute sets made once.
type source struct {
	Source
	base            []attribute.KeyValue // component and Options.Attributes
	all, recv, xmit attribute.Set
}

// Register creates the instruments on meter and registers one callback that
// reads every Source at each collection. opts may be nil. Register each
// component once per Meter: call Unregister on the returned Registration
// before registering it again. The returned error names every instrument
// that could not be created, and a Source or Options that cannot work.
func Register(meter metric.Meter, opts *Options, sources ...Source) (metric.Registration, error) {
	if opts == nil {
		opts = &Options{}
	}
	maxLinks := opts.MaxLinks
	if maxLinks <= 0 {
		maxLinks = DefaultMaxLinks
	}
	reserved := map[attribute.Key]bool{
		ComponentKey: true, LinkIDKey: true, LinkSideKey: true,
		semconv.NetworkIODirectionKey: true, semconv.NetworkPeerAddressKey: true, semconv.NetworkPeerPortKey: true,
	}
	for _, kv := range opts.Attributes {
		if reserved[kv.Key] {
			return nil, fmt.Errorf("tcpconnotel: Options.Attributes may not set %s, a key of the package's own", kv.Key)
		}
	}
	if len(sources) == 0 {
		return nil, errors.New("tcpconnotel: no Source to observe")
	}
	var srcs []*source
	seen := map[string]bool{}
	withLinks := false
	for _, s := range sources {
		switch {
		case s.Component == "":
			return nil, errors.New("tcpconnotel: Source.Component is empty")
		case s.Stats == nil:
			return nil, fmt.Errorf("tcpconnotel: Source %q: Stats is nil", s.Component)
		case seen[s.Component]:
			return nil, fmt.Errorf("tcpconnotel: two Sources of component %q", s.Component)
		}
		seen[s.Component] = true
		withLinks = withLinks || s.Links != nil
		base := append([]attribute.KeyValue{ComponentKey.String(s.Component)}, opts.Attributes...)
		srcs = append(srcs, &source{
			Source: s,
			base:   base,
			all:    attribute.NewSet(base...),
			recv:   attribute.NewSet(append(base[:len(base):len(base)], semconv.NetworkIODirectionReceive)...),
			xmit:   attribute.NewSet(append(base[:len(base):len(base)], semconv.NetworkIODirectionTransmit)...),
		})
	}

	var (
		in   instruments
		errs []error
		obs  []metric.Observable
	)
	i64 := func(name, unit, desc string, counter bool) metric.Int64Observable {
		var (
			inst metric.Int64Observable
			err  error
		)
		if counter {
			inst, err = meter.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		} else {
			inst, err = meter.Int64ObservableUpDownCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		}
		errs = append(errs, err)
		obs = append(obs, inst)
		return inst
	}
	in.links = i64("tcpconn.link.count", "{link}", "Physical links (sockets) open.", false)
	in.connections = i64("tcpconn.connection.count", "{connection}", "Logical connections bound to an open link.", false)
	in.messages = i64("tcpconn.message.count", "{message}", "Messages received and handed to the socket.", true)
	in.io = i64("tcpconn.io", "By", "Payload bytes received and handed to the socket.", true)
	in.reconnects = i64("tcpconn.reconnect.count", "{reconnect}", "Client connections re-attached after their socket was lost.", true)
	in.protocolErrors = i64("tcpconn.protocol_error.count", "{error}", "Links closed for a protocol violation.", true)
	if withLinks {
		in.queued = i64("tcpconn.write_queue.size", "By", "Bytes waiting in the open links' write queues.", false)
		in.window = i64("tcpconn.receive_window.size", "By", "Receive windows of the open links, summed.", false)
		if opts.PerLink {
			in.linkConnections = i64("tcpconn.link.connection.count", "{connection}", "Logical connections bound to the link.", false)
			in.linkMessages = i64("tcpconn.link.message.count", "{message}", "Messages received on the link and handed to its socket.", true)
			in.linkIO = i64("tcpconn.link.io", "By", "Payload bytes received on the link and handed to its socket.", true)
			in.linkQueued = i64("tcpconn.link.write_queue.size", "By", "Bytes waiting in the link's write queue.", false)
			in.linkWindow = i64("tcpconn.link.receive_window.size", "By", "The link's receive window.", false)
			rtt, err := meter.Float64ObservableGauge("tcpconn.link.rtt", metric.WithUnit("s"),
				metric.WithDescription("Round-trip time measured by the link's last keepalive PING."))
			errs = append(errs, err)
			obs = append(obs, rtt)
			in.linkRTT = rtt
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("tcpconnotel: %w", err)
	}

	perLink := opts.PerLink
	return meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, s := range srcs {
			s.observe(o, &in, perLink, maxLinks)
		}
		return nil
	}, obs...)
}

// observe reports one Source.
func (s *source) observe(o metric.Observer, in *instruments, perLink bool, maxLinks int) {
	st := s.Stats()
	all := metric.WithAttributeSet(s.all)
	recv, xmit := metric.WithAttributeSet(s.recv), metric.WithAttributeSet(s.xmit)
	o.ObserveInt64(in.links, st.Links, all)
	o.ObserveInt64(in.connections, st.Connections, all)
	o.ObserveInt64(in.messages, int64(st.MessagesIn), recv)
	o.ObserveInt64(in.messages, int64(st.MessagesOut), xmit)
	o.ObserveInt64(in.io, int64(st.BytesIn), recv)
	o.ObserveInt64(in.io, int64(st.BytesOut), xmit)
	o.ObserveInt64(in.reconnects, int64(st.Reconnects), all)
	o.ObserveInt64(in.protocolErrors, int64(st.ProtocolErrors), all)
	if s.Links == nil {
		return
	}

	links := s.Links()
	var queued, window int64
	for _, l := range links {
		queued += l.BytesQueued
		window += l.Window
	}
	o.ObserveInt64(in.queued, queued, all)
	o.ObserveInt64(in.window, window, all)
	if !perLink {
		return
	}

	// Sorted by ID (both ends of a loopback link share it, then client
	// first), in a copy: the Source's slice is left as it was.
	links = append([]tcpconn.LinkStats(nil), links...)
	sort.Slice(links, func(i, j int) bool {
		if links[i].ID != links[j].ID {
			return links[i].ID < links[j].ID
		}
		return links[i].Client && !links[j].Client
	})
	if len(links) > maxLinks {
		links = links[:maxLinks]
	}
	for _, l := range links {
		kv := append(s.base[:len(s.base):len(s.base)], LinkIDKey.String(l.ID), LinkSideKey.String("server"))
		if l.Client {
			kv[len(kv)-1] = LinkSideKey.String("client")
		}
		if host, port, err := net.SplitHostPort(l.RemoteAddr); err == nil {
			kv = append(kv, semconv.NetworkPeerAddress(host))
			if p, err := strconv.Atoi(port); err == nil {
				kv = append(kv, semconv.NetworkPeerPort(p))
			}
		} else if l.RemoteAddr != "" {
			kv = append(kv, semconv.NetworkPeerAddress(l.RemoteAddr))
		}
		n := len(kv)
		linkAll := metric.WithAttributeSet(attribute.NewSet(kv...))
		linkRecv := metric.WithAttributeSet(attribute.NewSet(append(kv[:n:n], semconv.NetworkIODirectionReceive)...))
		linkXmit := metric.WithAttributeSet(attribute.NewSet(append(kv[:n:n], semconv.NetworkIODirectionTransmit)...))
		o.ObserveInt64(in.linkConnections, l.Connections, linkAll)
		o.ObserveInt64(in.linkMessages, int64(l.MessagesIn), linkRecv)
		o.ObserveInt64(in.linkMessages, int64(l.MessagesOut), linkXmit)
		o.ObserveInt64(in.linkIO, int64(l.BytesIn), linkRecv)
		o.ObserveInt64(in.linkIO, int64(l.BytesOut), linkXmit)
		o.ObserveInt64(in.linkQueued, l.BytesQueued, linkAll)
		o.ObserveInt64(in.linkWindow, l.Window, linkAll)
		if l.RTT > 0 {
			o.ObserveFloat64(in.linkRTT, l.RTT.Seconds(), linkAll)
		}
	}
}
