// SPDX-License-Identifier: MIT

// Package tcpconnprom exports tcpconn's Stats and LinkStats as Prometheus
// metrics: a prometheus.Collector that reads them at every scrape.
//
// One Collector exports one Source, a component of the program: the whole
// process (ProcessSource), a *tcpconn.Client (ClientSource) or a
// *tcpconn.Listener (ListenerSource). Its metrics carry the constant label
// component="process", "client" or "listener" (Source.Component), so
// several Collectors register side by side on one registry:
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(
//		tcpconnprom.NewCollector(tcpconnprom.ProcessSource(), nil),
//		tcpconnprom.NewCollector(tcpconnprom.ClientSource(client), nil),
//		tcpconnprom.NewCollector(tcpconnprom.ListenerSource(ln), nil),
//	)
//
// The process counts every link, a Client's and a Listener's included: do
// not sum over the component label.
//
// Metrics of every component (gauges unless _total; bytes are payload
// bytes, frame headers and control frames not counted):
//
//	tcpconn_links                     physical links (sockets) open
//	tcpconn_connections               logical connections bound to an open link
//	tcpconn_received_messages_total   messages received
//	tcpconn_sent_messages_total       messages handed to the socket
//	tcpconn_received_bytes_total      payload bytes received
//	tcpconn_sent_bytes_total          payload bytes handed to the socket
//	tcpconn_reconnects_total          client Connections re-attached after their socket was lost
//	tcpconn_protocol_errors_total     links closed for a protocol violation
//	tcpconn_write_queue_bytes         bytes waiting in the open links' write queues
//	tcpconn_receive_window_bytes      the open links' receive windows, summed
//
// With Options.PerLink, each open link (at most Options.MaxLinks of them)
// also has its own series, labelled link (its ID, the same on both ends),
// side ("client" or "server") and remote (the peer's address):
//
//	tcpconn_link_connections
//	tcpconn_link_received_messages_total
//	tcpconn_link_sent_messages_total
//	tcpconn_link_received_bytes_total
//	tcpconn_link_sent_bytes_total
//	tcpconn_link_write_queue_bytes
//	tcpconn_link_receive_window_bytes
//	tcpconn_link_rtt_seconds          keepalive round trip (absent until measured)
//
// Per-link series come and go with the links: every new socket (a
// reconnect, a new client of a Listener) is a new set of series. Their
// number at one scrape is bounded by MaxLinks per Collector; over time they
// churn with the sockets, which is why they are off by default. A client's
// links are few (one per address); a Listener's are one per client.
package tcpconnprom // import "github.com/pulsyflux/tcp-conn/metrics/prometheus"

import (
	"errors"
	"fmt"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	tcpconn "github.com/pulsyflux/tcp-conn"
)

// DefaultMaxLinks is how many links a Collector with Options.PerLink
// exports when Options.MaxLinks is 0.
const DefaultMaxLinks = 100

// Source is what a Collector reads at each scrape: one component's
// counters and, optionally, its open links.
type Source struct {
	// Component is the value of the component label ("process", "client",
	// "listener", or a name of your own, such as "orders-client", to tell
	// two Clients apart). It must not be empty.
	Component string
	// Stats returns the component's counters. It must not be nil.
	Stats func() tcpconn.Stats
	// Links describes the component's open links; nil leaves out the
	// metrics drawn from LinkStats (write queue, receive window, per link).
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

// Options adjusts a Collector. The zero value (or nil) exports the
// component metrics only.
type Options struct {
	// ConstLabels are added to every metric (for example
	// {"service": "orders"}). They must not use the names component,
	// link, side or remote.
	ConstLabels prometheus.Labels
	// PerLink adds the tcpconn_link_* series, one set per open link.
	PerLink bool
	// MaxLinks bounds the links exported per scrape when PerLink is set
	// (0: DefaultMaxLinks). Beyond it, the links with the smallest IDs
	// are exported, so the same links keep their series from one scrape
	// to the next; the component metrics still count every link.
	MaxLinks int
}

// Collector is a prometheus.Collector of one Source. Register it on a
// prometheus.Registerer; each Collect reads the Source once. It is safe
// for concurrent use.
type Collector struct {
	src      Source
	perLink  bool
	maxLinks int
	err      error

	links, connections                         *prometheus.Desc
	messagesIn, messagesOut, bytesIn, bytesOut *prometheus.Desc
	reconnects, protocolErrors                 *prometheus.Desc
	queued, window                             *prometheus.Desc

	linkConnections                                            *prometheus.Desc
	linkMessagesIn, linkMessagesOut, linkBytesIn, linkBytesOut *prometheus.Desc
	linkQueued, linkWindow, linkRTT                            *prometheus.Desc
}

// linkLabels are the variable labels of the tcpconn_link_* metrics.
var linkLabels = []string{"link", "side", "remote"}

// NewCollector returns a Collector of src. opts may be nil. A Source
// without Component or Stats, or ConstLabels that reuse one of the
// Collector's label names, make registration fail with an error saying
// so.
func NewCollector(src Source, opts *Options) *Collector {
	if opts == nil {
		opts = &Options{}
	}
	c := &Collector{src: src, perLink: opts.PerLink, maxLinks: opts.MaxLinks}
	if c.maxLinks <= 0 {
		c.maxLinks = DefaultMaxLinks
	}
	switch {
	case src.Component == "":
		c.err = errors.New("tcpconnprom: Source.Component is empty")
	case src.Stats == nil:
		c.err = errors.New("tcpconnprom: Source.Stats is nil")
	}
	labels := prometheus.Labels{}
	for k, v := range opts.ConstLabels {
		if k == "component" || (opts.PerLink && (k == "link" || k == "side" || k == "remote")) {
			c.err = fmt.Errorf("tcpconnprom: ConstLabels may not set %q, a label of the Collector's own", k)
		}
		labels[k] = v
	}
	labels["component"] = src.Component

	desc := func(name, help string, variable []string) *prometheus.Desc {
		return prometheus.NewDesc("tcpconn_"+name, help, variable, labels)
	}
	c.links = desc("links", "Physical links (sockets) open.", nil)
	c.connections = desc("connections", "Logical connections bound to an open link.", nil)
	c.messagesIn = desc("received_messages_total", "Messages received.", nil)
	c.messagesOut = desc("sent_messages_total", "Messages handed to the socket.", nil)
	c.bytesIn = desc("received_bytes_total", "Payload bytes received.", nil)
	c.bytesOut = desc("sent_bytes_total", "Payload bytes handed to the socket.", nil)
	c.reconnects = desc("reconnects_total", "Client connections re-attached after their socket was lost.", nil)
	c.protocolErrors = desc("protocol_errors_total", "Links closed for a protocol violation.", nil)
	c.queued = desc("write_queue_bytes", "Bytes waiting in the open links' write queues.", nil)
	c.window = desc("receive_window_bytes", "Receive windows of the open links, summed.", nil)

	c.linkConnections = desc("link_connections", "Logical connections bound to the link.", linkLabels)
	c.linkMessagesIn = desc("link_received_messages_total", "Messages received on the link.", linkLabels)
	c.linkMessagesOut = desc("link_sent_messages_total", "Messages handed to the link's socket.", linkLabels)
	c.linkBytesIn = desc("link_received_bytes_total", "Payload bytes received on the link.", linkLabels)
	c.linkBytesOut = desc("link_sent_bytes_total", "Payload bytes handed to the link's socket.", linkLabels)
	c.linkQueued = desc("link_write_queue_bytes", "Bytes waiting in the link's write queue.", linkLabels)
	c.linkWindow = desc("link_receive_window_bytes", "The link's receive window.", linkLabels)
	c.linkRTT = desc("link_rtt_seconds", "Round-trip time measured by the link's last keepalive PING.", linkLabels)
	return c
}

func (c *Collector) componentDescs() []*prometheus.Desc {
	d := []*prometheus.Desc{c.links, c.connections, c.messagesIn, c.messagesOut,
		c.bytesIn, c.bytesOut, c.reconnects, c.protocolErrors}
	if c.src.Links != nil {
		d = append(d, c.queued, c.window)
	}
	return d
}

func (c *Collector) linkDescs() []*prometheus.Desc {
	if !c.perLink || c.src.Links == nil {
		return nil
	}
	return []*prometheus.Desc{c.linkConnections, c.linkMessagesIn, c.linkMessagesOut,
		c.linkBytesIn, c.linkBytesOut, c.linkQueued, c.linkWindow, c.linkRTT}
}

// Describe sends the descriptors of the metrics c exports (part of
// prometheus.Collector).
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	if c.err != nil {
		ch <- prometheus.NewInvalidDesc(c.err)
		return
	}
	for _, d := range c.componentDescs() {
		ch <- d
	}
	for _, d := range c.linkDescs() {
		ch <- d
	}
}

// Collect reads the Source and sends its metrics (part of
// prometheus.Collector).
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if c.err != nil {
		ch <- prometheus.NewInvalidMetric(prometheus.NewInvalidDesc(c.err), c.err)
		return
	}
	st := c.src.Stats()
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v uint64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
	}
	gauge(c.links, float64(st.Links))
	gauge(c.connections, float64(st.Connections))
	counter(c.messagesIn, st.MessagesIn)
	counter(c.messagesOut, st.MessagesOut)
	counter(c.bytesIn, st.BytesIn)
	counter(c.bytesOut, st.BytesOut)
	counter(c.reconnects, st.Reconnects)
	counter(c.protocolErrors, st.ProtocolErrors)
	if c.src.Links == nil {
		return
	}

	links := c.src.Links()
	var queued, window int64
	for _, l := range links {
		queued += l.BytesQueued
		window += l.Window
	}
	gauge(c.queued, float64(queued))
	gauge(c.window, float64(window))
	if !c.perLink {
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
	if len(links) > c.maxLinks {
		links = links[:c.maxLinks]
	}
	for _, l := range links {
		side := "server"
		if l.Client {
			side = "client"
		}
		lv := []string{l.ID, side, l.RemoteAddr}
		gauge(c.linkConnections, float64(l.Connections), lv...)
		counter(c.linkMessagesIn, l.MessagesIn, lv...)
		counter(c.linkMessagesOut, l.MessagesOut, lv...)
		counter(c.linkBytesIn, l.BytesIn, lv...)
		counter(c.linkBytesOut, l.BytesOut, lv...)
		gauge(c.linkQueued, float64(l.BytesQueued), lv...)
		gauge(c.linkWindow, float64(l.Window), lv...)
		if l.RTT > 0 {
			gauge(c.linkRTT, l.RTT.Seconds(), lv...)
		}
	}
}
