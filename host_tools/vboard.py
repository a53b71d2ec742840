"""Launcher of the virtual board (``itbsim board``): the real firmware
(``firmware/app.py`` on ``firmware/board/virtual.py``) in the MicroPython unix
port, with the host end of its serial port on a pseudo-terminal (raw mode) or a
TCP socket for pyserial's ``socket://`` URLs.

The launcher plays what surrounds a board on a bench:

- **the USB cable**: it relays bytes between the host end and the board process
  (a localhost TCP link the board connects to at boot);
- **the power supply and reset circuit**: when the board process exits (a reset
  it asked for, a crash) it is started again on the same state directory, so the
  firmware recovers from its flash as after a real reset; ``power_cut()`` kills it
  without warning (a real power cut: unflushed writes are lost);
- **the external watchdog**: the board prints ``WDT feed`` lines; no feed within
  the timeout kills and restarts it (like ``machine.WDT``), ``WDT stop``
  (MAINTENANCE) ends the watch.

Bytes that arrive while the board is down are dropped, as a board in reset would.
More than ``MAX_RESTARTS`` exits within a minute stop the launcher with the
board's last error output (a firmware that cannot start).
"""

import fcntl
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from collections import deque
from pathlib import Path

from host_tools import toolchain

HOST_BUFFER = 256 * 1024  # bytes held for a slow host before the board's writes wait
BOARD_BUFFER = 64 * 1024  # bytes held for a busy board; more from the host are lost
HEAPSIZE = "512K"  # the unix port is 64-bit: about twice the Pico's ~230 KB of objects
MAX_RESTARTS = 5


class LaunchError(RuntimeError):
    """The virtual board could not start (with the board's own error output)."""


class VirtualBoard:
    """One virtual board. ``start()`` returns the pyserial URL or device path;
    ``stop()`` powers it off. Also a context manager.

    ``state``: directory of its flash, RTC and identity (kept across runs);
    ``accelerate``: test-clock speed-up from boot (dev builds); ``socket_port``:
    serve a TCP socket (0: any free port) instead of a pseudo-terminal;
    ``provision``: hold the provisioning button; ``dev``: a dev build (test clock,
    fault injection); ``rtc_invalid``: the RTC lost its time; ``log``: a callable
    for the board's status lines (watchdog, annunciation), or None; ``config``:
    device configuration overrides (``itb.drugs.DeviceConfig``) for the first boot
    (a board that holds a store keeps its own); ``watchdog_ms``: a shorter
    watchdog for tests."""

    def __init__(self, state, accelerate=1, socket_port=None, provision=False, dev=True,
                 rtc_invalid=False, heapsize=HEAPSIZE, log=None, firmware=toolchain.FIRMWARE,
                 config=None, watchdog_ms=None):
        self.state = Path(state)
        self.firmware = Path(firmware)
        self.config = config  # device configuration overrides, used at the first boot
        self.watchdog_ms = watchdog_ms  # None: the firmware's (8 s)
        self.image = None  # directory of the cross-compiled firmware the board runs
        self.accelerate = accelerate
        self.socket_port = socket_port
        self.provision = provision
        self.dev = dev
        self.rtc_invalid = rtc_invalid
        self.heapsize = heapsize
        self.log = log
        self.url = None
        self.boots = 0
        self.resets = {"exit": 0, "watchdog": 0, "power_cut": 0}
        self.annunciating = None
        self.last_error = deque(maxlen=40)
        self._proc = None
        self._child = None
        self._host = None  # pty master fd or connected TCP socket
        self._server = None  # TCP server for the host (socket mode)
        self._inner = None  # TCP server the board connects to
        self._pty_slave = None
        self._wdt = None  # (timeout_s, last feed time) while watched
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread = None
        self._exits = deque(maxlen=MAX_RESTARTS)
        self._state_lock = None  # flock on the state directory: one board per directory
        self.failure = None
        self._pending = bytearray()  # board -> host bytes the host has not taken yet
        self._to_board = bytearray()  # host -> board bytes the board has not read yet

    # ------------------------------------------------------------------ control
    def start(self, timeout=30):
        self.state.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o700)  # its flash holds the board's keys
        self._state_lock = open(self.state / "launcher.lock", "w")
        try:
            fcntl.flock(self._state_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._state_lock.close()
            self._state_lock = None
            raise LaunchError(f"{self.state} is in use by another virtual board (one board"
                              " per state directory)") from None
        try:
            self._micropython = toolchain.need("micropython")
            self.image = toolchain.firmware_image(self.firmware)
        except toolchain.ToolError as e:
            raise LaunchError(str(e)) from None
        self._inner = socket.create_server(("127.0.0.1", 0))
        if self.socket_port is None:
            master, slave = os.openpty()
            tty.setraw(slave)
            tty.setraw(master)
            os.set_blocking(master, False)  # a host that does not read never blocks us
            self._host = master
            self._pty_slave = slave
            self.url = os.ttyname(slave)
        else:
            try:
                self._server = socket.create_server(("127.0.0.1", self.socket_port))
            except OSError as e:
                self.stop()
                raise LaunchError(f"cannot listen on port {self.socket_port}: {e.strerror}"
                                  ) from None
            self.url = "socket://127.0.0.1:%d" % self._server.getsockname()[1]
        self._boot()
        self._thread = threading.Thread(target=self._loop, name="vboard", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise LaunchError("the virtual board did not start within %d s: %s"
                              % (timeout, self._error_text()))
        if self.failure:
            raise LaunchError(self.failure)
        return self.url

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._kill()
        for obj in (self._server, self._inner):
            if obj is not None:
                obj.close()
        if isinstance(self._host, socket.socket):
            self._host.close()
        elif self._host is not None:
            os.close(self._host)
        if self._pty_slave is not None:
            os.close(self._pty_slave)
        if self._state_lock is not None:
            self._state_lock.close()
        self._host = self._server = self._inner = self._pty_slave = self._state_lock = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def power_cut(self, off_s=0.0):
        """Cut the power now (SIGKILL: unflushed data is lost), stay off ``off_s``
        seconds, power on again; returns when the board is up."""
        with self._lock:
            self.resets["power_cut"] += 1
            self._ready.clear()
            self._kill()
        time.sleep(off_s)
        with self._lock:
            self._boot()
        if not self._ready.wait(30):
            raise LaunchError("the virtual board did not come back: " + self._error_text())

    # ------------------------------------------------------------------ internals
    def _error_text(self):
        return "\n".join(self.last_error) or "(no output)"

    def _boot(self, cause="power_on"):
        image = str(self.image)
        env = dict(os.environ, MICROPYPATH=".frozen:" + image)  # .frozen: asyncio
        cmd = [self._micropython, "-X", "heapsize=" + self.heapsize, "-m", "board.virtual",
               "--state", str(self.state.resolve()), "--serial",
               str(self._inner.getsockname()[1]), "--firmware", image,
               "--accelerate", str(self.accelerate), "--reset-cause", cause]
        if self.watchdog_ms:
            cmd += ["--watchdog-ms", str(self.watchdog_ms)]
        if self.config:
            import json

            cmd += ["--config", json.dumps(self.config, separators=(",", ":"))]
        for flag, on in (("--provision", self.provision), ("--dev", self.dev),
                         ("--rtc-invalid", self.rtc_invalid)):
            if on:
                cmd.append(flag)
        self._proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, cwd=str(self.state))
        os.set_blocking(self._proc.stdout.fileno(), False)
        self._child = None
        self._wdt = None
        self._outbuf = b""
        self.boots += 1

    def _kill(self):
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc is not None:
            proc.stdout.close()
        if self._child is not None:
            self._child.close()
        self._proc = None
        self._child = None

    def _board_line(self, line):
        text = line.decode(errors="replace").strip()
        if text.startswith("WDT feed"):
            if self._wdt is not None:
                self._wdt[1] = time.monotonic()
            return
        if text.startswith("WDT start"):
            self._wdt = [int(text.split()[2]) / 1000, time.monotonic()]
        elif text.startswith("WDT stop"):
            self._wdt = None
        elif text.startswith("ANN "):
            self.annunciating = None if text[4:] == "None" else text[4:]
        elif text.startswith("READY"):
            self._ready.set()
        else:
            self.last_error.append(text)
        if self.log is not None:
            self.log(text)

    def _loop(self):
        sel = selectors.DefaultSelector()
        registered = {}

        def watch(obj, tag):
            if obj is not None and registered.get(tag) is not obj:
                if tag in registered:
                    sel.unregister(registered[tag])
                sel.register(obj, selectors.EVENT_READ, tag)
                registered[tag] = obj

        def unwatch(tag):
            if tag in registered:
                sel.unregister(registered.pop(tag))

        while not self._stop.is_set():
            with self._lock:
                proc = self._proc
                watch(self._inner, "inner")
                if proc is not None:
                    watch(proc.stdout, "out")
                else:
                    unwatch("out")
                if self._child is not None and len(self._pending) < HOST_BUFFER:
                    watch(self._child, "child")
                else:  # no board, or the host is not reading: the board's writes wait
                    unwatch("child")
                if self._server is not None:
                    watch(self._server, "server")
                if self._host is not None:
                    watch(self._host, "host")
            for key, _ in sel.select(0.002 if self._pending or self._to_board else 0.1):
                self._event(key.data, unwatch)
            with self._lock:
                self._flush_host()
                self._flush_board()
                self._supervise(unwatch)
        sel.close()

    def _event(self, tag, unwatch):
        with self._lock:
            if tag == "inner":
                conn, _ = self._inner.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.setblocking(False)
                if self._child is not None:
                    self._child.close()
                self._child = conn
                self._to_board = bytearray()
            elif tag == "out" and self._proc is not None:
                try:
                    data = self._proc.stdout.read()
                except (OSError, ValueError):
                    data = b""
                if data:
                    self._outbuf += data
                    while b"\n" in self._outbuf:
                        line, self._outbuf = self._outbuf.split(b"\n", 1)
                        self._board_line(line)
            elif tag == "child" and self._child is not None:
                try:
                    data = self._child.recv(65536)
                except BlockingIOError:
                    return
                except OSError:
                    data = b""
                if not data:
                    unwatch("child")
                    self._child.close()
                    self._child = None
                else:
                    self._to_host(data)
            elif tag == "server":
                conn, _ = self._server.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.setblocking(False)
                if isinstance(self._host, socket.socket):
                    unwatch("host")
                    self._host.close()  # one host at a time, like a serial port
                self._host = conn
            elif tag == "host":
                data = self._from_host()
                if data and self._child is not None:
                    # like a UART's receive buffer: what the board has not read when
                    # BOARD_BUFFER is full is lost (a flooding host must not block the
                    # relay, the resets or the watchdog)
                    self._to_board += data[:max(0, BOARD_BUFFER - len(self._to_board))]
                    self._flush_board()

    def _from_host(self):
        if isinstance(self._host, socket.socket):
            try:
                data = self._host.recv(65536)
            except BlockingIOError:
                return b""
            except OSError:
                data = b""
            if not data:
                self._host.close()
                self._host = None
            return data
        try:
            return os.read(self._host, 65536)
        except BlockingIOError:
            return b""
        except OSError:  # the pty's other end is not open (no host yet): wait
            time.sleep(0.01)
            return b""

    def _flush_board(self):
        if not self._to_board or self._child is None:
            return
        try:
            n = self._child.send(self._to_board)
        except BlockingIOError:
            return
        except OSError:
            n = len(self._to_board)  # the board is resetting: lost, as on a wire
        del self._to_board[:n]

    def _to_host(self, data):
        self._pending += data
        self._flush_host()

    def _flush_host(self):
        # like USB CDC: bytes wait here while the host's side is full, and the board's
        # own writes wait once HOST_BUFFER is held (the relay never blocks on a host
        # that stops reading, so resets and the watchdog go on)
        if not self._pending:
            return
        if self._host is None:
            self._pending = bytearray()  # no host: lost, like bytes on an unplugged cable
            return
        try:
            if isinstance(self._host, socket.socket):
                n = self._host.send(self._pending)
            else:
                n = os.write(self._host, self._pending)
        except BlockingIOError:
            return
        except OSError:
            n = len(self._pending)  # the host went away
        del self._pending[:n]

    def _supervise(self, unwatch):
        proc = self._proc
        if proc is None:
            return
        now = time.monotonic()
        if proc.poll() is not None:
            try:
                rest = proc.stdout.read() or b""
            except (OSError, ValueError):
                rest = b""
            for line in (self._outbuf + rest).split(b"\n"):
                if line.strip():
                    self._board_line(line)
            unwatch("out")
            self.resets["exit"] += 1
            self._exits.append(now)
            self._kill()
            if len(self._exits) == MAX_RESTARTS and now - self._exits[0] < 60:
                self.failure = ("the virtual board exited %d times within a minute; its last"
                                " output:\n%s" % (MAX_RESTARTS, self._error_text()))
                self._stop.set()
                self._ready.set()
                return
            self._boot("reset")
        elif self._wdt is not None and now - self._wdt[1] > self._wdt[0]:
            self.resets["watchdog"] += 1
            unwatch("out")
            self._kill()
            self._boot("watchdog")


def serve(args):
    """``itbsim board``: start a virtual board, print where it is, run until
    Ctrl-C. Returns the exit status."""
    stopping = threading.Event()

    def on_signal(signum, frame):
        stopping.set()

    log = print if args.verbose else None
    board = VirtualBoard(args.state, accelerate=args.accelerate, socket_port=args.socket,
                         provision=args.provision, dev=not args.release,
                         rtc_invalid=args.rtc_invalid, heapsize=args.heapsize, log=log)
    try:
        url = board.start()
    except LaunchError as e:
        print(f"itbsim board: {e}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"virtual board running on {url}", flush=True)
    print(f"  state in {board.state}; connect with: itbctl --port {url} status", flush=True)
    if args.provision:
        print("  provisioning button held: itbctl --port ... keys provision", flush=True)
    print("  Ctrl-C stops it", flush=True)
    try:
        while not stopping.is_set() and board.failure is None:
            stopping.wait(0.5)
    finally:
        board.stop()
    if board.failure:
        print(f"itbsim board: {board.failure}", file=sys.stderr)
        return 1
    r = board.resets
    print(f"virtual board stopped ({board.boots} boot(s); resets: {r['watchdog']} by the"
          f" watchdog, {r['exit']} by the board, {r['power_cut']} power cut(s))")
    return 0
