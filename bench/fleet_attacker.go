package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	tcpconn "github.com/pulsyflux/tcp-conn"
)

// The attacker fleet runs in a child process (a re-exec of the program
// measuring, see MeasureFleet), so that the server's heap holds only what
// the attack makes the server keep. The parent passes the attack in an
// environment variable; the child reports on stdout once the fill has
// stalled, then holds its sockets open until its stdin closes.

// attackerEnv names the variable that makes a process the attacker fleet.
const attackerEnv = "TCPCONN_BENCH_ATTACKER"

// attackSpec is what the parent asks of the fleet.
type attackSpec struct {
	Addr         string
	Sockets      int
	IDsPerSocket int
	MessageSize  int
	Quiet        time.Duration // stalled: no Send succeeded for this long
	FillLimit    time.Duration // give up waiting for the stall after this long
}

// attackReport is what the fleet tells the parent once the fill stalled.
type attackReport struct {
	SentBytes    uint64         // payload of the Sends that returned nil
	SentMessages uint64         // their number
	Start        time.Time      // before the first Open
	FillEnd      time.Time      // when the last Send that returned nil returned
	Stalled      bool           // false: FillLimit passed while Sends still succeeded
	Errors       map[string]int // Sends that failed, by error
}

// IsAttackerProcess says whether this process was started as the attacker
// fleet of MeasureFleet; a program that measures fleets calls it first
// thing and then RunAttackerProcess.
func IsAttackerProcess() bool { return os.Getenv(attackerEnv) != "" }

// RunAttackerProcess runs the fleet the parent asked for and returns the
// process's exit code.
func RunAttackerProcess() int {
	var spec attackSpec
	if err := json.Unmarshal([]byte(os.Getenv(attackerEnv)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "attacker:", err)
		return 2
	}
	if err := attack(spec, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "attacker:", err)
		return 1
	}
	return 0
}

// attack opens spec.Sockets clients to spec.Addr, each with
// spec.IDsPerSocket logical connections the server never claims, and sends
// spec.MessageSize-byte messages on every one of them with SendContext, so
// that each waits for credit like any client of the library: the fleet
// never breaks the protocol, it only takes all the credit it is given.
// Once no Send has succeeded for spec.Quiet it reports, waits for stdin to
// close, and closes everything.
func attack(spec attackSpec, stdin io.Reader, stdout io.Writer) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msg := messagePattern(spec.MessageSize) // read only, shared by every sender
	var (
		sentBytes, sentMsgs atomic.Uint64
		lastSent            atomic.Int64 // UnixNano of the last Send that returned nil
		errMu               sync.Mutex
		errs                = map[string]int{}
		wg                  sync.WaitGroup
	)
	start := time.Now()
	lastSent.Store(start.UnixNano())
	clients := make([]*tcpconn.Client, 0, spec.Sockets)
	defer func() {
		cancel()
		for _, cl := range clients {
			cl.Close()
		}
		wg.Wait()
	}()
	for range spec.Sockets {
		cl, err := tcpconn.NewClient(nil)
		if err != nil {
			return err
		}
		clients = append(clients, cl)
		for j := range spec.IDsPerSocket {
			c := cl.Open(spec.Addr, tcpconn.WithID(fmt.Sprintf("fill-%d", j)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					if err := c.SendContext(ctx, msg); err != nil {
						if ctx.Err() == nil {
							errMu.Lock()
							errs[errorKind(err)]++
							errMu.Unlock()
						}
						return // a refused or closed ID is not reopened
					}
					sentBytes.Add(uint64(len(msg)))
					sentMsgs.Add(1)
					lastSent.Store(time.Now().UnixNano())
				}
			}()
		}
	}

	// Wait for the stall, or the limit, or the parent giving up early.
	parentGone := make(chan struct{})
	go func() { io.Copy(io.Discard, stdin); close(parentGone) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	stalled := false
	for !stalled && time.Since(start) < spec.FillLimit {
		select {
		case <-parentGone:
			return errors.New("the parent closed stdin before the fill stalled")
		case <-tick.C:
		}
		stalled = time.Since(time.Unix(0, lastSent.Load())) >= spec.Quiet
	}
	errMu.Lock()
	report := attackReport{
		SentBytes:    sentBytes.Load(),
		SentMessages: sentMsgs.Load(),
		Start:        start,
		FillEnd:      time.Unix(0, lastSent.Load()),
		Stalled:      stalled,
		Errors:       errs,
	}
	line, err := json.Marshal(report)
	errMu.Unlock()
	if err != nil {
		return err
	}
	w := bufio.NewWriter(stdout)
	w.Write(append(line, '\n'))
	if err := w.Flush(); err != nil {
		return err
	}
	<-parentGone // the parent measures the server meanwhile
	return nil
}

// errorKind names a Send error by the library's sentinel it matches.
func errorKind(err error) string {
	for _, s := range []error{tcpconn.ErrRefused, tcpconn.ErrPeerClosed, tcpconn.ErrProtocol, tcpconn.ErrKeepAliveTimeout,
		tcpconn.ErrHandshake, tcpconn.ErrLinkLost, tcpconn.ErrIdleTimeout, tcpconn.ErrClosed} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return err.Error()
}
