package bench

import "testing"

// One benchmark per workload, one sub-benchmark per transport:
// BenchmarkRTT100B/transport=raw, so that benchstat -col /transport works.
func run(b *testing.B, name string) {
	w, ok := Find(name)
	if !ok {
		b.Fatalf("no workload %q", name)
	}
	if w.Kind == Memory && testing.Short() {
		b.Skip("memory workloads skipped with -short")
	}
	for _, tr := range Transports() {
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

// TestWorkloadNames keeps the Benchmark functions above and the table in step.
func TestWorkloadNames(t *testing.T) {
	if len(Workloads) != 11 {
		t.Fatalf("the table has %d workloads; add or remove a Benchmark function", len(Workloads))
	}
}
