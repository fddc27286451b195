// SPDX-License-Identifier: MIT

package tcpconn

import "golang.org/x/sys/unix"

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
			return readOutcome("readv", n, err)
		}
	}
}
