#!/usr/bin/env python3
"""Fills a coap2mqtt queue quickly: N simulated devices, each with its own
UDP socket and one confirmable POST outstanding at a time (closed loop),
retransmitting after 2 s as RFC 7252 asks. Prints one JSON line: the
answers counted by code, the requests never answered, and the seconds.

Why not coap-client: one process per message is too slow for 100,000
messages. Why one socket per device: the daemon deduplicates by
(peer, Message ID), and a device's 16-bit IDs must not repeat within the
247 s exchange lifetime, so each device sends at most 65,535 messages.

Why the sockets bind ports below the kernel's ephemeral range: the checks
before this one talk to the same daemon with coap-client, one process and
one ephemeral port per message, each with a random first Message ID. A
flood socket given one of those ports would, for its Message IDs that the
earlier client used, be the same (peer, Message ID) within the exchange
lifetime. The daemon then answered it with the earlier exchange's 2.04
and stored nothing (a CI run saw 100,000 answers and 99,999 queued); it
now takes a remembered ID with another token as a new request, but this
test should not lean on that to count cleanly. Ports no automatic bind
hands out cannot collide that way. And the answers are matched by token
as well as Message ID (RFC 7252 section 5.3.2): an answer carrying another
request's token is counted as "stale", not as an answer, so such a
collision shows itself instead of passing as stored.

    coap-flood.py --target 127.0.0.1:5683 --count 100000 --devices 16
"""
import argparse
import json
import os
import selectors
import socket
import struct
import time

CON, ACK, RST = 0, 2, 3
POST = 0x02
URI_PATH = 11
ACK_TIMEOUT_S = 2.0
MAX_RETRANSMIT = 4


def option(delta, value):
    """One CoAP option, delta-encoded (RFC 7252 section 3.1)."""

    def nibble(n):
        if n < 13:
            return n, b""
        if n < 269:
            return 13, bytes([n - 13])
        return 14, struct.pack("!H", n - 269)

    d, dext = nibble(delta)
    n, lext = nibble(len(value))
    return bytes([(d << 4) | n]) + dext + lext + value


def confirmable_post(message_id, token, path, payload):
    head = struct.pack("!BBH", 0x40 | (CON << 4) | len(token), POST, message_id) + token
    options = b""
    last = 0
    for segment in path.split("/"):
        options += option(URI_PATH - last, segment.encode())
        last = URI_PATH
    return head + options + b"\xff" + payload


def ephemeral_range():
    """The kernel's automatic port range (low, high), inclusive."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(n) for n in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def socket_outside_ephemeral(bind_host, ports):
    """A UDP socket bound to the first free port of `ports` (an iterator)
    that lies outside the kernel's automatic range."""
    low, high = ephemeral_range()
    for port in ports:
        if low <= port <= high:
            continue
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((bind_host, port))
            return sock
        except OSError:
            sock.close()
    raise SystemExit("coap-flood: no free UDP port outside the ephemeral range")


class Device:
    def __init__(self, index, target, path, count, ports):
        self.sock = socket_outside_ephemeral("127.0.0.1", ports)
        self.sock.setblocking(False)
        self.sock.connect(target)
        self.index = index
        self.path = path
        self.left = count
        self.seq = 0
        self.message_id = int.from_bytes(os.urandom(2), "big")
        self.datagram = None
        self.sent_at = 0.0
        self.tries = 0

    def next_request(self, now):
        self.seq += 1
        self.left -= 1
        self.message_id = (self.message_id + 1) & 0xFFFF
        payload = b"d%d-%08d" % (self.index, self.seq)
        self.token = struct.pack("!H", self.seq & 0xFFFF)
        self.datagram = confirmable_post(self.message_id, self.token, self.path, payload)
        self.tries = 0
        self.send(now)

    def send(self, now):
        self.sent_at = now
        self.tries += 1
        try:
            self.sock.send(self.datagram)
        except (BlockingIOError, ConnectionRefusedError):
            pass  # retransmitted after the timeout like a lost datagram


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="host:port")
    ap.add_argument("--count", type=int, required=True, help="requests in all")
    ap.add_argument("--devices", type=int, default=16)
    ap.add_argument("--path-prefix", default="sensors/flood")
    args = ap.parse_args()
    host, port = args.target.rsplit(":", 1)
    target = (host, int(port))
    per_device = -(-args.count // args.devices)
    if per_device > 65535:
        ap.error("more than 65,535 requests per device: use more devices")

    selector = selectors.DefaultSelector()
    # Ports from 20000 up, skipping any range the kernel hands out itself.
    ports = iter(range(20000, 65536))
    devices = []
    left = args.count
    for i in range(args.devices):
        n = min(per_device, left)
        left -= n
        if n == 0:
            break
        d = Device(i, target, "%s%d/m" % (args.path_prefix, i), n, ports)
        devices.append(d)
        selector.register(d.sock, selectors.EVENT_READ, d)

    codes = {}
    unanswered = 0
    stale = 0
    busy = set()
    start = time.monotonic()
    for d in devices:
        d.next_request(start)
        busy.add(d)
    while busy:
        for key, _ in selector.select(timeout=0.2):
            d = key.data
            while True:
                try:
                    data = d.sock.recv(2048)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                if len(data) < 4 or d not in busy:
                    continue
                kind = (data[0] >> 4) & 3
                (mid,) = struct.unpack("!H", data[2:4])
                if mid != d.message_id or kind not in (ACK, RST):
                    continue
                token = data[4:4 + (data[0] & 0x0F)]
                if kind == ACK and data[1] != 0 and token != d.token:
                    # Another exchange's answer under this Message ID: the
                    # daemon took the request for a duplicate and did not
                    # store it. Counted apart; the device goes on.
                    stale += 1
                else:
                    code = "RST" if kind == RST else "%d.%02d" % (data[1] >> 5, data[1] & 31)
                    codes[code] = codes.get(code, 0) + 1
                if d.left:
                    d.next_request(time.monotonic())
                else:
                    busy.discard(d)
        now = time.monotonic()
        for d in list(busy):
            if now - d.sent_at >= ACK_TIMEOUT_S * (2 ** (d.tries - 1)):
                if d.tries > MAX_RETRANSMIT:
                    unanswered += 1
                    if d.left:
                        d.next_request(now)
                    else:
                        busy.discard(d)
                else:
                    d.send(now)
    seconds = time.monotonic() - start
    print(json.dumps({"requests": args.count, "answers": codes,
                      "unanswered": unanswered, "stale": stale,
                      "seconds": round(seconds, 2)}))


if __name__ == "__main__":
    main()
