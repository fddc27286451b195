// SPDX-License-Identifier: MIT

package tcpconnotel_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	tcpconn "github.com/pulsyflux/tcp-conn"
	tcpconnotel "github.com/pulsyflux/tcp-conn/metrics/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"
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
func roundTrips(t testing.TB, cl *tcpconn.Client, addr string, sizes ...int) (*tcpconn.Connection, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := cl.Dial(ctx, addr, tcpconn.WithID("metrics"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var total int64
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
		total += int64(n)
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

// newReader returns a ManualReader and a Meter of its provider, named
// tcpconnotel.ScopeName.
func newReader(t testing.TB) (*sdkmetric.ManualReader, *sdkmetric.MeterProvider) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	return reader, mp
}

// collected indexes one collection of the package's scope by instrument
// name.
type collected map[string]metricdata.Metrics

func collect(t testing.TB, r *sdkmetric.ManualReader) collected {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	c := collected{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != tcpconnotel.ScopeName {
			t.Errorf("scope %q, want %q", sm.Scope.Name, tcpconnotel.ScopeName)
		}
		for _, m := range sm.Metrics {
			c[m.Name] = m
		}
	}
	return c
}

// has reports whether set holds every attribute of want.
func has(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// value returns the value of the data point of name whose attributes
// include want, failing unless exactly one matches.
func (c collected) value(t testing.TB, name string, want ...attribute.KeyValue) float64 {
	t.Helper()
	m, ok := c[name]
	if !ok {
		t.Fatalf("%s: not collected", name)
	}
	var found []float64
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes, want) {
				found = append(found, float64(p.Value))
			}
		}
	case metricdata.Gauge[float64]:
		for _, p := range d.DataPoints {
			if has(p.Attributes, want) {
				found = append(found, p.Value)
			}
		}
	default:
		t.Fatalf("%s: data %T", name, m.Data)
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d points match, want 1", name, want, len(found))
	}
	return found[0]
}

// points counts the data points of name.
func (c collected) points(name string) int {
	switch d := c[name].Data.(type) {
	case metricdata.Sum[int64]:
		return len(d.DataPoints)
	case metricdata.Gauge[float64]:
		return len(d.DataPoints)
	}
	return 0
}

type kind int

const (
	counter       kind = iota // monotonic cumulative Sum[int64]
	upDownCounter             // non-monotonic cumulative Sum[int64]
	gauge                     // Gauge[float64]
)

var componentInstruments = map[string]struct {
	unit string
	kind kind
}{
	"tcpconn.link.count":           {"{link}", upDownCounter},
	"tcpconn.connection.count":     {"{connection}", upDownCounter},
	"tcpconn.message.count":        {"{message}", counter},
	"tcpconn.io":                   {"By", counter},
	"tcpconn.reconnect.count":      {"{reconnect}", counter},
	"tcpconn.protocol_error.count": {"{error}", counter},
	"tcpconn.write_queue.size":     {"By", upDownCounter},
	"tcpconn.receive_window.size":  {"By", upDownCounter},
}

var linkInstruments = map[string]struct {
	unit string
	kind kind
}{
	"tcpconn.link.connection.count":    {"{connection}", upDownCounter},
	"tcpconn.link.message.count":       {"{message}", counter},
	"tcpconn.link.io":                  {"By", counter},
	"tcpconn.link.write_queue.size":    {"By", upDownCounter},
	"tcpconn.link.receive_window.size": {"By", upDownCounter},
	"tcpconn.link.rtt":                 {"s", gauge},
}

func checkInstrument(t *testing.T, m metricdata.Metrics, unit string, k kind) {
	t.Helper()
	if m.Unit != unit || m.Description == "" {
		t.Errorf("%s: unit %q description %q, want %q and a description", m.Name, m.Unit, m.Description, unit)
	}
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		if k == gauge || d.IsMonotonic != (k == counter) || d.Temporality != metricdata.CumulativeTemporality {
			t.Errorf("%s: Sum monotonic %v %v, want kind %d", m.Name, d.IsMonotonic, d.Temporality, k)
		}
	case metricdata.Gauge[float64]:
		if k != gauge {
			t.Errorf("%s: a Gauge, want kind %d", m.Name, k)
		}
	default:
		t.Errorf("%s: data %T", m.Name, m.Data)
	}
}

var (
	client   = tcpconnotel.ComponentKey.String("client")
	listener = tcpconnotel.ComponentKey.String("listener")
	process  = tcpconnotel.ComponentKey.String("process")
	receive  = attribute.String("network.io.direction", "receive")
	transmit = attribute.String("network.io.direction", "transmit")
)

// A Client and a Listener exchange real messages over 127.0.0.1; a
// ManualReader collects the process's, the client's and the listener's
// figures, under the names, units and kinds documented.
func TestRegisterCountsRealTraffic(t *testing.T) {
	ln := echoServer(t)
	cl := newClient(t)
	// 100 KiB is sent in parts (FrameSize 64 KiB) and counts as one message.
	_, sent := roundTrips(t, cl, ln.Addr().String(), 1, 100, 1000, 100<<10)
	const msgs = 4
	waitFor(t, "a keepalive RTT on both ends", func() bool {
		c, s := cl.Links(), ln.Links()
		return len(c) == 1 && len(s) == 1 && c[0].RTT > 0 && s[0].RTT > 0
	})

	reader, mp := newReader(t)
	reg, err := tcpconnotel.Register(mp.Meter(tcpconnotel.ScopeName), &tcpconnotel.Options{PerLink: true},
		tcpconnotel.ProcessSource(), tcpconnotel.ClientSource(cl), tcpconnotel.ListenerSource(ln))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()
	got := collect(t, reader)

	for name, want := range componentInstruments {
		m, ok := got[name]
		if !ok {
			t.Errorf("%s: not collected", name)
			continue
		}
		checkInstrument(t, m, want.unit, want.kind)
		points := 3 // process, client, listener
		if name == "tcpconn.message.count" || name == "tcpconn.io" {
			points = 6 // and both directions
		}
		if n := got.points(name); n != points {
			t.Errorf("%s: %d points, want %d", name, n, points)
		}
	}
	for name, want := range linkInstruments {
		m, ok := got[name]
		if !ok {
			t.Errorf("%s: not collected", name)
			continue
		}
		checkInstrument(t, m, want.unit, want.kind)
	}
	if len(got) != len(componentInstruments)+len(linkInstruments) {
		t.Errorf("collected %d instruments, want %d", len(got), len(componentInstruments)+len(linkInstruments))
	}

	for _, c := range []struct {
		name string
		attr []attribute.KeyValue
		want float64
	}{
		{"tcpconn.link.count", []attribute.KeyValue{client}, 1},
		{"tcpconn.connection.count", []attribute.KeyValue{client}, 1},
		{"tcpconn.message.count", []attribute.KeyValue{client, transmit}, msgs},
		{"tcpconn.message.count", []attribute.KeyValue{client, receive}, msgs},
		{"tcpconn.io", []attribute.KeyValue{client, transmit}, float64(sent)},
		{"tcpconn.io", []attribute.KeyValue{client, receive}, float64(sent)},
		{"tcpconn.reconnect.count", []attribute.KeyValue{client}, 0},
		{"tcpconn.protocol_error.count", []attribute.KeyValue{client}, 0},
		{"tcpconn.link.count", []attribute.KeyValue{listener}, 1},
		{"tcpconn.connection.count", []attribute.KeyValue{listener}, 1},
		{"tcpconn.message.count", []attribute.KeyValue{listener, receive}, msgs},
		{"tcpconn.message.count", []attribute.KeyValue{listener, transmit}, msgs},
		{"tcpconn.io", []attribute.KeyValue{listener, receive}, float64(sent)},
		{"tcpconn.io", []attribute.KeyValue{listener, transmit}, float64(sent)},
		{"tcpconn.protocol_error.count", []attribute.KeyValue{listener}, 0},
	} {
		if v := got.value(t, c.name, c.attr...); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.attr, v, c.want)
		}
	}
	// The process holds both ends (and whatever other tests left behind).
	for _, dir := range []attribute.KeyValue{receive, transmit} {
		if v := got.value(t, "tcpconn.io", process, dir); v < 2*float64(sent) {
			t.Errorf("tcpconn.io{process %v} = %v, want at least %v", dir.Value.AsString(), v, 2*sent)
		}
	}
	if v := got.value(t, "tcpconn.receive_window.size", client); v < tcpconn.InitialWindow {
		t.Errorf("tcpconn.receive_window.size{client} = %v, want at least InitialWindow", v)
	}

	// Per link: the same ID on both ends, told apart by side; the peer's
	// address split as the semantic conventions have it.
	id := cl.Links()[0].ID
	if sid := ln.Links()[0].ID; sid != id {
		t.Fatalf("link IDs: client %s, listener %s", id, sid)
	}
	host, portText, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatal(err)
	}
	clientLink := []attribute.KeyValue{client, tcpconnotel.LinkIDKey.String(id), tcpconnotel.LinkSideKey.String("client"),
		attribute.String("network.peer.address", host), attribute.Int("network.peer.port", port)}
	serverLink := []attribute.KeyValue{listener, tcpconnotel.LinkIDKey.String(id), tcpconnotel.LinkSideKey.String("server"),
		attribute.String("network.peer.address", "127.0.0.1")}
	for _, link := range [][]attribute.KeyValue{clientLink, serverLink} {
		with := func(kv ...attribute.KeyValue) []attribute.KeyValue { return append(link[:len(link):len(link)], kv...) }
		for _, c := range []struct {
			name string
			attr []attribute.KeyValue
			want float64
		}{
			{"tcpconn.link.connection.count", link, 1},
			{"tcpconn.link.message.count", with(transmit), msgs},
			{"tcpconn.link.message.count", with(receive), msgs},
			{"tcpconn.link.io", with(transmit), float64(sent)},
			{"tcpconn.link.io", with(receive), float64(sent)},
		} {
			if v := got.value(t, c.name, c.attr...); v != c.want {
				t.Errorf("%s%v = %v, want %v", c.name, c.attr, v, c.want)
			}
		}
		if rtt := got.value(t, "tcpconn.link.rtt", link...); rtt <= 0 || rtt > 1 {
			t.Errorf("tcpconn.link.rtt%v = %v, want a loopback round trip in seconds", link, rtt)
		}
		if w := got.value(t, "tcpconn.link.receive_window.size", link...); w < tcpconn.InitialWindow {
			t.Errorf("tcpconn.link.receive_window.size%v = %v, want at least InitialWindow", link, w)
		}
	}

	// Unregistered, the callback reads nothing more.
	if err := reg.Unregister(); err != nil {
		t.Fatal(err)
	}
	after := collect(t, reader)
	for name := range after {
		if n := after.points(name); n != 0 {
			t.Errorf("after Unregister: %s has %d points", name, n)
		}
	}
}

// Counters outlive the links that counted them; the gauges drop to zero.
func TestRegisterCountersSurviveClose(t *testing.T) {
	ln := echoServer(t)
	cl := newClient(t)
	c, sent := roundTrips(t, cl, ln.Addr().String(), 10, 20, 30)
	c.Close()
	waitFor(t, "the client's link to close", func() bool { return cl.Stats().Links == 0 })

	reader, mp := newReader(t)
	if _, err := tcpconnotel.Register(mp.Meter(tcpconnotel.ScopeName), &tcpconnotel.Options{PerLink: true},
		tcpconnotel.ClientSource(cl)); err != nil {
		t.Fatal(err)
	}
	got := collect(t, reader)
	for _, c := range []struct {
		name string
		attr []attribute.KeyValue
		want float64
	}{
		{"tcpconn.link.count", []attribute.KeyValue{client}, 0},
		{"tcpconn.connection.count", []attribute.KeyValue{client}, 0},
		{"tcpconn.message.count", []attribute.KeyValue{client, transmit}, 3},
		{"tcpconn.io", []attribute.KeyValue{client, transmit}, float64(sent)},
		{"tcpconn.write_queue.size", []attribute.KeyValue{client}, 0},
	} {
		if v := got.value(t, c.name, c.attr...); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.attr, v, c.want)
		}
	}
	if n := got.points("tcpconn.link.io"); n != 0 {
		t.Errorf("tcpconn.link.io: %d points of a closed link", n)
	}
}

// fixed is a Source of known figures: two links, one measured.
func fixed() tcpconnotel.Source {
	return tcpconnotel.Source{
		Component: "fixed",
		Stats: func() tcpconn.Stats {
			return tcpconn.Stats{Links: 2, Connections: 5, MessagesIn: 10, MessagesOut: 20,
				BytesIn: 1000, BytesOut: 2000, Reconnects: 3, ProtocolErrors: 1}
		},
		Links: func() []tcpconn.LinkStats {
			return []tcpconn.LinkStats{
				{ID: "b", Client: false, LocalAddr: "10.0.0.1:80", RemoteAddr: "[2001:db8::2]:5000", Connections: 3,
					MessagesIn: 6, MessagesOut: 12, BytesIn: 600, BytesOut: 1200, BytesQueued: 100, Window: 2 << 20},
				{ID: "a", Client: true, LocalAddr: "10.0.0.1:4000", RemoteAddr: "10.0.0.3:80", Connections: 2,
					MessagesIn: 4, MessagesOut: 8, BytesIn: 400, BytesOut: 800, BytesQueued: 50, Window: 1 << 20,
					RTT: 1500 * time.Microsecond},
			}
		},
	}
}

func sum(monotonic bool, points ...metricdata.DataPoint[int64]) metricdata.Sum[int64] {
	return metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: monotonic, DataPoints: points}
}

func point(v int64, kv ...attribute.KeyValue) metricdata.DataPoint[int64] {
	return metricdata.DataPoint[int64]{Attributes: attribute.NewSet(kv...), Value: v}
}

// Everything collected from known figures, instrument by instrument and
// point by point: names, units, descriptions, kinds, attributes, and
// durations in seconds.
func TestRegisterExactData(t *testing.T) {
	reader, mp := newReader(t)
	role := attribute.String("deployment.role", "edge")
	if _, err := tcpconnotel.Register(mp.Meter(tcpconnotel.ScopeName),
		&tcpconnotel.Options{PerLink: true, Attributes: []attribute.KeyValue{role}}, fixed()); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	if len(rm.ScopeMetrics) != 1 {
		t.Fatalf("%d scopes, want 1", len(rm.ScopeMetrics))
	}

	c := tcpconnotel.ComponentKey.String("fixed")
	a := []attribute.KeyValue{c, role, tcpconnotel.LinkIDKey.String("a"), tcpconnotel.LinkSideKey.String("client"),
		attribute.String("network.peer.address", "10.0.0.3"), attribute.Int("network.peer.port", 80)}
	b := []attribute.KeyValue{c, role, tcpconnotel.LinkIDKey.String("b"), tcpconnotel.LinkSideKey.String("server"),
		attribute.String("network.peer.address", "2001:db8::2"), attribute.Int("network.peer.port", 5000)}
	with := func(kv []attribute.KeyValue, more ...attribute.KeyValue) []attribute.KeyValue {
		return append(kv[:len(kv):len(kv)], more...)
	}
	want := metricdata.ScopeMetrics{
		Scope: rm.ScopeMetrics[0].Scope,
		Metrics: []metricdata.Metrics{
			{Name: "tcpconn.link.count", Unit: "{link}", Description: "Physical links (sockets) open.",
				Data: sum(false, point(2, c, role))},
			{Name: "tcpconn.connection.count", Unit: "{connection}", Description: "Logical connections bound to an open link.",
				Data: sum(false, point(5, c, role))},
			{Name: "tcpconn.message.count", Unit: "{message}", Description: "Messages received and handed to the socket.",
				Data: sum(true, point(10, c, role, receive), point(20, c, role, transmit))},
			{Name: "tcpconn.io", Unit: "By", Description: "Payload bytes received and handed to the socket.",
				Data: sum(true, point(1000, c, role, receive), point(2000, c, role, transmit))},
			{Name: "tcpconn.reconnect.count", Unit: "{reconnect}", Description: "Client connections re-attached after their socket was lost.",
				Data: sum(true, point(3, c, role))},
			{Name: "tcpconn.protocol_error.count", Unit: "{error}", Description: "Links closed for a protocol violation.",
				Data: sum(true, point(1, c, role))},
			{Name: "tcpconn.write_queue.size", Unit: "By", Description: "Bytes waiting in the open links' write queues.",
				Data: sum(false, point(150, c, role))},
			{Name: "tcpconn.receive_window.size", Unit: "By", Description: "Receive windows of the open links, summed.",
				Data: sum(false, point(3<<20, c, role))},
			{Name: "tcpconn.link.connection.count", Unit: "{connection}", Description: "Logical connections bound to the link.",
				Data: sum(false, point(2, a...), point(3, b...))},
			{Name: "tcpconn.link.message.count", Unit: "{message}", Description: "Messages received on the link and handed to its socket.",
				Data: sum(true, point(4, with(a, receive)...), point(8, with(a, transmit)...),
					point(6, with(b, receive)...), point(12, with(b, transmit)...))},
			{Name: "tcpconn.link.io", Unit: "By", Description: "Payload bytes received on the link and handed to its socket.",
				Data: sum(true, point(400, with(a, receive)...), point(800, with(a, transmit)...),
					point(600, with(b, receive)...), point(1200, with(b, transmit)...))},
			{Name: "tcpconn.link.write_queue.size", Unit: "By", Description: "Bytes waiting in the link's write queue.",
				Data: sum(false, point(50, a...), point(100, b...))},
			{Name: "tcpconn.link.receive_window.size", Unit: "By", Description: "The link's receive window.",
				Data: sum(false, point(1<<20, a...), point(2<<20, b...))},
			{Name: "tcpconn.link.rtt", Unit: "s", Description: "Round-trip time measured by the link's last keepalive PING.",
				Data: metricdata.Gauge[float64]{DataPoints: []metricdata.DataPoint[float64]{
					{Attributes: attribute.NewSet(a...), Value: 0.0015}}}},
		},
	}
	metricdatatest.AssertEqual(t, want, rm.ScopeMetrics[0], metricdatatest.IgnoreTimestamp())
}

// Without PerLink there are no tcpconn.link.* instruments but the count;
// a Source without Links has no write queue or window either.
func TestRegisterLess(t *testing.T) {
	reader, mp := newReader(t)
	src := fixed()
	src.Links = nil
	if _, err := tcpconnotel.Register(mp.Meter(tcpconnotel.ScopeName), &tcpconnotel.Options{PerLink: true}, src); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, reader); len(got) != 6 {
		t.Errorf("without Links: %d instruments, want 6", len(got))
	}

	reader, mp = newReader(t)
	if _, err := tcpconnotel.Register(mp.Meter(tcpconnotel.ScopeName), nil, fixed()); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, reader); len(got) != len(componentInstruments) {
		t.Errorf("without PerLink: %d instruments, want %d", len(got), len(componentInstruments))
	}
}

// MaxLinks keeps the links with the smallest IDs; the component
// instruments still count them all.
func TestRegisterMaxLinks(t *testing.T) {
	src := tcpconnotel.Source{
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
	reader, mp := newReader(t)
	if _, err := tcpconnotel.Register(mp.Meter(tcpconnotel.ScopeName), &tcpconnotel.Options{PerLink: true, MaxLinks: 2}, src); err != nil {
		t.Fatal(err)
	}
	got := collect(t, reader)
	var ids []string
	for _, p := range got["tcpconn.link.write_queue.size"].Data.(metricdata.Sum[int64]).DataPoints {
		v, _ := p.Attributes.Value(tcpconnotel.LinkIDKey)
		ids = append(ids, v.AsString())
	}
	if len(ids) != 2 || !strings.Contains("ab ba", strings.Join(ids, "")) {
		t.Errorf("links observed: %v, want a and b", ids)
	}
	if v := got.value(t, "tcpconn.write_queue.size"); v != 5 {
		t.Errorf("tcpconn.write_queue.size = %v, want 5 (every link)", v)
	}
}

// Register refuses what cannot work, saying why.
func TestRegisterErrors(t *testing.T) {
	stats := func() tcpconn.Stats { return tcpconn.Stats{} }
	_, mp := newReader(t)
	meter := mp.Meter(tcpconnotel.ScopeName)
	for name, c := range map[string]struct {
		opts    *tcpconnotel.Options
		sources []tcpconnotel.Source
	}{
		"no source":    {nil, nil},
		"no component": {nil, []tcpconnotel.Source{{Stats: stats}}},
		"no stats":     {nil, []tcpconnotel.Source{{Component: "x"}}},
		"same component twice": {nil, []tcpconnotel.Source{
			{Component: "x", Stats: stats}, {Component: "x", Stats: stats}}},
		"reserved attribute": {&tcpconnotel.Options{Attributes: []attribute.KeyValue{tcpconnotel.ComponentKey.String("y")}},
			[]tcpconnotel.Source{{Component: "x", Stats: stats}}},
		"direction attribute": {&tcpconnotel.Options{Attributes: []attribute.KeyValue{transmit}},
			[]tcpconnotel.Source{{Component: "x", Stats: stats}}},
	} {
		if reg, err := tcpconnotel.Register(meter, c.opts, c.sources...); err == nil {
			reg.Unregister()
			t.Errorf("%s: registered", name)
		} else if !strings.HasPrefix(err.Error(), "tcpconnotel: ") {
			t.Errorf("%s: error %q", name, err)
		}
	}
}
