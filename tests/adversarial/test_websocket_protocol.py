"""Issue 14, point 9 (WebSocket): the protocol rules of RFC 6455 over raw
sockets, in the manner of the Autobahn suite's cases 5.* (fragmentation),
6.* (UTF-8) and 7.* (close handshake), which cannot run here, plus masking
(5.1). The bridge's streams take no client messages, but a client frame
that breaks the protocol fails the connection with the code RFC 6455 names:
1002 (protocol error) or 1007 (text that is not UTF-8).

An open connection is shown by a ping answered with a pong of the same
payload; the server's own text frames ({"result":...}) are skipped."""

import base64
import os
import socket
import struct
import time

from adversary import AttackTestCase

TEXT, BINARY, CONT, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10


def frame(opcode, payload=b"", fin=True, mask=True):
    """One client frame; masked with a random key unless mask is False."""
    b1 = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", (0x80 if fin else 0) | opcode, b1 | n)
    elif n < 65536:
        head = struct.pack("!BBH", (0x80 if fin else 0) | opcode, b1 | 126, n)
    else:
        head = struct.pack("!BBQ", (0x80 if fin else 0) | opcode, b1 | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


def ws_connect(port, path="/ws/analytics", origin=None, extra=b""):
    """Upgrades a new connection (extra: bytes sent with the handshake).
    Returns (socket, HTTP status, bytes read after the response head)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
           % (path, port, key))
    if origin:
        req += "Origin: %s\r\n" % origin
    s.sendall((req + "\r\n").encode() + extra)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ")[1])
    except (IndexError, ValueError):
        status = None
    return s, status, rest


def read_frames(sock, rest=b"", timeout=3.0, until=None):
    """Server frames as (opcode, payload) until a close frame, until(frame)
    is true, the peer hangs up, or timeout passes."""
    sock.settimeout(0.2)
    buf, frames = rest, []
    deadline = time.monotonic() + timeout
    while True:
        while len(buf) >= 2:
            n, off = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, off = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, off = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < off + n:
                break
            f = (buf[0] & 0x0F, buf[off:off + n])
            frames.append(f)
            buf = buf[off + n:]
            if f[0] == CLOSE or (until and until(f)):
                return frames
        if time.monotonic() > deadline:
            return frames
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return frames
        if not chunk:
            return frames
        buf += chunk


def close_code(frames):
    """The code of the server's close frame; None without a code; 'none'
    when no close frame came."""
    for op, payload in frames:
        if op == CLOSE:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
    return "none"


class WebSocketProtocolTest(AttackTestCase):

    def exchange(self, frames, path="/ws/analytics", probe=True):
        """Sends frames on a new WebSocket, then (probe) a ping. Returns the
        server's frames: up to its close frame, or up to the pong."""
        sock, status, rest = ws_connect(self.rest_port, path)
        try:
            self.assertEqual(status, 101)
            sock.sendall(b"".join(frames))
            token = os.urandom(8)
            if probe:
                try:
                    sock.sendall(frame(PING, token))
                except OSError:
                    pass  # already closed by the server
            return read_frames(sock, rest, until=lambda f: f == (PONG, token))
        finally:
            sock.close()

    def assert_open(self, frames, what):
        got = self.exchange(frames)
        self.assertEqual(close_code(got), "none", "%s: closed: %r" % (what, got[-1:]))
        self.assertEqual(got[-1][0], PONG, "%s: no pong: %r" % (what, got[-3:]))

    def assert_fails(self, frames, code, what, probe=True):
        got = self.exchange(frames, probe=probe)
        self.assertEqual(close_code(got), code, "%s: %r" % (what, got[-2:]))

    # --- 5.*: fragmentation ------------------------------------------------

    def test_fragmentation(self):
        with self.rss_watch():
            self.assert_open([frame(TEXT, b"frag", fin=False), frame(CONT, b"men", fin=False),
                              frame(CONT, b"ted")], "5.3-like: text in 3 fragments")
            self.assert_open([frame(TEXT, b"a", fin=False), frame(PING, b"in-between"),
                              frame(CONT, b"b")], "5.6-like: ping inside a fragmented text")
            self.assert_open([frame(BINARY, b"\xff" * 5, fin=False), frame(CONT, b"\x00")],
                             "5.x: fragmented binary")
            self.assert_open([frame(TEXT, b"x" * 70000)], "64-bit payload length")
            self.assert_open([frame(TEXT, b"y" * 300, fin=False), frame(CONT, b"z" * 1000)],
                             "16-bit payload lengths")
            self.assert_fails([frame(CONT, b"orphan")], 1002, "5.9-like: continuation first")
            self.assert_fails([frame(TEXT, b"a", fin=False), frame(TEXT, b"b")], 1002,
                              "5.18-like: new text inside a fragmented one")
            self.assert_fails([frame(PING, b"p", fin=False)], 1002, "5.1-like: fragmented ping")
        self.assert_survived()

    # --- 6.*: UTF-8 ----------------------------------------------------------

    def test_text_that_is_not_utf8_fails_with_1007(self):
        valid = "κόσμε €𝄞".encode()
        with self.rss_watch():
            self.assert_open([frame(TEXT, valid)], "6.2-like: valid UTF-8")
            cut = valid.index("€".encode()) + 1  # inside the euro sign
            self.assert_open([frame(TEXT, valid[:cut], fin=False), frame(CONT, valid[cut:])],
                             "6.2.3-like: code point split between fragments")
            self.assert_open([frame(TEXT, valid[:cut], fin=False), frame(PING, b"p"),
                              frame(CONT, valid[cut:])], "split code point around a ping")
            bad = {
                "6.3-like: surrogate": b"\xce\xba\xed\xa0\x80edited",
                "6.8-like: beyond U+10FFFF": b"\xf4\x90\x80\x80",
                "6.10-like: 0xFE": b"\xfe",
                "6.5-like: stray continuation byte": b"ok\x80",
                "6.6-like: overlong slash (2 bytes)": b"\xc0\xaf",
                "overlong slash (3 bytes)": b"\xe0\x80\xaf",
                "overlong U+FFFF (4 bytes)": b"\xf0\x8f\xbf\xbf",
                "6.4-like: truncated at the end": b"ab\xce",
            }
            for what, payload in bad.items():
                self.assert_fails([frame(TEXT, payload)], 1007, what)
            self.assert_fails([frame(TEXT, b"ab\xe2\x82", fin=False), frame(CONT, b"\x28")],
                              1007, "bad byte in the next fragment")
            self.assert_fails([frame(TEXT, b"ab\xce", fin=False), frame(CONT, b"")], 1007,
                              "truncated, with an empty last fragment")
            self.assert_open([frame(BINARY, b"\xff\xfe")], "binary is not UTF-8-checked")
        self.assert_survived()

    # --- 7.*: close handshake ------------------------------------------------

    def test_close_handshake(self):
        with self.rss_watch():
            for code in (1000, 1001, 1003, 1007, 1011, 3000, 4999):
                got = self.exchange([frame(CLOSE, close_payload(code, b"bye"))], probe=False)
                self.assertEqual(close_code(got), code, "7.7-like: close %d echoed" % code)
            got = self.exchange([frame(CLOSE, b"")], probe=False)
            self.assertEqual(close_code(got), None, "7.3.1-like: an empty close is echoed")
            for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535):
                self.assert_fails([frame(CLOSE, close_payload(code))], 1002,
                                  "7.9-like: invalid close code %d" % code, probe=False)
            self.assert_fails([frame(CLOSE, b"\x03")], 1002, "7.3.2-like: 1-byte close payload",
                              probe=False)
            self.assert_fails([frame(CLOSE, close_payload(1000, b"\xce\xba\xed\xa0\x80"))], 1007,
                              "7.5.1-like: close reason not UTF-8", probe=False)
            got = self.exchange([frame(CLOSE, close_payload(1000)), frame(TEXT, b"after"),
                                 frame(PING, b"after")], probe=False)
            self.assertEqual(close_code(got), 1000, "7.1.x-like: data after close")
            self.assertNotIn(PONG, [op for op, _ in got], "a ping after the close was answered")
        self.assert_survived()

    # --- 5.1: masking --------------------------------------------------------

    def test_unmasked_client_frame_fails_with_1002(self):
        with self.rss_watch():
            self.assert_fails([frame(TEXT, b"hello", mask=False)], 1002, "unmasked text")
            got = self.exchange([frame(PING, b"unmasked", mask=False)], probe=False)
            self.assertEqual(close_code(got), 1002, "unmasked ping: %r" % got[-2:])
            self.assertNotIn(PONG, [op for op, _ in got], "an unmasked ping was answered")
            self.assert_fails([frame(TEXT, b"masked"), frame(TEXT, b"x" * 200, mask=False)], 1002,
                              "unmasked after a masked one")
            sock, status, rest = ws_connect(self.rest_port,
                                            extra=frame(TEXT, b"early", mask=False))
            try:
                self.assertEqual(status, 101)
                self.assertEqual(close_code(read_frames(sock, rest)), 1002,
                                 "unmasked frame sent with the handshake")
            finally:
                sock.close()
        self.assert_survived()
