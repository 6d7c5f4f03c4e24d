"""Real parts for the Python compatibility suite: a Herald process, a raw WebSocket client, a
pysher client that records everything it receives, and a webhook receiver.

Every wait is bounded: a broken server fails a test, it never hangs it. Negative checks do not
wait for silence; they send a sentinel after the refused thing and require the sentinel to be
the next message, which holds however slow the machine is.
"""

import json
import logging
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pusher
import pysher
import websocket

HERE = os.path.dirname(os.path.abspath(__file__))
HERALD_BIN = os.path.abspath(os.environ.get("HERALD_BIN", os.path.join(HERE, "../../target/release/herald")))

APP_ID, KEY, SECRET = "123456", "app-key", "app-secret"
# 32 bytes, base64: the SDK derives each encrypted channel's key from it.
MASTER_KEY_B64 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
WAIT = 15.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {v!r}")


class Herald:
    """A real Herald process on a free loopback port with its own config file."""

    def __init__(self, app=None, server=None, webhooks=None):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="herald-py-")
        config = {"host": "127.0.0.1", "port": self.port, **(server or {})}
        text = "[server]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in config.items())
        app_keys = {"id": APP_ID, "key": KEY, "secret": SECRET, **(app or {})}
        text += "\n[[apps]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in app_keys.items())
        for hook in webhooks or []:
            text += "\n[[apps.webhooks]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in hook.items())
        path = os.path.join(self.dir, "herald.toml")
        with open(path, "w") as f:
            f.write(text)
        # Herald reads Reverb's variables over the file: none of the caller's may change the test.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REVERB_", "REDIS_", "HERALD_"))}
        self.log_path = os.path.join(self.dir, "herald.log")
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [HERALD_BIN, "start", "--config", path], cwd=self.dir, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"herald exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/up", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"herald did not answer /up within 30 s:\n{self.output()}")
            time.sleep(0.1)

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read()[-20000:].decode("utf-8", "replace")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def sdk(self, **overrides):
        """The official `pusher` SDK pointed at this server."""
        options = dict(app_id=APP_ID, key=KEY, secret=SECRET, ssl=False, host="127.0.0.1", port=self.port)
        options.update(overrides)
        return pusher.Pusher(**options)

    def ws_url(self, key=KEY, query="protocol=7&client=python-test&version=1"):
        return f"ws://127.0.0.1:{self.port}/app/{key}?{query}"

    def raw(self, key=KEY):
        return RawClient(self.ws_url(key))

    def pysher(self, **options):
        return PysherClient(self.port, **options)


class RawClient:
    """A bare WebSocket client (websocket-client, pysher's own transport) speaking Pusher JSON."""

    def __init__(self, url, established=True):
        self.ws = websocket.create_connection(url, timeout=WAIT)
        self.socket_id = None
        if established:
            hello = self.expect("pusher:connection_established")
            self.socket_id = json.loads(hello["data"])["socket_id"]

    def send(self, event, data, channel=None):
        message = {"event": event, "data": data}
        if channel is not None:
            message["channel"] = channel
        self.ws.send(json.dumps(message))

    def recv(self, timeout=WAIT):
        """The next message, answering the server's pings on the way; None once closed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                opcode, frame = self.ws.recv_data_frame(True)
            except websocket.WebSocketTimeoutException:
                break
            except websocket.WebSocketConnectionClosedException:
                return None
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                self.close_code = struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else None
                return None
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue
            message = json.loads(frame.data.decode("utf-8"))
            if message.get("event") == "pusher:ping":
                self.send("pusher:pong", {})
                continue
            return message
        raise AssertionError(f"nothing arrived within {timeout} s")

    def expect(self, event, channel=None, timeout=WAIT):
        """The first message named `event` (on `channel`), skipping others; fails after `timeout`."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.recv(deadline - time.monotonic())
            if message is None:
                raise AssertionError(f"closed ({getattr(self, 'close_code', None)}) while waiting for {event}: {seen}")
            if message.get("event") == event and (channel is None or message.get("channel") == channel):
                return message
            seen.append(message)
        raise AssertionError(f"no {event} within {timeout} s; got {seen}")

    def next_on(self, channel, timeout=WAIT):
        """The next message on `channel` (connection-level messages are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.recv(deadline - time.monotonic())
            assert message is not None, f"closed ({getattr(self, 'close_code', None)}) while reading {channel}"
            if message.get("channel") == channel:
                return message
        raise AssertionError(f"nothing on {channel} within {timeout} s")

    def closed_with(self, timeout=WAIT):
        """The close code the server ends this connection with (fails if it stays open)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.recv(deadline - time.monotonic()) is None:
                return getattr(self, "close_code", None)
        raise AssertionError(f"still open after {timeout} s")

    def subscribe(self, channel, **fields):
        self.send("pusher:subscribe", {"channel": channel, **fields})
        reply = self.recv()
        assert reply is not None and reply.get("channel") == channel, reply
        return reply

    def close(self):
        try:
            self.ws.close()
        except OSError:
            pass


class PysherClient:
    """A real pysher client (protocol 6) whose every incoming event is also recorded, so a test can
    wait for one without racing pysher's own registration of a channel."""

    def __init__(self, port, key=KEY, **options):
        options.setdefault("secret", SECRET)
        self.client = pysher.Pusher(
            key, custom_host="127.0.0.1", port=port, secure=False, log_level=logging.WARNING, **options
        )
        self.events = queue.Queue()
        self.errors = queue.Queue()
        original = self.client.connection.event_handler

        def record(event, data, channel):
            self.events.put((event, data, channel))
            original(event, data, channel)

        self.client.connection.event_handler = record
        self.client.connection.bind("pusher:error", self.errors.put)
        self.connected = threading.Event()
        self.client.connection.bind("pusher:connection_established", lambda _data: self.connected.set())
        self.client.connect()

    def wait_connected(self):
        assert self.connected.wait(WAIT), "pysher did not get pusher:connection_established"
        return self.client.connection.socket_id

    def expect(self, event, channel, timeout=WAIT):
        """(data) of the first `event` on `channel`, skipping others."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = self.events.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            if got[0] == event and got[2] == channel:
                return got[1]
            seen.append(got)
        raise AssertionError(f"pysher: no {event} on {channel} within {timeout} s; got {seen}")

    def next_on(self, channel, timeout=WAIT):
        """(event, data) of the next event on `channel`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event, data, got_channel = self.events.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            if got_channel == channel:
                return event, data
        raise AssertionError(f"pysher: nothing on {channel} within {timeout} s")

    def subscribe(self, channel, expect="pusher_internal:subscription_succeeded"):
        handle = self.client.subscribe(channel)
        data = self.expect(expect, channel)
        return handle, data

    def disconnect(self):
        self.client.disconnect(timeout=5)


class WebhookReceiver:
    """An HTTP server on loopback that records each webhook request (headers, raw body)."""

    def __init__(self):
        self.requests = queue.Queue()
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                received.put((self.headers, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next_with(self, predicate, timeout=WAIT):
        """The first request whose parsed body satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                headers, body = self.requests.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            if predicate(json.loads(body)):
                return headers, body
        raise AssertionError(f"no matching webhook within {timeout} s")

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
