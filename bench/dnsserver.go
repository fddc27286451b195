package bench

import (
	"context"
	"net"
	"strconv"
	"sync"

	"github.com/miekg/dns"
)

// srvServer is a DNS server on loopback answering one SRV name with a
// record per replica, and each record's target with its A record (and,
// through publishHost, a host name with an A record per replica). The
// Replicas workload changes the set while clients follow it. Like a real
// server it answers on UDP and TCP at one port, and truncates a UDP answer
// larger than the client takes (25 SRV records are), so the client asks
// again over TCP.
type srvServer struct {
	addr    string
	servers []*dns.Server
	done    sync.WaitGroup

	mu      sync.Mutex
	name    string               // FQDN of the SRV records
	targets map[string][]string  // target FQDN -> "ip", and name -> "target:port" per record
	asked   map[dns.Question]int // queries received, by question
}

func startSRVServer(name string) (*srvServer, error) {
	pc, ln, err := listenUDPAndTCP()
	if err != nil {
		return nil, err
	}
	s := &srvServer{addr: pc.LocalAddr().String(), name: dns.Fqdn(name), targets: map[string][]string{}, asked: map[dns.Question]int{}}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: s}, {Listener: ln, Handler: s}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		s.servers = append(s.servers, srv)
		s.done.Go(func() { srv.ActivateAndServe() })
		<-started
	}
	return s, nil
}

// listenUDPAndTCP listens on one loopback port for both.
func listenUDPAndTCP() (net.PacketConn, net.Listener, error) {
	var err error
	for range 10 {
		pc, perr := net.ListenPacket("udp", "127.0.0.1:0")
		if perr != nil {
			return nil, nil, perr
		}
		ln, lerr := net.Listen("tcp", pc.LocalAddr().String())
		if lerr == nil {
			return pc, ln, nil
		}
		pc.Close()
		err = lerr
	}
	return nil, nil, err
}

func (s *srvServer) close() {
	for _, srv := range s.servers {
		srv.Shutdown()
	}
	s.done.Wait()
}

// publish replaces the SRV records with one per address ("ip:port").
func (s *srvServer) publish(addrs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var recs []string
	for i, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		target := "r" + strconv.Itoa(i) + "-" + port + "." + s.name
		s.targets[target] = []string{host}
		recs = append(recs, net.JoinHostPort(target, port))
	}
	s.targets[s.name] = recs
}

// publishHost replaces host's A records with one per address's IP
// ("ip:port"): how a client that takes A records and a port of its own
// (gRPC's dns:/// resolver) finds the replicas, which then share one port.
func (s *srvServer) publishHost(host string, addrs []string) {
	ips := make([]string, 0, len(addrs))
	for _, a := range addrs {
		ip, _, _ := net.SplitHostPort(a)
		ips = append(ips, ip)
	}
	s.mu.Lock()
	s.targets[dns.Fqdn(host)] = ips
	s.mu.Unlock()
}

func (s *srvServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Compress = true
	q := req.Question[0]
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 1}
	s.mu.Lock()
	vals, ok := s.targets[q.Name]
	s.asked[q]++
	s.mu.Unlock()
	switch {
	case !ok:
		m.Rcode = dns.RcodeNameError
	case q.Name == s.name && q.Qtype == dns.TypeSRV:
		hdr.Rrtype = dns.TypeSRV
		for _, v := range vals {
			target, port, _ := net.SplitHostPort(v)
			p, _ := strconv.Atoi(port)
			m.Answer = append(m.Answer, &dns.SRV{Hdr: hdr, Priority: 10, Weight: 10, Port: uint16(p), Target: target})
		}
	case q.Name != s.name && q.Qtype == dns.TypeA:
		hdr.Rrtype = dns.TypeA
		for _, v := range vals {
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.ParseIP(v)})
		}
	}
	if w.LocalAddr().Network() == "udp" {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size) // sets TC if it does not fit: the client asks over TCP
	}
	w.WriteMsg(m)
}

// queries is how many times name was asked for records of type qtype
// (dns.TypeSRV, dns.TypeA, ...), over UDP and TCP together: how often a
// client looked the fleet up.
func (s *srvServer) queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked[dns.Question{Name: dns.Fqdn(name), Qtype: qtype, Qclass: dns.ClassINET}]
}

// resolver is a net.Resolver that asks only s.
func (s *srvServer) resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, s.addr)
		},
	}
}
