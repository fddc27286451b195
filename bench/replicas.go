package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	tcpconn "github.com/pulsyflux/tcp-conn"
)

// The Replicas workload: one client, many logical connections doing round
// trips over replicas behind one name served by a DNS server on loopback,
// while the fleet scales up, drains some replicas (GOAWAY) and loses one
// (killed, then back at the same address). It runs on tcpconn (a Client
// on an SRV name) and, for comparison, on gRPC (replicas_grpc.go).

// ReplicasConfig describes one run.
type ReplicasConfig struct {
	Replicas        int           // replicas at the start
	Added           int           // replicas the scale-up adds
	Drained         int           // replicas shut down (and removed from DNS) by the drain
	IDs             int           // logical connections of the Client, one ID each
	Rate            int           // round trips per second, all IDs together
	ResolveInterval time.Duration // the Client's
	MaxLinkAge      time.Duration // the replicas' (grace: the same)
	Steady          time.Duration // the steady-state window the spread is measured over
}

// DefaultReplicasConfig: 20 replicas growing to 25, 5 drained, 2,000 IDs
// doing 4,000 round trips per second.
func DefaultReplicasConfig() ReplicasConfig {
	return ReplicasConfig{Replicas: 20, Added: 5, Drained: 5, IDs: 2000, Rate: 4000,
		ResolveInterval: 500 * time.Millisecond, MaxLinkAge: 2 * time.Second, Steady: 2 * time.Second}
}

// ReplicasResult is what one run measured.
type ReplicasResult struct {
	Config ReplicasConfig
	Kind   string // "tcpconn" or "grpc"
	// Steady state: busiest replica over the mean, in IDs and in messages,
	// and the round trips' p99.
	SpreadIDs, SpreadMessages float64
	SteadyP99                 time.Duration
	// Scale-up: how long until the added replicas held at least 0.8x
	// their mean share of IDs together (0: not within the limit), and the
	// smallest share of one of them then (rendezvous hashing gives some
	// replicas fewer IDs than others, wherever they are placed).
	ScaleUp      time.Duration
	ScaleUpShare float64
	ScaleUpLimit time.Duration // how long the scale-up was watched
	// Drain: round trips that failed while the drained replicas shut down
	// (and the IDs they failed on), their p99, and the slowest drain.
	DrainErrors    int
	DrainFailedIDs int
	DrainP99       time.Duration
	DrainShutdown  time.Duration
	// Kill: round trips that failed when one replica was killed (and the
	// IDs they failed on), and the longest time from an ID's failure to
	// its next answered round trip.
	KillFailed    int
	KillFailedIDs int
	KillRecovery  time.Duration
	// Settle: how long the placement took to come to rest after the
	// drain (no ID moved for MaxLinkAge + 10 %) before the kill.
	// Returned: the share of IDs on the replica they were on before the
	// kill, once the killed replica is back and links have aged.
	Settle   time.Duration
	Returned float64
	// Lookups is how many times the client asked DNS for the fleet over
	// the run (a UDP answer truncated and asked again over TCP counts
	// twice).
	Lookups int
	Elapsed time.Duration // the whole run
}

// replicaKind is a system the workload runs on: its replicas, how DNS names
// them and how its client reaches them.
type replicaKind struct {
	name string
	// addr is where the next new replica listens.
	addr func() string
	// serve starts a replica at addr that counts the messages it receives.
	serve func(addr string, messages *atomic.Int64) (replicaServer, error)
	// publish puts addrs, the running replicas, in DNS.
	publish func(dns *srvServer, addrs []string)
	// dial makes the client, which finds the replicas through dns.
	dial func(dns *srvServer) (replicaClient, error)
	// lookups is how many times the client has looked the fleet up in
	// dns (a query over UDP truncated and asked again over TCP counts
	// twice).
	lookups func(dns *srvServer) int
}

// replicaServer is one running replica.
type replicaServer interface {
	addr() string
	// drain is the planned stop: new logical connections are refused and
	// those open are let finish (GOAWAY), within a bound of the kind's.
	drain() error
	// kill stops the replica at once: listener and connections closed.
	kill()
}

// replicaClient opens one logical connection per ID.
type replicaClient interface {
	open(id int) replicaConn
	close()
}

// replicaConn is one ID's logical connection, used by one goroutine.
type replicaConn interface {
	roundTrip(msg []byte, timeout time.Duration) error
	// replica is the address of the replica the connection is on, "" until
	// it is placed; safe to call from any goroutine.
	replica() string
	close()
}

// replicaSet is the running replicas, by address.
type replicaSet struct {
	kind *replicaKind
	mu   sync.Mutex
	m    map[string]*benchReplica
}

type benchReplica struct {
	srv      replicaServer
	messages atomic.Int64
}

func (rs *replicaSet) start(addr string) (string, error) {
	r := &benchReplica{}
	srv, err := rs.kind.serve(addr, &r.messages)
	if err != nil {
		return "", err
	}
	r.srv = srv
	rs.mu.Lock()
	rs.m[srv.addr()] = r
	rs.mu.Unlock()
	return srv.addr(), nil
}

// countedConn counts the messages a replica receives.
type countedConn struct {
	Conn
	n *atomic.Int64
}

func (c countedConn) Receive() ([]byte, error) {
	m, err := c.Conn.Receive()
	if err == nil {
		c.n.Add(1)
	}
	return m, err
}

func (rs *replicaSet) take(addr string) *benchReplica {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.m[addr]
	delete(rs.m, addr)
	return r
}

func (rs *replicaSet) addrs() []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var out []string
	for a := range rs.m {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

func (rs *replicaSet) messages() map[string]int64 {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := map[string]int64{}
	for a, r := range rs.m {
		out[a] = r.messages.Load()
	}
	return out
}

// tcpconnKind: Listeners with MaxLinkAge (grace the same) on loopback
// ports, behind an SRV name; one Client on srv:/// looking it up every
// ResolveInterval.
func tcpconnKind(cfg ReplicasConfig) *replicaKind {
	lcfg := &tcpconn.Config{MaxLinkAge: cfg.MaxLinkAge, MaxLinkAgeGrace: cfg.MaxLinkAge}
	return &replicaKind{
		name: "tcpconn",
		addr: func() string { return "127.0.0.1:0" },
		serve: func(addr string, messages *atomic.Int64) (replicaServer, error) {
			ln, err := tcpconn.Listen("tcp", addr, lcfg)
			if err != nil {
				return nil, err
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						echo(countedConn{c, messages}) // ends when the client moves the ID or leaves
					}()
				}
			}()
			return tcpconnReplica{ln}, nil
		},
		publish: (*srvServer).publish,
		lookups: func(dns *srvServer) int { return dns.queries(replicasSRVName, mdns.TypeSRV) },
		dial: func(dns *srvServer) (replicaClient, error) {
			client, err := tcpconn.NewClient(&tcpconn.Config{
				Resolver:        tcpconn.DNSResolver{Resolver: dns.resolver()},
				ResolveInterval: cfg.ResolveInterval,
			})
			if err != nil {
				return nil, err
			}
			return tcpconnReplicaClient{client}, nil
		},
	}
}

type tcpconnReplica struct{ ln *tcpconn.Listener }

func (r tcpconnReplica) addr() string { return r.ln.Addr().String() }

// drain is Listener.Shutdown, which returns once every logical connection
// has moved; 10 s bounds it, and reaching that is an error.
func (r tcpconnReplica) drain() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return r.ln.Shutdown(ctx)
}

func (r tcpconnReplica) kill() { r.ln.Close() }

type tcpconnReplicaClient struct{ client *tcpconn.Client }

func (c tcpconnReplicaClient) open(id int) replicaConn {
	return tcpconnReplicaConn{c.client.Open("srv:///"+replicasSRVName, tcpconn.WithID(fmt.Sprint("id-", id)))}
}

func (c tcpconnReplicaClient) close() { c.client.Close() }

type tcpconnReplicaConn struct{ c *tcpconn.Connection }

func (c tcpconnReplicaConn) roundTrip(msg []byte, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.c.SendContext(ctx, msg); err != nil {
		return err
	}
	_, err := c.c.ReceiveContext(ctx)
	return err
}

func (c tcpconnReplicaConn) replica() string {
	if a := c.c.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

func (c tcpconnReplicaConn) close() { c.c.Close() }

// window collects the round trips of one phase.
type window struct {
	mu        sync.Mutex
	lat       []time.Duration
	errs      int
	failedIDs map[int]bool
}

func (w *window) add(id int, d time.Duration, err error) {
	w.mu.Lock()
	if err != nil {
		w.errs++
		if w.failedIDs == nil {
			w.failedIDs = map[int]bool{}
		}
		w.failedIDs[id] = true
	} else {
		w.lat = append(w.lat, d)
	}
	w.mu.Unlock()
}

// failed is the round trips that failed, and the IDs they failed on.
func (w *window) failed() (roundTrips, ids int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.errs, len(w.failedIDs)
}

func (w *window) p99() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.lat) == 0 {
		return 0
	}
	slices.Sort(w.lat)
	return w.lat[len(w.lat)*99/100]
}

// replicasSRVName is the SRV name of tcpconn's replicas.
const replicasSRVName = "_replicas._tcp.bench.test"

// MeasureReplicas runs the Replicas workload once on tcpconn.
func MeasureReplicas(cfg ReplicasConfig) (ReplicasResult, error) {
	return measureReplicas(cfg, tcpconnKind(cfg))
}

// MeasureReplicasGRPC runs the Replicas workload once on gRPC (see
// grpcKind).
func MeasureReplicasGRPC(cfg ReplicasConfig) (ReplicasResult, error) {
	return measureReplicas(cfg, grpcKind(cfg))
}

func measureReplicas(cfg ReplicasConfig, kind *replicaKind) (res ReplicasResult, err error) {
	res.Config = cfg
	res.Kind = kind.name
	began := time.Now()
	defer func() { res.Elapsed = time.Since(began) }()
	dnsSrv, err := startSRVServer(replicasSRVName)
	if err != nil {
		return res, err
	}
	defer dnsSrv.close()
	defer func() { res.Lookups = kind.lookups(dnsSrv) }()
	rs := &replicaSet{kind: kind, m: map[string]*benchReplica{}}
	defer func() {
		for _, a := range rs.addrs() {
			rs.take(a).srv.kill()
		}
	}()
	for range cfg.Replicas {
		if _, err := rs.start(kind.addr()); err != nil {
			return res, err
		}
	}
	kind.publish(dnsSrv, rs.addrs())
	client, err := kind.dial(dnsSrv)
	if err != nil {
		return res, err
	}
	defer client.close()

	// The IDs, each doing round trips at its share of the rate.
	var cur atomic.Pointer[window]
	cur.Store(new(window))
	var recovery atomic.Int64 // the longest failure-to-answer, ns
	conns := make([]replicaConn, cfg.IDs)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	period := time.Duration(int64(time.Second) * int64(cfg.IDs) / int64(cfg.Rate))
	for i := range conns {
		conns[i] = client.open(i)
		wg.Go(func() { roundTripLoop(i, conns[i], period, stop, &cur, &recovery) })
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	placed := func() map[int]string {
		out := map[int]string{}
		for i, c := range conns {
			if a := c.replica(); a != "" {
				out[i] = a
			}
		}
		return out
	}
	if !waitUntil(10*time.Second, func() bool { return len(placed()) == cfg.IDs }) {
		failed, _ := cur.Load().failed()
		return res, fmt.Errorf("%d of %d IDs connected within 10 s (%d round trips failed)", len(placed()), cfg.IDs, failed)
	}

	// Steady state.
	steady := new(window)
	cur.Store(steady)
	before := rs.messages()
	time.Sleep(cfg.Steady)
	res.SteadyP99 = steady.p99()
	after := rs.messages()
	res.SpreadIDs = busiestOverMean(countBy(placed()), rs.addrs())
	msgs := map[string]int64{}
	for a, n := range after {
		msgs[a] = n - before[a]
	}
	res.SpreadMessages = busiestOverMean(msgs, rs.addrs())

	// Scale-up.
	var added []string
	for range cfg.Added {
		a, err := rs.start(kind.addr())
		if err != nil {
			return res, err
		}
		added = append(added, a)
	}
	kind.publish(dnsSrv, rs.addrs())
	start := time.Now()
	res.ScaleUpLimit = cfg.ResolveInterval + 2*cfg.MaxLinkAge + 2*time.Second
	// shares: the added replicas' IDs together, and the smallest one's,
	// over their mean share.
	shares := func() (together, smallest float64) {
		counts := countBy(placed())
		mean := float64(cfg.IDs) / float64(len(rs.addrs()))
		smallest = float64(cfg.IDs)
		var sum int64
		for _, a := range added {
			sum += counts[a]
			smallest = min(smallest, float64(counts[a])/mean)
		}
		return float64(sum) / (mean * float64(len(added))), smallest
	}
	if waitUntil(res.ScaleUpLimit, func() bool { together, _ := shares(); return together >= 0.8 }) {
		res.ScaleUp = time.Since(start)
	}
	_, res.ScaleUpShare = shares()

	// Planned drain of the first replicas: out of DNS, then drained.
	drain := new(window)
	cur.Store(drain)
	var drained []*benchReplica
	for _, a := range rs.addrs()[:cfg.Drained] {
		drained = append(drained, rs.take(a))
	}
	kind.publish(dnsSrv, rs.addrs())
	var slowest atomic.Int64
	var swg sync.WaitGroup
	var drainErr error
	var errMu sync.Mutex
	for _, r := range drained {
		swg.Go(func() {
			t0 := time.Now()
			if err := r.srv.drain(); err != nil {
				errMu.Lock()
				drainErr = errors.Join(drainErr, err)
				errMu.Unlock()
			}
			d := int64(time.Since(t0))
			for old := slowest.Load(); d > old && !slowest.CompareAndSwap(old, d); old = slowest.Load() {
			}
		})
	}
	swg.Wait()
	time.Sleep(2 * period) // round trips that started during the drain end
	res.DrainShutdown = time.Duration(slowest.Load())
	res.DrainP99 = drain.p99()
	res.DrainErrors, res.DrainFailedIDs = drain.failed()
	if drainErr != nil {
		return res, fmt.Errorf("drain: %w", drainErr)
	}

	// One replica killed (still in DNS), then back at the same address,
	// once the placement is at rest: IDs that the load bound kept off
	// their first choice while 25 replicas ran go back to it as their
	// links age, and that settling is not the kill's doing.
	t0 := time.Now()
	prev := settled(placed, cfg.MaxLinkAge+cfg.MaxLinkAge/10, 3*cfg.MaxLinkAge)
	res.Settle = time.Since(t0)
	kill := new(window)
	cur.Store(kill)
	recovery.Store(0)
	victim := rs.addrs()[0]
	rs.take(victim).srv.kill()
	time.Sleep(time.Second)
	res.KillFailed, res.KillFailedIDs = kill.failed()
	res.KillRecovery = time.Duration(recovery.Load())
	cur.Store(new(window))
	if _, err := rs.start(victim); err != nil {
		return res, fmt.Errorf("the killed replica back at %s: %w", victim, err)
	}
	returned := func() float64 {
		same := 0
		for id, a := range placed() {
			if prev[id] == a {
				same++
			}
		}
		return float64(same) / float64(cfg.IDs)
	}
	// tcpconn's replica takes IDs again once its ejection ends (the
	// reconnect backoff: up to 1.5x its maximum), and every link ages
	// within MaxLinkAge (+10 %) and its grace: by then each ID has been
	// placed again over the set it had before the kill. gRPC's side is
	// watched as long.
	limit := 3*tcpconn.DefaultReconnectBackoffMax/2 + 2*cfg.MaxLinkAge + time.Second
	waitUntil(limit, func() bool { return returned() == 1 })
	res.Returned = returned()
	return res, nil
}

// roundTripLoop does c's round trips every period (from a random offset)
// until stop, recording each in the current window as ID id's, and the
// longest recovery from a failure.
func roundTripLoop(id int, c replicaConn, period time.Duration, stop <-chan struct{}, cur *atomic.Pointer[window], recovery *atomic.Int64) {
	defer c.close()
	t := time.NewTimer(rand.N(period))
	defer t.Stop()
	msg := []byte("replicas")
	var failedAt time.Time
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		t.Reset(period)
		t0 := time.Now()
		err := c.roundTrip(msg, 2*time.Second)
		cur.Load().add(id, time.Since(t0), err)
		switch {
		case err != nil:
			if failedAt.IsZero() {
				failedAt = t0
			}
			t.Reset(time.Millisecond) // again at once: how soon does the ID answer?
		case err == nil && !failedAt.IsZero():
			d := int64(time.Since(failedAt))
			for old := recovery.Load(); d > old && !recovery.CompareAndSwap(old, d); old = recovery.Load() {
			}
			failedAt = time.Time{}
		}
	}
}

func countBy(placed map[int]string) map[string]int64 {
	out := map[string]int64{}
	for _, a := range placed {
		out[a]++
	}
	return out
}

// busiestOverMean is the largest count over the mean among addrs.
func busiestOverMean(counts map[string]int64, addrs []string) float64 {
	var total, hi int64
	for _, a := range addrs {
		total += counts[a]
		hi = max(hi, counts[a])
	}
	if total == 0 {
		return 0
	}
	return float64(hi) / (float64(total) / float64(len(addrs)))
}

// waitUntil polls cond every 20 ms for at most d.
// settled returns placed's answer once it has not changed for quiet, or
// when limit has passed.
func settled[K comparable](placed func() map[K]string, quiet, limit time.Duration) map[K]string {
	last, since := placed(), time.Now()
	for end := time.Now().Add(limit); time.Now().Before(end) && time.Since(since) < quiet; time.Sleep(50 * time.Millisecond) {
		if now := placed(); !maps.Equal(now, last) {
			last, since = now, time.Now()
		}
	}
	return last
}

func waitUntil(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
