// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// A fleet of echo replicas on loopback behind a real DNS server, and a
// Client that follows them through an SRV target.
type testFleet struct {
	t      testing.TB
	dns    *dnsServer
	name   string // the SRV name
	target string // "srv:///" + name
	srvCfg *Config

	mu       sync.Mutex
	replicas map[string]*replica // by address
	events   []LinkEvent
}

type replica struct {
	ln   *Listener
	stop func()
}

func newTestFleet(t testing.TB, n int, srvCfg *Config) *testFleet {
	t.Helper()
	f := &testFleet{t: t, dns: newDNSServer(t), name: "_tc._tcp.fleet.test", srvCfg: srvCfg, replicas: map[string]*replica{}}
	f.target = "srv:///" + f.name
	for range n {
		f.start("127.0.0.1:0")
	}
	f.publish()
	return f
}

// start runs an echo replica on addr and returns its address; publish
// puts it in DNS.
func (f *testFleet) start(addr string) string {
	f.t.Helper()
	ln, err := Listen("tcp", addr, f.srvCfg)
	if err != nil {
		f.t.Fatal(err)
	}
	r := &replica{ln: ln, stop: serveListener(f.t, ln, echoLoop)}
	f.mu.Lock()
	f.replicas[ln.Addr().String()] = r
	f.mu.Unlock()
	return ln.Addr().String()
}

// kill closes a replica's listener and sockets at once (no drain) and
// waits for its handlers; its address stays in DNS.
func (f *testFleet) kill(addr string) {
	f.mu.Lock()
	r := f.replicas[addr]
	delete(f.replicas, addr)
	f.mu.Unlock()
	r.stop()
}

// shutdown drains a replica (Listener.Shutdown) and reports its error.
func (f *testFleet) shutdown(addr string) error {
	f.mu.Lock()
	r := f.replicas[addr]
	delete(f.replicas, addr)
	f.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	err := r.ln.Shutdown(ctx)
	r.stop()
	return err
}

// publish puts the running replicas (and extra addresses) in DNS.
func (f *testFleet) publish(extra ...string) {
	f.dns.setSRV(f.name, append(f.addrs(), extra...)...)
}

func (f *testFleet) addrs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for a := range f.replicas {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// client returns a Client that resolves through the fleet's DNS server,
// looks the target up every 50 ms and records its events.
func (f *testFleet) client(cfg Config) *Client {
	f.t.Helper()
	cfg.Resolver = DNSResolver{Resolver: f.dns.resolver()}
	setDefault(&cfg.ResolveInterval, 50*time.Millisecond)
	setDefault(&cfg.ReconnectBackoffMax, 100*time.Millisecond)
	cfg.OnLinkEvent = func(ev LinkEvent) {
		f.mu.Lock()
		f.events = append(f.events, ev)
		f.mu.Unlock()
	}
	cl, err := NewClient(&cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { cl.Close() })
	return cl
}

// sawEvent reports whether an event of kind about endpoint (any, if
// empty) was recorded.
func (f *testFleet) sawEvent(kind LinkEventKind, endpoint string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.ContainsFunc(f.events, func(ev LinkEvent) bool {
		return ev.Kind == kind && (endpoint == "" || ev.Endpoint == endpoint)
	})
}

// openIDs opens n named Connections on cl and makes one round trip on
// each, so each is bound.
func openIDs(t testing.TB, cl *Client, target string, n int) []*Connection {
	t.Helper()
	conns := make([]*Connection, n)
	for i := range conns {
		conns[i] = closeAtCleanup(t, cl.Open(target, WithID(fmt.Sprint("id-", i))))
		mustRoundTrip(t, conns[i], []byte("hello"))
	}
	return conns
}

// placements maps each Connection's ID to the replica it is bound to.
func placements(conns []*Connection) map[string]string {
	out := make(map[string]string, len(conns))
	for _, c := range conns {
		if a := c.RemoteAddr(); a != nil {
			out[c.ID()] = a.String()
		}
	}
	return out
}

// home is where rendezvous places id among addrs.
func home(id string, addrs []string) string {
	return addrs[rendezvous(id, addrs, func(int) bool { return true })]
}
