// SPDX-License-Identifier: MIT

package tcpconn

import (
	"errors"
	"slices"
	"testing"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Target
		bad  bool
	}{
		{in: "127.0.0.1:80", want: Target{Name: "127.0.0.1:80"}},
		{in: "example.com:80", want: Target{Name: "example.com:80"}},
		{in: "dns:///svc.local:7000", want: Target{Scheme: "dns", Name: "svc.local:7000"}},
		{in: "srv:///_tc._tcp.svc.local", want: Target{Scheme: "srv", Name: "_tc._tcp.svc.local"}},
		{in: "list:///a:1,b:2", want: Target{Scheme: "list", Name: "a:1,b:2"}},
		{in: "dns://svc.local:7000", bad: true},
		{in: "dns:///", bad: true},
		{in: "://x", bad: true},
	} {
		got, err := ParseTarget(tc.in)
		if tc.bad {
			if !errors.Is(err, ErrInvalidTarget) {
				t.Errorf("ParseTarget(%q) = %v, %v; want ErrInvalidTarget", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want || got.String() != tc.in {
			t.Errorf("ParseTarget(%q) = %+v (%q), %v; want %+v", tc.in, got, got.String(), err, tc.want)
		}
	}
}

// TestDNSResolver resolves through a real DNS server on loopback whose
// records change between lookups.
func TestDNSResolver(t *testing.T) {
	d := newDNSServer(t)
	r := DNSResolver{Resolver: d.resolver()}
	ctx := testContext(t)
	d.setA("svc.test", "127.0.0.1:0", "127.0.0.2:0")
	d.setSRV("_tc._tcp.svc.test", "127.0.0.3:7001", "127.0.0.4:7002")

	for _, tc := range []struct {
		target string
		want   []string
		err    error
	}{
		{target: "dns:///svc.test:7000", want: []string{"127.0.0.1:7000", "127.0.0.2:7000"}},
		{target: "dns:///127.0.0.9:7000", want: []string{"127.0.0.9:7000"}},
		{target: "srv:///_tc._tcp.svc.test", want: []string{"127.0.0.3:7001", "127.0.0.4:7002"}},
		{target: "list:///127.0.0.1:1,[::1]:2", want: []string{"127.0.0.1:1", "[::1]:2"}},
		{target: "dns:///missing.test:7000", err: ErrResolve},
		{target: "srv:///_tc._tcp.missing.test", err: ErrResolve},
		{target: "dns:///svc.test", err: ErrInvalidTarget},
		{target: "list:///127.0.0.1", err: ErrInvalidTarget},
		{target: "consul:///svc", err: ErrInvalidTarget},
	} {
		tg, err := ParseTarget(tc.target)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Resolve(ctx, tg)
		slices.Sort(got)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: %v, %v; want %v", tc.target, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, %v; want %v", tc.target, got, err, tc.want)
		}
	}

	d.setA("svc.test", "127.0.0.5:0")
	got, err := r.Resolve(ctx, Target{Scheme: SchemeDNS, Name: "svc.test:7000"})
	if err != nil || !slices.Equal(got, []string{"127.0.0.5:7000"}) {
		t.Fatalf("after a change: %v, %v", got, err)
	}
}
