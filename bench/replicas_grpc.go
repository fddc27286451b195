package bench

import (
	"context"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
)

// gRPC in the Replicas workload, configured as its documentation has a
// fleet served: grpc.Servers behind a host name with an A record per
// replica, one grpc.ClientConn on dns:/// with the round_robin balancer,
// and one long-lived bidirectional stream per ID. gRPC's dns resolver
// takes only A (and AAAA) records and the target's one port, so each
// replica listens on its own loopback address (127.0.0.2, 127.0.0.3, ...)
// at one shared port; the target's authority names the DNS server
// (dns://127.0.0.1:PORT/host:port), so no global resolver setting is
// touched. Everything else is gRPC's default: the resolver looks the name
// up again only when a connection is lost, and at most once per 30 s
// (resolver/dns.SetMinResolutionInterval); DNS TTLs are not read.

// grpcReplicasHost is the host name whose A records are the gRPC replicas.
const grpcReplicasHost = "grpc-replicas.bench.test"

// grpcRoundRobin is the service config that picks round_robin.
const grpcRoundRobin = `{"loadBalancingConfig":[{"round_robin":{}}]}`

// grpcKind: a drain is GracefulStop (GOAWAY; the streams open go on) for
// at most MaxLinkAge, then Stop, which cuts the streams still open: the
// grace a tcpconn replica gives its links. A kill is Stop at once.
func grpcKind(cfg ReplicasConfig) *replicaKind {
	port := "0" // the replicas' one port, chosen by the first to listen
	next := 0   // the next new replica's number, for its address
	return &replicaKind{
		name: "grpc",
		addr: func() string {
			next++
			return net.JoinHostPort("127.0.0."+strconv.Itoa(1+next), port)
		},
		serve: func(addr string, messages *atomic.Int64) (replicaServer, error) {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return nil, err
			}
			_, port, _ = net.SplitHostPort(ln.Addr().String())
			srv := newGRPCConnServer(func(c Conn) { echo(countedConn{c, messages}) })
			go srv.Serve(ln) // returns at Stop
			return &grpcReplica{srv: srv, address: ln.Addr().String(), grace: cfg.MaxLinkAge}, nil
		},
		publish: func(dns *srvServer, addrs []string) { dns.publishHost(grpcReplicasHost, addrs) },
		lookups: func(dns *srvServer) int { return dns.queries(grpcReplicasHost, mdns.TypeA) },
		dial: func(dns *srvServer) (replicaClient, error) {
			cc, err := grpc.NewClient("dns://"+dns.addr+"/"+net.JoinHostPort(grpcReplicasHost, port),
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultServiceConfig(grpcRoundRobin),
				grpc.WithDefaultCallOptions(grpc.ForceCodecV2(bytesCodec{})),
			)
			if err != nil {
				return nil, err
			}
			return grpcReplicaClient{cc}, nil
		},
	}
}

type grpcReplica struct {
	srv     *grpc.Server
	address string
	grace   time.Duration
}

func (r *grpcReplica) addr() string { return r.address }

// drain never fails: streams that outlive the grace are cut, and the
// round trips they lose are the measure.
func (r *grpcReplica) drain() error {
	stopped := make(chan struct{})
	go func() {
		r.srv.GracefulStop()
		close(stopped)
	}()
	grace := time.NewTimer(r.grace)
	defer grace.Stop()
	select {
	case <-stopped:
	case <-grace.C:
		r.srv.Stop()
		<-stopped
	}
	return nil
}

func (r *grpcReplica) kill() { r.srv.Stop() }

type grpcReplicaClient struct{ cc *grpc.ClientConn }

func (c grpcReplicaClient) open(int) replicaConn { return &grpcReplicaConn{cc: c.cc} }

func (c grpcReplicaClient) close() { c.cc.Close() }

// grpcReplicaConn is one ID's stream. A stream that fails is dropped and
// the next round trip opens another, which round_robin places on the next
// ready replica: gRPC moves a stream only by breaking it.
type grpcReplicaConn struct {
	cc     *grpc.ClientConn
	stream grpc.ClientStream // nil before the first round trip and after a failure
	cancel context.CancelFunc
	buf    []byte
	peer   atomic.Pointer[string] // the replica of the last stream opened
}

func (c *grpcReplicaConn) roundTrip(msg []byte, timeout time.Duration) error {
	if c.stream == nil {
		ctx, cancel := context.WithCancel(context.Background())
		expired := time.AfterFunc(timeout, cancel)
		stream, err := c.cc.NewStream(ctx, &grpcConnDesc, grpcConnMethod)
		expired.Stop()
		if err != nil {
			cancel()
			return err
		}
		c.stream, c.cancel = stream, cancel
		if p, ok := peer.FromContext(stream.Context()); ok {
			addr := p.Addr.String()
			c.peer.Store(&addr)
		}
	}
	expired := time.AfterFunc(timeout, c.cancel) // the stream's context is the round trip's bound too
	err := c.stream.SendMsg(msg)
	if err == nil {
		err = c.stream.RecvMsg(&c.buf)
	}
	expired.Stop()
	if err != nil {
		c.close()
	}
	return err
}

func (c *grpcReplicaConn) replica() string {
	if p := c.peer.Load(); p != nil {
		return *p
	}
	return ""
}

func (c *grpcReplicaConn) close() {
	if c.stream != nil {
		c.stream.CloseSend()
		c.cancel()
		c.stream = nil
	}
}
