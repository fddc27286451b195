// SPDX-License-Identifier: MIT

package tcpconnprom_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	tcpconn "github.com/pulsyflux/tcp-conn"
	tcpconnprom "github.com/pulsyflux/tcp-conn/metrics/prometheus"
)

// echoServer listens on 127.0.0.1 and echoes every message on every logical
// connection.
func echoServer(t testing.TB) *tcpconn.Listener {
	t.Helper()
	ln, err := tcpconn.Listen("tcp", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					m, err := c.Receive()
					if err != nil || c.Send(m) != nil {
						return
					}
				}
			}()
		}
	}()
	return ln
}

// roundTrips sends each message on a new logical connection of cl and
// waits for its echo; it returns the connection, still open, and the bytes
// sent.
func roundTrips(t testing.TB, cl *tcpconn.Client, addr string, sizes ...int) (*tcpconn.Connection, uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := cl.Dial(ctx, addr, tcpconn.WithID("metrics"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var total uint64
	for i, n := range sizes {
		msg := []byte(strings.Repeat(string(rune('a'+i%26)), n))
		if err := c.SendContext(ctx, msg); err != nil {
			t.Fatal(err)
		}
		got, err := c.ReceiveContext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(msg) {
			t.Fatalf("echo %d: %d bytes back, want %d", i, len(got), n)
		}
		total += uint64(n)
	}
	return c, total
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func newClient(t testing.TB) *tcpconn.Client {
	t.Helper()
	cl, err := tcpconn.NewClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// families indexes a Gather by metric name.
type families map[string]*dto.MetricFamily

func gather(t testing.TB, g prometheus.Gatherer) families {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	f := families{}
	for _, mf := range mfs {
		f[mf.GetName()] = mf
	}
	return f
}

// value returns the value of the series of name whose labels include want,
// failing unless exactly one matches.
func (f families) value(t testing.TB, name string, want map[string]string) float64 {
	t.Helper()
	mf, ok := f[name]
	if !ok {
		t.Fatalf("%s: not gathered", name)
	}
	var found []*dto.Metric
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if match {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d series match, want 1", name, want, len(found))
	}
	switch mf.GetType() {
	case dto.MetricType_COUNTER:
		return found[0].GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return found[0].GetGauge().GetValue()
	}
	t.Fatalf("%s: type %v", name, mf.GetType())
	return 0
}

var componentMetrics = map[string]dto.MetricType{
	"tcpconn_links":                   dto.MetricType_GAUGE,
	"tcpconn_connections":             dto.MetricType_GAUGE,
	"tcpconn_received_messages_total": dto.MetricType_COUNTER,
	"tcpconn_sent_messages_total":     dto.MetricType_COUNTER,
	"tcpconn_received_bytes_total":    dto.MetricType_COUNTER,
	"tcpconn_sent_bytes_total":        dto.MetricType_COUNTER,
	"tcpconn_reconnects_total":        dto.MetricType_COUNTER,
	"tcpconn_protocol_errors_total":   dto.MetricType_COUNTER,
	"tcpconn_write_queue_bytes":       dto.MetricType_GAUGE,
	"tcpconn_receive_window_bytes":    dto.MetricType_GAUGE,
}

var linkMetrics = map[string]dto.MetricType{
	"tcpconn_link_connections":             dto.MetricType_GAUGE,
	"tcpconn_link_received_messages_total": dto.MetricType_COUNTER,
	"tcpconn_link_sent_messages_total":     dto.MetricType_COUNTER,
	"tcpconn_link_received_bytes_total":    dto.MetricType_COUNTER,
	"tcpconn_link_sent_bytes_total":        dto.MetricType_COUNTER,
	"tcpconn_link_write_queue_bytes":       dto.MetricType_GAUGE,
	"tcpconn_link_receive_window_bytes":    dto.MetricType_GAUGE,
	"tcpconn_link_rtt_seconds":             dto.MetricType_GAUGE,
}

// A Client and a Listener exchange real messages over 127.0.0.1; a
// registry with the process, client and listener Collectors side by side
// reports what was sent, under the names and types documented.
func TestCollectorCountsRealTraffic(t *testing.T) {
	ln := echoServer(t)
	cl := newClient(t)
	// 100 KiB is sent in parts (FrameSize 64 KiB) and counts as one message.
	_, sent := roundTrips(t, cl, ln.Addr().String(), 1, 100, 1000, 100<<10)
	const msgs = 4
	waitFor(t, "a keepalive RTT on both ends", func() bool {
		c, s := cl.Links(), ln.Links()
		return len(c) == 1 && len(s) == 1 && c[0].RTT > 0 && s[0].RTT > 0
	})

	reg := prometheus.NewPedanticRegistry()
	opts := &tcpconnprom.Options{PerLink: true}
	reg.MustRegister(
		tcpconnprom.NewCollector(tcpconnprom.ProcessSource(), nil),
		tcpconnprom.NewCollector(tcpconnprom.ClientSource(cl), opts),
		tcpconnprom.NewCollector(tcpconnprom.ListenerSource(ln), opts),
	)
	f := gather(t, reg)

	for _, group := range []struct {
		metrics map[string]dto.MetricType
		series  int
		which   string
	}{
		{componentMetrics, 3, "process, client, listener"},
		{linkMetrics, 2, "the client's link and the listener's"},
	} {
		for name, typ := range group.metrics {
			mf := f[name]
			if mf == nil {
				t.Errorf("%s: not gathered", name)
				continue
			}
			if mf.GetType() != typ || mf.GetHelp() == "" {
				t.Errorf("%s: type %v help %q, want %v and a help text", name, mf.GetType(), mf.GetHelp(), typ)
			}
			if n := len(mf.GetMetric()); n != group.series {
				t.Errorf("%s: %d series, want %d (%s)", name, n, group.series, group.which)
			}
		}
	}
	if len(f) != len(componentMetrics)+len(linkMetrics) {
		t.Errorf("gathered %d families, want %d", len(f), len(componentMetrics)+len(linkMetrics))
	}

	client := map[string]string{"component": "client"}
	listener := map[string]string{"component": "listener"}
	process := map[string]string{"component": "process"}
	for _, c := range []struct {
		name  string
		where map[string]string
		want  float64
	}{
		{"tcpconn_links", client, 1},
		{"tcpconn_connections", client, 1},
		{"tcpconn_sent_messages_total", client, msgs},
		{"tcpconn_sent_bytes_total", client, float64(sent)},
		{"tcpconn_received_messages_total", client, msgs},
		{"tcpconn_received_bytes_total", client, float64(sent)},
		{"tcpconn_reconnects_total", client, 0},
		{"tcpconn_protocol_errors_total", client, 0},
		{"tcpconn_links", listener, 1},
		{"tcpconn_connections", listener, 1},
		{"tcpconn_received_messages_total", listener, msgs},
		{"tcpconn_received_bytes_total", listener, float64(sent)},
		{"tcpconn_sent_messages_total", listener, msgs},
		{"tcpconn_sent_bytes_total", listener, float64(sent)},
		{"tcpconn_protocol_errors_total", listener, 0},
	} {
		if got := f.value(t, c.name, c.where); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.where, got, c.want)
		}
	}
	// The process holds both ends (and whatever other tests left behind).
	for _, name := range []string{"tcpconn_sent_bytes_total", "tcpconn_received_bytes_total"} {
		if got := f.value(t, name, process); got < 2*float64(sent) {
			t.Errorf("%s%v = %v, want at least %v", name, process, got, 2*sent)
		}
	}
	if got := f.value(t, "tcpconn_links", process); got < 2 {
		t.Errorf("tcpconn_links%v = %v, want at least 2", process, got)
	}
	if got := f.value(t, "tcpconn_receive_window_bytes", client); got < tcpconn.InitialWindow {
		t.Errorf("tcpconn_receive_window_bytes%v = %v, want at least InitialWindow", client, got)
	}

	// Per link: the same ID on both ends, told apart by side.
	id := cl.Links()[0].ID
	if sid := ln.Links()[0].ID; sid != id {
		t.Fatalf("link IDs: client %s, listener %s", id, sid)
	}
	clientLink := map[string]string{"component": "client", "link": id, "side": "client", "remote": ln.Addr().String()}
	serverLink := map[string]string{"component": "listener", "link": id, "side": "server"}
	for _, where := range []map[string]string{clientLink, serverLink} {
		for name, want := range map[string]float64{
			"tcpconn_link_connections":             1,
			"tcpconn_link_sent_messages_total":     msgs,
			"tcpconn_link_received_messages_total": msgs,
			"tcpconn_link_sent_bytes_total":        float64(sent),
			"tcpconn_link_received_bytes_total":    float64(sent),
		} {
			if got := f.value(t, name, where); got != want {
				t.Errorf("%s%v = %v, want %v", name, where, got, want)
			}
		}
		if rtt := f.value(t, "tcpconn_link_rtt_seconds", where); rtt <= 0 || rtt > 1 {
			t.Errorf("tcpconn_link_rtt_seconds%v = %v, want a loopback round trip in seconds", where, rtt)
		}
		if w := f.value(t, "tcpconn_link_receive_window_bytes", where); w < tcpconn.InitialWindow {
			t.Errorf("tcpconn_link_receive_window_bytes%v = %v, want at least InitialWindow", where, w)
		}
	}
}

// Counters outlive the links that counted them; the gauges drop to zero.
func TestCollectorCountersSurviveClose(t *testing.T) {
	ln := echoServer(t)
	cl := newClient(t)
	c, sent := roundTrips(t, cl, ln.Addr().String(), 10, 20, 30)
	c.Close()
	waitFor(t, "the client's link to close", func() bool { return cl.Stats().Links == 0 })

	reg := prometheus.NewRegistry()
	reg.MustRegister(tcpconnprom.NewCollector(tcpconnprom.ClientSource(cl), &tcpconnprom.Options{PerLink: true}))
	f := gather(t, reg)
	where := map[string]string{"component": "client"}
	for name, want := range map[string]float64{
		"tcpconn_links":               0,
		"tcpconn_connections":         0,
		"tcpconn_sent_messages_total": 3,
		"tcpconn_sent_bytes_total":    float64(sent),
		"tcpconn_write_queue_bytes":   0,
	} {
		if got := f.value(t, name, where); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if _, ok := f["tcpconn_link_sent_bytes_total"]; ok {
		t.Error("per-link series of a closed link are still exported")
	}
}

// promlint finds nothing to say about the names, units, types and help
// texts, per-link series included.
func TestCollectorLint(t *testing.T) {
	ln := echoServer(t)
	cl := newClient(t)
	roundTrips(t, cl, ln.Addr().String(), 5)
	for _, src := range []tcpconnprom.Source{tcpconnprom.ProcessSource(), tcpconnprom.ClientSource(cl), tcpconnprom.ListenerSource(ln)} {
		c := tcpconnprom.NewCollector(src, &tcpconnprom.Options{PerLink: true})
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s: %s", src.Component, p.Metric, p.Text)
		}
		if n := testutil.CollectAndCount(c); n < len(componentMetrics) {
			t.Errorf("%s: collected %d series, want at least %d", src.Component, n, len(componentMetrics))
		}
	}
}

// fixed is a Source of known figures: two links, one measured.
func fixed() tcpconnprom.Source {
	return tcpconnprom.Source{
		Component: "fixed",
		Stats: func() tcpconn.Stats {
			return tcpconn.Stats{Links: 2, Connections: 5, MessagesIn: 10, MessagesOut: 20,
				BytesIn: 1000, BytesOut: 2000, Reconnects: 3, ProtocolErrors: 1}
		},
		Links: func() []tcpconn.LinkStats {
			return []tcpconn.LinkStats{
				{ID: "b", Client: false, LocalAddr: "10.0.0.1:80", RemoteAddr: "10.0.0.2:5000", Connections: 3,
					MessagesIn: 6, MessagesOut: 12, BytesIn: 600, BytesOut: 1200, BytesQueued: 100, Window: 2 << 20},
				{ID: "a", Client: true, LocalAddr: "10.0.0.1:4000", RemoteAddr: "10.0.0.3:80", Connections: 2,
					MessagesIn: 4, MessagesOut: 8, BytesIn: 400, BytesOut: 800, BytesQueued: 50, Window: 1 << 20,
					RTT: 1500 * time.Microsecond},
			}
		},
	}
}

// The exposition of known figures, byte for byte: names, help texts,
// types, labels, and durations in seconds.
func TestCollectorExposition(t *testing.T) {
	c := tcpconnprom.NewCollector(fixed(), &tcpconnprom.Options{
		PerLink:     true,
		ConstLabels: prometheus.Labels{"service": "orders"},
	})
	const want = `
# HELP tcpconn_connections Logical connections bound to an open link.
# TYPE tcpconn_connections gauge
tcpconn_connections{component="fixed",service="orders"} 5
# HELP tcpconn_link_connections Logical connections bound to the link.
# TYPE tcpconn_link_connections gauge
tcpconn_link_connections{component="fixed",link="a",remote="10.0.0.3:80",service="orders",side="client"} 2
tcpconn_link_connections{component="fixed",link="b",remote="10.0.0.2:5000",service="orders",side="server"} 3
# HELP tcpconn_link_receive_window_bytes The link's receive window.
# TYPE tcpconn_link_receive_window_bytes gauge
tcpconn_link_receive_window_bytes{component="fixed",link="a",remote="10.0.0.3:80",service="orders",side="client"} 1.048576e+06
tcpconn_link_receive_window_bytes{component="fixed",link="b",remote="10.0.0.2:5000",service="orders",side="server"} 2.097152e+06
# HELP tcpconn_link_received_bytes_total Payload bytes received on the link.
# TYPE tcpconn_link_received_bytes_total counter
tcpconn_link_received_bytes_total{component="fixed",link="a",remote="10.0.0.3:80",service="orders",side="client"} 400
tcpconn_link_received_bytes_total{component="fixed",link="b",remote="10.0.0.2:5000",service="orders",side="server"} 600
# HELP tcpconn_link_received_messages_total Messages received on the link.
# TYPE tcpconn_link_received_messages_total counter
tcpconn_link_received_messages_total{component="fixed",link="a",remote="10.0.0.3:80",service="orders",side="client"} 4
tcpconn_link_received_messages_total{component="fixed",link="b",remote="10.0.0.2:5000",service="orders",side="server"} 6
# HELP tcpconn_link_rtt_seconds Round-trip time measured by the link's last keepalive PING.
# TYPE tcpconn_link_rtt_seconds gauge
tcpconn_link_rtt_seconds{component="fixed",link="a",remote="10.0.0.3:80",service="orders",side="client"} 0.0015
# HELP tcpconn_link_sent_bytes_total Payload bytes handed to the link's socket.
# TYPE tcpconn_link_sent_bytes_total counter
tcpconn_link_sent_bytes_total{component="fixed",link="a",remote="10.0.0.3:80",service="orders",side="client"} 800
tcpconn_link_sent_bytes_total{component="fixed",link="b",remote="10.0.0.2:5000",service="orders",side="server"} 1200
# HELP tcpconn_link_sent_messages_total Messages handed to the link's socket.
# TYPE tcpconn_link_sent_messages_total counter
tcpconn_link_sent_messages_total{component="fixed",link="a",remote="10.0.0.3:80",service="orders",side="client"} 8
tcpconn_link_sent_messages_total{component="fixed",link="b",remote="10.0.0.2:5000",service="orders",side="server"} 12
# HELP tcpconn_link_write_queue_bytes Bytes waiting in the link's write queue.
# TYPE tcpconn_link_write_queue_bytes gauge
tcpconn_link_write_queue_bytes{component="fixed",link="a",remote="10.0.0.3:80",service="orders",side="client"} 50
tcpconn_link_write_queue_bytes{component="fixed",link="b",remote="10.0.0.2:5000",service="orders",side="server"} 100
# HELP tcpconn_links Physical links (sockets) open.
# TYPE tcpconn_links gauge
tcpconn_links{component="fixed",service="orders"} 2
# HELP tcpconn_protocol_errors_total Links closed for a protocol violation.
# TYPE tcpconn_protocol_errors_total counter
tcpconn_protocol_errors_total{component="fixed",service="orders"} 1
# HELP tcpconn_receive_window_bytes Receive windows of the open links, summed.
# TYPE tcpconn_receive_window_bytes gauge
tcpconn_receive_window_bytes{component="fixed",service="orders"} 3.145728e+06
# HELP tcpconn_received_bytes_total Payload bytes received.
# TYPE tcpconn_received_bytes_total counter
tcpconn_received_bytes_total{component="fixed",service="orders"} 1000
# HELP tcpconn_received_messages_total Messages received.
# TYPE tcpconn_received_messages_total counter
tcpconn_received_messages_total{component="fixed",service="orders"} 10
# HELP tcpconn_reconnects_total Client connections re-attached after their socket was lost.
# TYPE tcpconn_reconnects_total counter
tcpconn_reconnects_total{component="fixed",service="orders"} 3
# HELP tcpconn_sent_bytes_total Payload bytes handed to the socket.
# TYPE tcpconn_sent_bytes_total counter
tcpconn_sent_bytes_total{component="fixed",service="orders"} 2000
# HELP tcpconn_sent_messages_total Messages handed to the socket.
# TYPE tcpconn_sent_messages_total counter
tcpconn_sent_messages_total{component="fixed",service="orders"} 20
# HELP tcpconn_write_queue_bytes Bytes waiting in the open links' write queues.
# TYPE tcpconn_write_queue_bytes gauge
tcpconn_write_queue_bytes{component="fixed",service="orders"} 150
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	// Without PerLink, and without Links, less is exported.
	if n := testutil.CollectAndCount(tcpconnprom.NewCollector(fixed(), nil)); n != 10 {
		t.Errorf("without PerLink: %d series, want 10", n)
	}
	src := fixed()
	src.Links = nil
	if n := testutil.CollectAndCount(tcpconnprom.NewCollector(src, &tcpconnprom.Options{PerLink: true})); n != 8 {
		t.Errorf("without Links: %d series, want 8", n)
	}
}

// MaxLinks keeps the links with the smallest IDs; the component metrics
// still count them all.
func TestCollectorMaxLinks(t *testing.T) {
	src := tcpconnprom.Source{
		Component: "many",
		Stats:     func() tcpconn.Stats { return tcpconn.Stats{Links: 5} },
		Links: func() []tcpconn.LinkStats {
			var ls []tcpconn.LinkStats
			for _, id := range []string{"e", "c", "a", "d", "b"} {
				ls = append(ls, tcpconn.LinkStats{ID: id, BytesQueued: 1})
			}
			return ls
		},
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(tcpconnprom.NewCollector(src, &tcpconnprom.Options{PerLink: true, MaxLinks: 2}))
	f := gather(t, reg)
	var ids []string
	for _, m := range f["tcpconn_link_write_queue_bytes"].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "link" {
				ids = append(ids, lp.GetValue())
			}
		}
	}
	if fmt.Sprint(ids) != "[a b]" {
		t.Errorf("links exported: %v, want [a b]", ids)
	}
	if got := f.value(t, "tcpconn_write_queue_bytes", nil); got != 5 {
		t.Errorf("tcpconn_write_queue_bytes = %v, want 5 (every link)", got)
	}
}

// A Collector that cannot work says why at registration; Collectors of
// distinct components register side by side, two of the same do not.
func TestCollectorRegistration(t *testing.T) {
	stats := func() tcpconn.Stats { return tcpconn.Stats{} }
	for name, c := range map[string]*tcpconnprom.Collector{
		"no component": tcpconnprom.NewCollector(tcpconnprom.Source{Stats: stats}, nil),
		"no stats":     tcpconnprom.NewCollector(tcpconnprom.Source{Component: "x"}, nil),
		"component in ConstLabels": tcpconnprom.NewCollector(tcpconnprom.Source{Component: "x", Stats: stats},
			&tcpconnprom.Options{ConstLabels: prometheus.Labels{"component": "y"}}),
		"link in ConstLabels": tcpconnprom.NewCollector(tcpconnprom.Source{Component: "x", Stats: stats, Links: tcpconn.ReadLinkStats},
			&tcpconnprom.Options{PerLink: true, ConstLabels: prometheus.Labels{"link": "y"}}),
	} {
		if err := prometheus.NewRegistry().Register(c); err == nil {
			t.Errorf("%s: registered", name)
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(tcpconnprom.NewCollector(tcpconnprom.ProcessSource(), nil))
	reg.MustRegister(tcpconnprom.NewCollector(tcpconnprom.Source{Component: "other", Stats: stats}, nil))
	if err := reg.Register(tcpconnprom.NewCollector(tcpconnprom.ProcessSource(), nil)); err == nil {
		t.Error("a second process Collector registered on the same registry")
	}
}
