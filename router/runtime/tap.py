"""TAP ports with virtio-net offloads: the only code that opens /dev/net/tun.

IFF_VNET_HDR plus TUNSETOFFLOAD (checksum offload and TSO) lets the kernel
hand over 64 KB TCP super-frames with partial checksums, so the router
rewrites one header where it would otherwise rewrite forty-four
(../shared/REFERENCE.md, "Speed on TAP").
"""

from __future__ import annotations

import fcntl
import os
import struct

import pytun

from ..packet.frame import VNET_HDR_LEN

TUNSETVNETHDRSZ = 0x400454D8
TUNGETVNETHDRSZ = 0x800454D7
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN = 0x01, 0x02, 0x04, 0x08
OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
READ_SIZE = VNET_HDR_LEN + 14 + 65535 + 4


class TapError(OSError):
    pass


class TapPort:
    """One TAP device, non-blocking, with 12-byte virtio-net headers on every frame."""

    def __init__(self, name: str, offloads: bool = True):
        try:
            self.dev = pytun.TunTapDevice(name=name, flags=pytun.IFF_TAP | pytun.IFF_NO_PI | pytun.IFF_VNET_HDR)
        except pytun.Error as exc:
            raise TapError(f"cannot open TAP {name!r}: {exc}") from None
        self.name = self.dev.name
        self.fd = self.dev.fileno()
        fcntl.ioctl(self.fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
        size = struct.unpack("i", fcntl.ioctl(self.fd, TUNGETVNETHDRSZ, struct.pack("i", 0)))[0]
        if size != VNET_HDR_LEN:
            raise TapError(f"TAP {name!r}: virtio-net header size is {size}, not {VNET_HDR_LEN}")
        # TUNSETOFFLOAD takes its value as an int argument, not a pointer.
        fcntl.ioctl(self.fd, TUNSETOFFLOAD, OFFLOADS if offloads else 0)
        os.set_blocking(self.fd, False)
        self.dev.up()
        self.buffer = bytearray(READ_SIZE)
        self.iov = [self.buffer]

    def write(self, frame: bytearray) -> bool:
        try:
            os.write(self.fd, frame)
            return True
        except (BlockingIOError, OSError):
            return False

    def close(self) -> None:
        try:
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, 0)  # a persistent TAP keeps its offloads otherwise
        except OSError:
            pass
        self.dev.close()
