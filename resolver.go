// SPDX-License-Identifier: MIT

package tcpconn

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Targets with many endpoints. A plain "host:port" is one address, dialled
// as it always was (the system resolver picks one address per dial). A
// target with a scheme names a set of endpoints that a Client spreads its
// logical connections over and keeps following (fleet.go):
//
//	dns:///host:port          every A/AAAA address of host, at port
//	srv:///_svc._proto.name   every SRV record of name: its target's addresses, at its port
//	list:///h1:p1,h2:p2       a fixed list of addresses
//
// Spreading is opt-in through the scheme, so that a program written for
// one address per socket keeps exactly that behaviour, whatever its name
// resolves to.

// Target schemes understood by DNSResolver.
const (
	SchemeDNS  = "dns"
	SchemeSRV  = "srv"
	SchemeList = "list"
)

// Target is a parsed target: Scheme is empty for a plain address.
type Target struct {
	Scheme string
	Name   string // what follows "scheme:///", or the plain address
}

// String returns the target as it is written.
func (t Target) String() string {
	if t.Scheme == "" {
		return t.Name
	}
	return t.Scheme + ":///" + t.Name
}

// ParseTarget splits "scheme:///name" into its parts; a string without
// "://" is a plain address. It checks only the syntax every scheme shares
// (a Resolver checks the rest), and its error names the target.
func ParseTarget(s string) (Target, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return Target{Name: s}, nil
	}
	name, ok := strings.CutPrefix(rest, "/")
	switch {
	case scheme == "" || strings.ContainsAny(scheme, "/:"):
		return Target{}, invalidTarget(s, "the scheme is empty or malformed")
	case !ok:
		return Target{}, invalidTarget(s, "an authority is not supported: write "+scheme+":///name")
	case name == "":
		return Target{}, invalidTarget(s, "the name is empty")
	}
	return Target{Scheme: scheme, Name: name}, nil
}

func invalidTarget(target, why string) error {
	return fmt.Errorf("%w: %q: %s", ErrInvalidTarget, target, why)
}

// Resolver finds the endpoints ("host:port" addresses a net.Dialer accepts)
// behind a target with a scheme. A Client calls it when a target is first
// used, periodically (Config.ResolveInterval) and, rate limited, when a
// dial fails or a link is lost or drained. An error or an empty answer
// keeps the last good set; the error is reported (Config.OnLinkEvent) and
// the lookup is retried.
//
// Resolve may be called concurrently and must honour ctx.
type Resolver interface {
	Resolve(ctx context.Context, target Target) ([]string, error)
}

// DNSResolver resolves the dns, srv and list schemes through the standard
// library's net.Resolver: the path a Kubernetes headless Service or Consul
// DNS takes. It is the default Config.Resolver.
type DNSResolver struct {
	// Resolver answers the lookups (nil: net.DefaultResolver). Point it at
	// a given server with PreferGo and Dial.
	Resolver *net.Resolver
}

// Resolve implements Resolver.
func (r DNSResolver) Resolve(ctx context.Context, t Target) ([]string, error) {
	switch t.Scheme {
	case SchemeList:
		return resolveList(t)
	case SchemeDNS:
		host, port, err := splitHostPort(t)
		if err != nil {
			return nil, err
		}
		return r.lookupHost(ctx, t, host, port)
	case SchemeSRV:
		return r.lookupSRV(ctx, t)
	}
	return nil, invalidTarget(t.String(), "unknown scheme (dns, srv or list)")
}

func (r DNSResolver) net() *net.Resolver {
	if r.Resolver != nil {
		return r.Resolver
	}
	return net.DefaultResolver
}

func (r DNSResolver) lookupHost(ctx context.Context, t Target, host, port string) ([]string, error) {
	if net.ParseIP(host) != nil {
		return []string{net.JoinHostPort(host, port)}, nil
	}
	ips, err := r.net().LookupIPAddr(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrResolve, t, err)
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.JoinHostPort(ip.String(), port))
	}
	return out, nil
}

// lookupSRV resolves each SRV target through the same net.Resolver, so a
// test or a private DNS server answers both lookups. A target that fails to
// resolve is skipped while another one answers.
func (r DNSResolver) lookupSRV(ctx context.Context, t Target) ([]string, error) {
	_, srvs, err := r.net().LookupSRV(ctx, "", "", t.Name)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrResolve, t, err)
	}
	var out []string
	var firstErr error
	for _, s := range srvs {
		addrs, err := r.lookupHost(ctx, t, strings.TrimSuffix(s.Target, "."), strconv.Itoa(int(s.Port)))
		if err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		out = append(out, addrs...)
	}
	if len(out) == 0 && firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

func resolveList(t Target) ([]string, error) {
	var out []string
	for a := range strings.SplitSeq(t.Name, ",") {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, invalidTarget(t.String(), fmt.Sprintf("%q is not host:port", a))
		}
		out = append(out, a)
	}
	return out, nil
}

func splitHostPort(t Target) (host, port string, err error) {
	host, port, err = net.SplitHostPort(t.Name)
	if err != nil || host == "" || port == "" {
		return "", "", invalidTarget(t.String(), "the name must be host:port")
	}
	return host, port, nil
}

func (c *Config) resolver() Resolver {
	if c.Resolver != nil {
		return c.Resolver
	}
	return DNSResolver{}
}

// checkTarget parses a Connection's target; with the default Resolver it
// also checks what the name of each scheme must look like.
func checkTarget(address string, cfg *Config) (Target, error) {
	t, err := ParseTarget(address)
	if err != nil || t.Scheme == "" || cfg.Resolver != nil {
		return t, err
	}
	switch t.Scheme {
	case SchemeDNS:
		_, _, err = splitHostPort(t)
	case SchemeList:
		_, err = resolveList(t)
	case SchemeSRV:
	default:
		err = invalidTarget(address, "unknown scheme (dns, srv or list)")
	}
	return t, err
}
