"""File-system adapters for ``store.py`` (DESIGN principle 1: storage is injected).

The store uses five operations of MicroPython's ``os`` module on a mounted VFS:
``open(path, mode)`` (modes ``"rb"``, ``"wb"``, ``"ab"``; files offer ``read``,
``write``, ``flush``, ``close``), ``rename(old, new)``, ``remove(path)``,
``listdir(dir)`` and ``mkdir(dir)``. Any object with them is a file system here:

- on the Pico, the ``os`` module itself (the board's littlefs mounted at ``/``);
- in host tests and the simulator, a ``littlefs.LittleFS`` image (littlefs-python);
- on the virtual board, ``DirFS``: a directory, through ``os`` (CPython or the
  MicroPython unix port);
- in fast simulations and the property machine, ``MemoryFS``.

Paths are ``/``-separated and relative to the adapter's root.
"""

import os


class DirFS:
    """The directory ``root`` (created if missing) through the ``os`` module."""

    def __init__(self, root):
        self.root = root.rstrip("/")
        _makedirs(self.root)

    def _p(self, path):
        return self.root + "/" + path

    def open(self, path, mode):
        return open(self._p(path), mode)

    def rename(self, old, new):
        os.rename(self._p(old), self._p(new))

    def remove(self, path):
        os.remove(self._p(path))

    def listdir(self, path):
        return os.listdir(self._p(path))

    def mkdir(self, path):
        os.mkdir(self._p(path))


def exists(path):
    """True if ``path`` names a file or folder (through ``os``: a board's flash)."""
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def isdir(path):
    return os.stat(path)[0] & 0x4000 != 0


def size(path):
    return os.stat(path)[6]


def _makedirs(path):
    part = ""
    for name in path.split("/"):
        part = part + name + "/" if part or name else "/"
        if name:
            try:
                os.mkdir(part)
            except OSError:
                pass  # exists (or cannot be made: the first open says so)


class MemoryFS:
    """Files in memory with the durability of littlefs: written data becomes durable
    only when the file is flushed or closed, and ``rename``/``remove``/``mkdir`` are
    atomic and durable at once. ``power_cut()`` throws away everything not durable
    and closes every open file, as a reset does."""

    def __init__(self):
        self.durable = {}  # path -> bytes
        self.dirs = {"": 1}
        self.open_files = []

    def _dir_of(self, path):
        i = path.rfind("/")
        d = path[:i] if i >= 0 else ""
        if d not in self.dirs:
            raise OSError(2, "no such directory: " + d)
        return d

    def open(self, path, mode):
        self._dir_of(path)
        if mode == "rb":
            if path not in self.durable:
                raise OSError(2, "no such file: " + path)
            return _MemReader(self.durable[path])
        if mode == "wb":
            f = _MemWriter(self, path, b"")
        elif mode == "ab":
            f = _MemWriter(self, path, self.durable.get(path, b""))
        else:
            raise ValueError("mode must be rb, wb or ab")
        self.durable.setdefault(path, b"")  # littlefs: a created file survives, empty
        self.open_files.append(f)
        return f

    def rename(self, old, new):
        self._dir_of(new)
        if old not in self.durable:
            raise OSError(2, "no such file: " + old)
        self.durable[new] = self.durable.pop(old)

    def remove(self, path):
        if path not in self.durable:
            raise OSError(2, "no such file: " + path)
        del self.durable[path]

    def listdir(self, path):
        if path not in self.dirs:
            raise OSError(2, "no such directory: " + path)
        pre = path + "/" if path else ""
        names = []
        for p in self.durable:
            if p.startswith(pre) and "/" not in p[len(pre):]:
                names.append(p[len(pre):])
        for d in self.dirs:
            if d and d.startswith(pre) and "/" not in d[len(pre):]:
                names.append(d[len(pre):])
        return names

    def mkdir(self, path):
        if path in self.dirs:
            raise OSError(17, "exists: " + path)
        self._dir_of(path)
        self.dirs[path] = 1

    def power_cut(self):
        for f in self.open_files:
            f.closed = True
        self.open_files = []


class _MemReader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def read(self, n=-1):
        if n is None or n < 0:
            n = len(self.data) - self.pos
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def close(self):
        pass


class _MemWriter:
    def __init__(self, fs, path, base):
        self.fs = fs
        self.path = path
        self.buf = bytearray(base)
        self.synced = len(base)
        self.closed = False

    def write(self, data):
        if self.closed:
            raise OSError(5, "file closed (power cut)")
        self.buf += data
        return len(data)

    def flush(self):
        if self.closed:
            raise OSError(5, "file closed (power cut)")
        if self.path in self.fs.durable:
            self.fs.durable[self.path] = bytes(self.buf)
        self.synced = len(self.buf)

    def close(self):
        if not self.closed:
            self.flush()
            self.closed = True
            self.fs.open_files.remove(self)  # power_cut() closed and forgot the rest
