"""The firmware manifest hash: which code a board runs (``hello`` reports it; the
host computes the same from a checkout or a deploy folder to compare).

SHA-256 over every ``.py`` and ``.mpy`` file under a root, in sorted path order,
each as ``path NUL size NUL content``; paths are relative with ``/`` separators.
Hidden entries, ``__pycache__`` and the board's state directory ``data`` at the
root (the store and keys: never firmware, and a stray ``.py`` there must not make a
verified deploy fail) are skipped. Runs under MicroPython.
"""

import binascii
import hashlib

SUFFIXES = (".py", ".mpy")
STATE_DIR = "data"  # /data on a board: state, not firmware


def files(root, listdir, isdir, prefix=""):
    """Relative paths of the firmware files under ``root``, sorted. ``listdir(path)``
    and ``isdir(path)`` are the file system's (``os`` calls on a board)."""
    out = []
    base = root + "/" + prefix if prefix else root
    for name in sorted(listdir(base)):
        if name.startswith(".") or name == "__pycache__" or (not prefix and name == STATE_DIR):
            continue
        rel = prefix + name
        if isdir(root + "/" + rel):
            out += files(root, listdir, isdir, rel + "/")
        elif name.endswith(SUFFIXES[0]) or name.endswith(SUFFIXES[1]):
            out.append(rel)
    out.sort()
    return out


def digest(root, listdir, isdir, size, opener=open):
    """Hex SHA-256 of the firmware under ``root``; ``size(path)`` gives a file's
    length, ``opener(path, "rb")`` opens it (read in 512-byte pieces: small heap)."""
    h = hashlib.sha256()
    buf = bytearray(512)
    for rel in files(root, listdir, isdir):
        path = root + "/" + rel
        h.update(rel.encode() + b"\x00" + str(size(path)).encode() + b"\x00")
        f = opener(path, "rb")
        try:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(buf if n == len(buf) else buf[:n])
        finally:
            f.close()
    return binascii.hexlify(h.digest()).decode()
