#!/usr/bin/env python3
"""Opens N client connections to an etcd server and makes one serializable
Range on each (HTTP/2 by hand: preface, SETTINGS, HEADERS, DATA), keeps them
all open, and reports how many were answered. Used to measure the server's
memory per open connection (read VmRSS of the server while they are open):

    bench/many_connections.py PORT N [HOLD_SECONDS]

The request's header block uses only static-table indexes and plain
literals, so it needs no HPACK encoder."""
import socket
import struct
import sys
import time


def literal(index, value):
    # Literal without indexing, indexed name (4-bit prefix).
    name = bytes([index]) if index < 15 else bytes([0x0F, index - 15])
    return name + bytes([len(value)]) + value


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    hold = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    # :method POST, :scheme http, :path, content-type.
    block = b"\x83\x86" + literal(4, b"/etcdserverpb.KV/Range") + literal(31, b"application/grpc")
    msg = b"\x0a\x03foo" + b"\x50\x01"  # RangeRequest{key: "foo", serializable: true}
    data = b"\x00" + struct.pack(">I", len(msg)) + msg
    hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"")
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(hello + frame(1, 4, 1, block) + frame(0, 1, 1, data))
        socks.append(s)
    time.sleep(2)
    answered = 0
    for s in socks:
        s.settimeout(2)
        try:
            if s.recv(65536):
                answered += 1
        except OSError:
            pass
    print(f"answered {answered} of {n}", flush=True)
    time.sleep(hold)


if __name__ == "__main__":
    main()
