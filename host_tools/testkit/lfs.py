"""A real littlefs image for the store (``littlefs-python``), with flash-operation
counting and power cuts.

``PICO`` is the geometry of the Pico's MicroPython file system as we read it
(rp2 ``_boot.py`` mounts ``VfsLfs2(bdev, progsize=256)``; ``extmod/vfs_lfsx.c``
sets ``block_cycles`` 100, ``cache_size`` 4 x max(read, prog) and read size and
lookahead 32): 1408 KiB in 4 KiB erase blocks.

``FlashContext`` is the block device: it counts programmed bytes, program
operations and erases per block, can log every operation (``log``, ``on_op``;
``apply_op`` replays one onto an image) and can cut
the power at operation ``cut_at``: that operation is not performed (or, with
``half=True``, a program writes only the first half of its bytes: a
half-programmed page) and it and every later operation fail with LFS_ERR_IO, so
littlefs-python raises ``LittleFSError`` on the call in progress and nothing more
reaches the image (``powered`` is False).

``LfsFS`` adapts a ``littlefs.LittleFS`` to the store's file-system interface
(``itb/fs.py``): littlefs-python's ``"ab"`` does not create a missing file and its
root is ``"/"``.
"""

import littlefs
from littlefs.errors import LittleFSError

PICO = {"block_size": 4096, "block_count": 352, "prog_size": 256, "read_size": 32,
        "cache_size": 1024, "lookahead_size": 32, "block_cycles": 100}


LFS_ERR_IO = -5


class FlashContext(littlefs.UserContext):
    def __init__(self, size, buffer=None):
        if buffer is None:
            super().__init__(buffsize=size)
        else:
            super().__init__(buffer=bytearray(buffer))
        self.ops = 0
        self.prog_bytes = 0
        self.progs = 0
        self.erases = 0
        self.erase_count = {}
        self.cut_at = -1
        self.half = False
        self.powered = True
        self.log = None  # when a list: every operation, ("p", block, off, data) / ("e", block)
        self.on_op = None  # when set: called before every operation

    def _cut(self, cfg, block, off, data):
        if not self.powered:
            return 1
        if self.on_op is not None:
            self.on_op()
        if self.log is not None:
            self.log.append(("e", block) if data is None else ("p", block, off, bytes(data)))
        if self.ops == self.cut_at:
            self.powered = False
            if data is not None and self.half:
                start = block * cfg.block_size + off
                self.buffer[start:start + len(data) // 2] = data[: len(data) // 2]
            return 1
        self.ops += 1
        return 0

    def read(self, cfg, block, off, size):
        start = block * cfg.block_size + off  # (the base class logs every call: slow)
        return self.buffer[start:start + size]

    def prog(self, cfg, block, off, data):
        if self._cut(cfg, block, off, data):
            return LFS_ERR_IO
        self.progs += 1
        self.prog_bytes += len(data)
        start = block * cfg.block_size + off
        self.buffer[start:start + len(data)] = data
        return 0

    def erase(self, cfg, block):
        if self._cut(cfg, block, 0, None):
            return LFS_ERR_IO
        self.erases += 1
        self.erase_count[block] = self.erase_count.get(block, 0) + 1
        start = block * cfg.block_size
        self.buffer[start:start + cfg.block_size] = b"\xff" * cfg.block_size
        return 0


def apply_op(buffer, op, block_size, half=False):
    """Apply one logged operation to an image ``buffer`` (bytearray); ``half``: a
    program writes only the first half of its bytes (a half-programmed page)."""
    if op[0] == "e":
        buffer[op[1] * block_size:(op[1] + 1) * block_size] = b"\xff" * block_size
    else:
        data = op[3][: len(op[3]) // 2] if half else op[3]
        start = op[1] * block_size + op[2]
        buffer[start:start + len(data)] = data


class LfsFS:
    """``littlefs.LittleFS`` as the store's file system. Errors are ``OSError``, as
    MicroPython's VFS raises them (littlefs-python raises its own class)."""

    def __init__(self, lfs):
        self.lfs = lfs
        self.files = []

    def open(self, path, mode):
        try:
            if mode == "ab":
                try:
                    f = self.lfs.open(path, "ab", buffering=0)
                except FileNotFoundError:  # littlefs-python's "ab" does not create
                    f = self.lfs.open(path, "wb", buffering=0)
            else:
                f = self.lfs.open(path, mode, buffering=0)
        except LittleFSError as e:
            raise OSError(5, str(e)) from e
        self.files = [x for x in self.files if not x.closed]
        self.files.append(f)
        return _File(f)

    def abandon(self):
        """After a power cut: forget the open files without touching littlefs (closing
        a file whose operation failed trips an assertion in littlefs)."""
        for f in self.files:
            setattr(f, "__IOBase_closed", True)
        self.files = []

    def rename(self, old, new):
        _call(self.lfs.rename, old, new)

    def remove(self, path):
        _call(self.lfs.remove, path)

    def listdir(self, path):
        return _call(self.lfs.listdir, path or "/")

    def mkdir(self, path):
        _call(self.lfs.mkdir, path)


def _call(fn, *args):
    try:
        return fn(*args)
    except LittleFSError as e:
        raise OSError(5, str(e)) from e


class _File:
    def __init__(self, f):
        self.f = f

    def read(self, n=-1):
        return _call(self.f.read, n)

    def write(self, data):
        return _call(self.f.write, data)

    def flush(self):
        _call(self.f.flush)

    def close(self):
        _call(self.f.close)


def make(geometry=None, buffer=None, mount=True):
    """``(LfsFS, FlashContext)`` over a fresh image (formatted) or ``buffer``
    (mounted as it is)."""
    g = dict(PICO if geometry is None else geometry)
    ctx = FlashContext(g["block_size"] * g["block_count"], buffer)
    if buffer is None:
        lfs = littlefs.LittleFS(context=ctx, mount=False, **g)
        lfs.format()
        lfs.mount()
    else:
        lfs = littlefs.LittleFS(context=ctx, mount=mount, **g)
    return LfsFS(lfs), ctx
