// SPDX-License-Identifier: MIT

package tcpconn

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// canReadv: frameReader.ReadFull reads a payload and the bytes after it in
// one readv.
const canReadv = true

// sysReadv reads the non-blocking socket fd into dst and then spare; wait
// reports that there is nothing to read yet.
func sysReadv(fd uintptr, dst, spare []byte) (n int, err error, wait bool) {
	iov := [2][]byte{dst, spare}
	for {
		n, err = unix.Readv(int(fd), iov[:])
		if err != unix.EINTR {
			break
		}
	}
	switch {
	case err == unix.EAGAIN:
		return 0, nil, true
	case err != nil:
		return 0, os.NewSyscallError("readv", err), false
	case n == 0:
		return 0, io.EOF, false
	}
	return n, nil, false
}
