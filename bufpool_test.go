// SPDX-License-Identifier: MIT

package tcpconn

import "testing"

// TestPayloadPoolAllocOnSizeChange: a long run of small messages must not
// make the pool drop the buffers of a larger size that follows (one
// bytebufferpool.Pool for all sizes calibrated to 100 bytes and then
// allocated every 1 KiB buffer anew for ~42,000 messages).
func TestPayloadPoolAllocOnSizeChange(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own, and sync.Pool drops at random under it")
	}
	cycle := func(n int) {
		data, pooled := getPayload(n)
		putPayload(data, pooled)
	}
	for range 50_000 { // past the pool's calibration threshold (42,000 Puts)
		cycle(100)
	}
	for _, n := range []int{1 << 10, 100, 0, 5000, smallMessageLimit} {
		cycle(n) // the first of a size may allocate
		if allocs := testing.AllocsPerRun(1000, func() { cycle(n) }); allocs != 0 {
			t.Errorf("%d-byte payloads after 50,000 of 100 bytes: %.2f allocations each, want 0", n, allocs)
		}
	}
}

// TestFreeListKeepsAtMostItsDepth: a free list hands back the last value
// returned first (still in cache), keeps no more than its depth, and
// reports empty when it is.
func TestFreeListKeepsAtMostItsDepth(t *testing.T) {
	f := newFreeList[int](2)
	for v := 1; v <= 3; v++ {
		f.put(v) // 3 does not fit
	}
	for _, want := range []int{2, 1} {
		if v, ok := f.tryGet(); !ok || v != want {
			t.Fatalf("tryGet = %d, %v; want %d, true", v, ok, want)
		}
	}
	if v, ok := f.tryGet(); ok {
		t.Fatalf("tryGet on an empty list = %d, true", v)
	}
}
