// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// dnsServer is a real DNS server on loopback (UDP) whose A and SRV records
// a test changes while it runs; resolver returns a net.Resolver that asks
// only it. A name it does not know answers NXDOMAIN; fail makes every
// answer SERVFAIL.
type dnsServer struct {
	addr    string
	queries atomic.Int64
	fail    atomic.Bool

	mu  sync.Mutex
	a   map[string][]string // FQDN -> IPv4 addresses
	srv map[string][]string // FQDN -> "target:port"
}

func newDNSServer(t testing.TB) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dnsServer{addr: pc.LocalAddr().String(), a: map[string][]string{}, srv: map[string][]string{}}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: d, NotifyStartedFunc: func() { close(started) }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		srv.Shutdown()
		<-done
	})
	return d
}

// setA replaces name's A records with the hosts of addrs ("ip:port").
func (d *dnsServer) setA(name string, addrs ...string) {
	var ips []string
	for _, a := range addrs {
		host, _, _ := net.SplitHostPort(a)
		ips = append(ips, host)
	}
	d.mu.Lock()
	d.a[dns.Fqdn(name)] = ips
	d.mu.Unlock()
}

// setSRV replaces name's SRV records with one per address ("ip:port"),
// whose targets are names with an A record each.
func (d *dnsServer) setSRV(name string, addrs ...string) {
	var recs []string
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		target := "r" + strconv.Itoa(i) + "-" + port + "." + dns.Fqdn(name)
		d.a[target] = []string{host}
		recs = append(recs, target+":"+port)
	}
	d.srv[dns.Fqdn(name)] = recs
}

func (d *dnsServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	d.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if d.fail.Load() {
		m.Rcode = dns.RcodeServerFailure
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 1}
	d.mu.Lock()
	ips, hasA := d.a[q.Name]
	srvs, hasSRV := d.srv[q.Name]
	d.mu.Unlock()
	switch {
	case q.Qtype == dns.TypeA && hasA:
		hdr.Rrtype = dns.TypeA
		for _, ip := range ips {
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.ParseIP(ip)})
		}
	case q.Qtype == dns.TypeSRV && hasSRV:
		hdr.Rrtype = dns.TypeSRV
		for _, s := range srvs {
			target, port, _ := net.SplitHostPort(s)
			p, _ := strconv.Atoi(port)
			m.Answer = append(m.Answer, &dns.SRV{Hdr: hdr, Priority: 10, Weight: 10, Port: uint16(p), Target: target})
		}
	case !hasA && !hasSRV:
		m.Rcode = dns.RcodeNameError
	}
	w.WriteMsg(m)
}

// resolver returns a net.Resolver that sends every query to d.
func (d *dnsServer) resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, "udp", d.addr)
		},
	}
}
