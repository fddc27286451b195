package bench

import (
	"fmt"

	"google.golang.org/grpc/mem"
)

// bytesCodec carries gRPC messages as plain bytes, without protobuf: what a
// message holding one bytes field costs, less the field's tag and length.
// Forced on both ends (ForceCodecV2, ForceServerCodecV2), so no service
// needs generated code.
//
// Marshal takes a []byte or *[]byte and copies it into a buffer of gRPC's
// pool, as the protobuf codec copies what it encodes: SendMsg returns once
// the message is queued, before the HTTP/2 writer has sent it, so without
// the copy a caller reusing its slice would change bytes still in flight.
// Unmarshal copies into a *[]byte, reusing its capacity.
type bytesCodec struct{}

func (bytesCodec) Name() string { return "bytes" }

func (bytesCodec) Marshal(v any) (mem.BufferSlice, error) {
	var p []byte
	switch m := v.(type) {
	case []byte:
		p = m
	case *[]byte:
		p = *m
	default:
		return nil, fmt.Errorf("bytesCodec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.Copy(p, mem.DefaultBufferPool())}, nil
}

func (bytesCodec) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("bytesCodec: cannot unmarshal into %T", v)
	}
	n := data.Len()
	if cap(*p) < n {
		*p = make([]byte, n)
	}
	*p = (*p)[:n]
	data.CopyTo(*p)
	return nil
}
