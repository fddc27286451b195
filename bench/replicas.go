package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	tcpconn "github.com/pulsyflux/tcp-conn"
)

// The Replicas workload: one Client, many logical connections doing round
// trips over replicas behind one SRV name served by a DNS server on
// loopback, while the fleet scales up, drains some replicas (Shutdown)
// and loses one (killed, then back at the same address).

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
	// Drain: round trips that failed while the drained replicas shut down,
	// their p99, and the slowest Shutdown.
	DrainErrors   int
	DrainP99      time.Duration
	DrainShutdown time.Duration
	// Kill: round trips that failed when one replica was killed, and the
	// longest time from an ID's failure to its next answered round trip.
	KillFailed   int
	KillRecovery time.Duration
	// Returned: the share of IDs on the replica they were on before the
	// kill, once the killed replica is back and links have aged.
	Returned float64
	Elapsed  time.Duration // the whole run
}

// replicaSet is the running replicas, by address.
type replicaSet struct {
	cfg *tcpconn.Config
	mu  sync.Mutex
	m   map[string]*benchReplica
}

type benchReplica struct {
	ln       *tcpconn.Listener
	messages atomic.Int64
}

func (rs *replicaSet) start(addr string) (string, error) {
	ln, err := tcpconn.Listen("tcp", addr, rs.cfg)
	if err != nil {
		return "", err
	}
	r := &benchReplica{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				echo(countedConn{c, &r.messages}) // ends when the client moves the ID or leaves
			}()
		}
	}()
	rs.mu.Lock()
	rs.m[ln.Addr().String()] = r
	rs.mu.Unlock()
	return ln.Addr().String(), nil
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

// window collects the round trips of one phase.
type window struct {
	mu   sync.Mutex
	lat  []time.Duration
	errs int
}

func (w *window) add(d time.Duration, err error) {
	w.mu.Lock()
	if err != nil {
		w.errs++
	} else {
		w.lat = append(w.lat, d)
	}
	w.mu.Unlock()
}

func (w *window) failed() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.errs
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

// MeasureReplicas runs the Replicas workload once.
func MeasureReplicas(cfg ReplicasConfig) (res ReplicasResult, err error) {
	res.Config = cfg
	began := time.Now()
	defer func() { res.Elapsed = time.Since(began) }()
	dnsSrv, err := startSRVServer("_replicas._tcp.bench.test")
	if err != nil {
		return res, err
	}
	defer dnsSrv.close()
	rs := &replicaSet{cfg: &tcpconn.Config{MaxLinkAge: cfg.MaxLinkAge, MaxLinkAgeGrace: cfg.MaxLinkAge}, m: map[string]*benchReplica{}}
	defer func() {
		for _, a := range rs.addrs() {
			rs.take(a).ln.Close()
		}
	}()
	for range cfg.Replicas {
		if _, err := rs.start("127.0.0.1:0"); err != nil {
			return res, err
		}
	}
	dnsSrv.publish(rs.addrs())
	client, err := tcpconn.NewClient(&tcpconn.Config{
		Resolver:        tcpconn.DNSResolver{Resolver: dnsSrv.resolver()},
		ResolveInterval: cfg.ResolveInterval,
	})
	if err != nil {
		return res, err
	}
	defer client.Close()
	target := "srv:///_replicas._tcp.bench.test"

	// The IDs, each doing round trips at its share of the rate.
	var cur atomic.Pointer[window]
	cur.Store(new(window))
	var recovery atomic.Int64 // the longest failure-to-answer, ns
	conns := make([]*tcpconn.Connection, cfg.IDs)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	period := time.Duration(int64(time.Second) * int64(cfg.IDs) / int64(cfg.Rate))
	for i := range conns {
		conns[i] = client.Open(target, tcpconn.WithID(fmt.Sprint("id-", i)))
		wg.Go(func() { roundTripLoop(conns[i], period, stop, &cur, &recovery) })
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	placed := func() map[string]string {
		out := map[string]string{}
		for _, c := range conns {
			if a := c.RemoteAddr(); a != nil {
				out[c.ID()] = a.String()
			}
		}
		return out
	}
	if !waitUntil(10*time.Second, func() bool { return len(placed()) == cfg.IDs }) {
		return res, fmt.Errorf("%d of %d IDs connected within 10 s (%d round trips failed; %d links)", len(placed()), cfg.IDs, cur.Load().failed(), client.Stats().Links)
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
		a, err := rs.start("127.0.0.1:0")
		if err != nil {
			return res, err
		}
		added = append(added, a)
	}
	dnsSrv.publish(rs.addrs())
	start := time.Now()
	limit := cfg.ResolveInterval + 2*cfg.MaxLinkAge + 2*time.Second
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
	if waitUntil(limit, func() bool { together, _ := shares(); return together >= 0.8 }) {
		res.ScaleUp = time.Since(start)
	}
	_, res.ScaleUpShare = shares()

	// Planned drain of the first replicas: out of DNS, then Shutdown.
	drain := new(window)
	cur.Store(drain)
	var drained []*benchReplica
	for _, a := range rs.addrs()[:cfg.Drained] {
		drained = append(drained, rs.take(a))
	}
	dnsSrv.publish(rs.addrs())
	var slowest atomic.Int64
	var swg sync.WaitGroup
	var shutdownErr error
	var errMu sync.Mutex
	for _, r := range drained {
		swg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			t0 := time.Now()
			if err := r.ln.Shutdown(ctx); err != nil {
				errMu.Lock()
				shutdownErr = errors.Join(shutdownErr, err)
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
	res.DrainErrors = drain.failed()
	if shutdownErr != nil {
		return res, fmt.Errorf("drain: %w", shutdownErr)
	}

	// One replica killed (still in DNS), then back at the same address.
	prev := placed()
	kill := new(window)
	cur.Store(kill)
	recovery.Store(0)
	victim := rs.addrs()[0]
	rs.take(victim).ln.Close()
	time.Sleep(time.Second)
	res.KillFailed = kill.failed()
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
	// The replica takes IDs again once its ejection ends (the reconnect
	// backoff: up to 1.5x its maximum), and every link ages within
	// MaxLinkAge (+10 %) and its grace: by then each ID has been placed
	// again over the set it had before the kill.
	limit = 3*tcpconn.DefaultReconnectBackoffMax/2 + 2*cfg.MaxLinkAge + time.Second
	waitUntil(limit, func() bool { return returned() == 1 })
	res.Returned = returned()
	return res, nil
}

// roundTripLoop does c's round trips every period (from a random offset)
// until stop, recording each in the current window and the longest
// recovery from a failure.
func roundTripLoop(c *tcpconn.Connection, period time.Duration, stop <-chan struct{}, cur *atomic.Pointer[window], recovery *atomic.Int64) {
	defer c.Close()
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
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		t0 := time.Now()
		err := c.SendContext(ctx, msg)
		if err == nil {
			_, err = c.ReceiveContext(ctx)
		}
		cancel()
		cur.Load().add(time.Since(t0), err)
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

func countBy(placed map[string]string) map[string]int64 {
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
func waitUntil(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
