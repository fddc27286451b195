package bench

import "testing"

// One benchmark per workload, one sub-benchmark per transport:
// BenchmarkRTT100B/transport=raw, so that benchstat -col /transport works.
func run(b *testing.B, name string) {
	w, ok := Find(name)
	if !ok {
		b.Fatalf("no workload %q", name)
	}
	if w.SkippedByShort() && testing.Short() {
		b.Skip("skipped with -short")
	}
	for _, tr := range TransportsFor(w) {
		b.Run("transport="+tr.Name, func(b *testing.B) { w.Run(b, tr) })
	}
}

func BenchmarkRTT100B(b *testing.B)     { run(b, "RTT100B") }
func BenchmarkRTT1KB(b *testing.B)      { run(b, "RTT1KB") }
func BenchmarkRTT200KB(b *testing.B)    { run(b, "RTT200KB") }
func BenchmarkRTT1MB(b *testing.B)      { run(b, "RTT1MB") }
func BenchmarkSendOnly1KB(b *testing.B) { run(b, "SendOnly1KB") }
func BenchmarkRecvOnly1KB(b *testing.B) { run(b, "RecvOnly1KB") }
func BenchmarkMux16x1KB(b *testing.B)   { run(b, "Mux16x1KB") }
func BenchmarkMux256x1KB(b *testing.B)  { run(b, "Mux256x1KB") }
func BenchmarkStream64KB(b *testing.B)  { run(b, "Stream64KB") }
func BenchmarkMemory10k(b *testing.B)   { run(b, "Memory10k") }
func BenchmarkMemory100k(b *testing.B)  { run(b, "Memory100k") }

// Over TLS 1.3 (raw: length-prefixed messages on a plain *tls.Conn).
func BenchmarkTLSRTT100B(b *testing.B) { run(b, "TLSRTT100B") }
func BenchmarkTLSRTT1KB(b *testing.B)  { run(b, "TLSRTT1KB") }
func BenchmarkTLSRTT64KB(b *testing.B) { run(b, "TLSRTT64KB") }

// Head-of-line blocking (mixed.go): an op is one 1 KiB probe round trip
// beside a bulk sender on the same socket; p50-us, p99-us, max-us, bulk-MB/s.
// The floor transport puts probe and bulk on two sockets.
func BenchmarkMixed4MB(b *testing.B)    { run(b, "Mixed4MB") }
func BenchmarkMixed16MB(b *testing.B)   { run(b, "Mixed16MB") }
func BenchmarkTLSMixed4MB(b *testing.B) { run(b, "TLSMixed4MB") }

// Fairness of two bulk senders on one socket: slow-MB/s, fast-MB/s, slow/fast.
func BenchmarkFair4MB(b *testing.B) { run(b, "Fair4MB") }

// One bulk flow through a proxy that adds a round-trip delay (wan.go): an
// op is one 64 KiB message delivered, MB/s the throughput. The 100 ms case
// wants -benchtime 3s or more (Workload.MinBenchtime).
func BenchmarkWAN20ms(b *testing.B)  { run(b, "WAN20ms") }
func BenchmarkWAN100ms(b *testing.B) { run(b, "WAN100ms") }

// TestWorkloadNames keeps the Benchmark functions above and the table in step.
func TestWorkloadNames(t *testing.T) {
	if n := len(AllWorkloads()); n != 20 {
		t.Fatalf("the tables have %d workloads; add or remove a Benchmark function", n)
	}
}
