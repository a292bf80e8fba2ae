"""Writing captured frames to a pcap file (libpcap format, Ethernet link type) with impacket's ``pcapfile``.

impacket supplies the file and record headers; its ``PcapFile.write`` is
Python 2 code (it writes ``str(pkt)``), so records are written with the
structure's own ``getData()``.  tshark and Wireshark open the result.
"""

from __future__ import annotations

from impacket import pcapfile

SNAP_LEN = 262144
"""Enough for a 64 KB GSO super-frame, which a capture records as the router saw it."""


class PcapWriter:
    def __init__(self, path: str):
        self.file = open(path, "wb")
        self._pcap = pcapfile.PcapFile()
        self._pcap.setFile(self.file)
        self._pcap.setSnapLen(SNAP_LEN)
        self._pcap.setLinkType(1)        # LINKTYPE_ETHERNET
        self._pcap.writeHeaderOnce()
        self.count = 0

    def write(self, time: float, frame: bytes) -> None:
        record = pcapfile.PCapFilePacket()
        record["tsec"] = int(time)
        record["tmsec"] = int((time - int(time)) * 1_000_000)
        record["data"] = bytes(frame)
        self.file.write(record.getData())
        self.count += 1

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
