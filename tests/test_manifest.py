"""The firmware manifest hash (firmware/itb/manifest.py): which code a board runs
(``hello`` reports it, issue 6). Checked against an independent computation of
the documented format: SHA-256 over ``path NUL size NUL content`` of every
``.py``/``.mpy`` file, sorted relative paths with ``/``, hidden entries and
``__pycache__`` skipped."""

import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from itb import manifest

TREE = {
    "main.py": b"import app\n",
    "app.py": b"# the app\n" * 100,
    "itb/__init__.py": b"",
    "itb/protocol.mpy": bytes(range(256)) * 3,  # > 512 bytes: several reads
    "itb/store.py": b"x = 1\n",
    "itb/sub/deep.py": b"\x00\x01",
    "board/virtual.mpy": b"M\x06",
    "a-b.py": b"sorts before a/",
    "a/z.py": b"z",
}
IGNORED = {
    "README.md": b"docs",
    "itb/notes.txt": b"n",
    "itb/protocol.pyc": b"c",
    "itb/py": b"no suffix",
    "itb/x.pyi": b"stub",
    ".hidden.py": b"hidden file",
    ".git/config.py": b"hidden directory",
    "itb/.cache/x.mpy": b"hidden sub-directory",
    "__pycache__/app.cpython-311.py": b"cache",
    "itb/__pycache__/store.mpy": b"cache",
}


def write_tree(root, files):
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def reference(root):
    """The documented digest, computed without the module: ``os.walk``, every
    component checked for a leading dot or ``__pycache__``."""
    rels = []
    for top, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for name in names:
            if name.startswith(".") or not name.endswith((".py", ".mpy")):
                continue
            rels.append(os.path.relpath(os.path.join(top, name), root).replace(os.sep, "/"))
    h = hashlib.sha256()
    for rel in sorted(rels):
        data = (root / rel).read_bytes()
        h.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest(), sorted(rels)


def digest(root):
    return manifest.digest(str(root), os.listdir, os.path.isdir, os.path.getsize)


def listing(root):
    return manifest.files(str(root), os.listdir, os.path.isdir)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "fw"
    write_tree(root, TREE)
    write_tree(root, IGNORED)
    return root


def test_digest_equals_the_documented_computation(tree):
    want, rels = reference(tree)
    assert listing(tree) == rels == sorted(TREE)
    assert digest(tree) == want
    assert digest(tree) == digest(tree)  # stable
    assert len(want) == 64 and int(want, 16) >= 0


def test_an_empty_tree_hashes_nothing(tmp_path):
    assert listing(tmp_path) == []
    assert digest(tmp_path) == hashlib.sha256().hexdigest()


@pytest.mark.parametrize("rel", sorted(TREE))
def test_one_byte_changes_the_digest(tree, rel):
    before = digest(tree)
    path = tree / rel
    data = bytearray(path.read_bytes() or b"\x00")
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    after = digest(tree)
    assert after != before and after == reference(tree)[0]


def test_a_rename_or_a_new_or_removed_file_changes_the_digest(tree):
    before = digest(tree)
    (tree / "itb/store.py").rename(tree / "itb/store2.py")
    assert digest(tree) != before and digest(tree) == reference(tree)[0]
    (tree / "itb/store2.py").rename(tree / "itb/store.py")
    assert digest(tree) == before
    (tree / "itb/sub/deep.py").rename(tree / "itb/deep.py")  # same name, other folder
    assert digest(tree) != before
    (tree / "itb/deep.py").rename(tree / "itb/sub/deep.py")
    (tree / "itb/sub/new.mpy").write_bytes(b"")
    assert digest(tree) != before
    (tree / "itb/sub/new.mpy").unlink()
    (tree / "app.py").unlink()
    assert digest(tree) != before and digest(tree) == reference(tree)[0]


def test_ignored_entries_do_not_change_the_digest(tree):
    before = digest(tree)
    for rel in IGNORED:
        (tree / rel).write_bytes(b"changed")
    (tree / "itb/__pycache__/new.py").write_bytes(b"new")
    (tree / ".git/objects.mpy").write_bytes(b"new")
    (tree / "docs").mkdir()
    (tree / "docs/index.html").write_bytes(b"<p>")
    assert digest(tree) == before


def test_size_and_content_are_separated_by_the_format(tmp_path):
    """The same bytes split differently between path, size and content give
    different digests (the NUL separators and the size field)."""
    a, b = tmp_path / "a", tmp_path / "b"
    write_tree(a, {"x.py": b"12", "y.py": b""})
    write_tree(b, {"x.py": b"1", "y.py": b"2"})
    assert digest(a) != digest(b)
    assert digest(a) == reference(a)[0] and digest(b) == reference(b)[0]


class _CountingFile:
    def __init__(self, path, closed):
        self.f = open(path, "rb")  # closed by close()
        self.closed = closed

    def readinto(self, buf):
        return self.f.readinto(buf)

    def close(self):
        self.f.close()
        self.closed.append(1)


def test_every_file_is_closed_also_when_reading_fails(tree):
    closed = []

    def opener(path, mode):
        assert mode == "rb"
        return _CountingFile(path, closed)

    assert manifest.digest(str(tree), os.listdir, os.path.isdir, os.path.getsize,
                           opener) == reference(tree)[0]
    assert len(closed) == len(TREE)

    class Failing(_CountingFile):
        def readinto(self, buf):
            raise OSError(5, "read error")

    closed.clear()
    with pytest.raises(OSError):
        manifest.digest(str(tree), os.listdir, os.path.isdir, os.path.getsize,
                        lambda path, mode: Failing(path, closed))
    assert closed == [1]


_NAME = st.text(alphabet="ab._-", min_size=1, max_size=4).filter(lambda n: n not in (".", ".."))
_REL = st.lists(_NAME, min_size=1, max_size=3).map("/".join)
_SUFFIX = st.sampled_from([".py", ".mpy", ".txt", ".pyc", ""])


@given(files=st.dictionaries(st.tuples(_REL, _SUFFIX), st.binary(max_size=1100), max_size=8))
def test_any_tree_hashes_like_the_documented_format(tmp_path_factory, files):
    """Invariant: for any tree of files (names with dots, dashes and hidden
    entries, any suffix, contents of any length), the listing and the digest
    equal the independent computation of the documented format (issue 6)."""
    root = tmp_path_factory.mktemp("tree")
    written = {}
    for (rel, suffix), data in files.items():
        path = rel + suffix
        # a path may not be both a file and a folder of the tree
        if any(p == path or p.startswith(path + "/") or path.startswith(p + "/")
               for p in written):
            continue
        written[path] = data
    write_tree(root, written)
    want, rels = reference(root)
    assert listing(root) == rels
    assert digest(root) == want
