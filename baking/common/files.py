"""The project's one way to write an output file, and its one JSON reader.

Why one module: every output (GFF3, manifest, shards, tokens file, model folder, tokenizer, JSON
reports, plots, checkpoint metadata) must obey the same contract, and eight hand-written copies of
"temp file, rename" had drifted apart (no fsync, mode 0600, FIFOs and symlinks silently replaced,
an output allowed to overwrite its own input). The contract:

* ``check_output`` / ``check_output_dir`` run before any work (the CLIs call them right after
  parsing arguments): the destination must be creatable, and must not be one of the inputs.
* Writing goes to a temporary name in the destination folder, is fsynced, then renamed over the
  target, so a reader sees the old file or the new one, never half of one.
* A target that exists but is not a regular file (directory, FIFO, symlink, device) is refused,
  never replaced.
* The new file keeps an existing file's permission bits, else gets ``0666 & ~umask`` like
  ``open()``; ``tempfile`` alone would leave every output 0600.
* OS errors come out as ``OutputError(PATH, reason)``: one ``error: PATH: reason`` line.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from baking.common.errors import InputError, OutputError

PathLike = str | os.PathLike[str]


# ------------------------------------------------------------------------------------- checks


def _reason(exc: OSError) -> str:
    """``Permission denied`` -> ``permission denied`` (the project's lower-case reasons)."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "a file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "an unknown kind of file"


def input_problem(path: PathLike) -> str | None:
    """Why ``path`` cannot be read as an input file, or None: missing, or not a regular file
    (a FIFO would block the reader forever, a directory fails with a misleading message)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return _reason(exc)
    if stat.S_ISREG(st.st_mode):
        return None
    return f"not a regular file ({_kind(st.st_mode)})"


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either one missing: compare the names they resolve to
        return a.resolve() == b.resolve()


def path_key(path: PathLike) -> tuple:
    """What ``_same`` compares, as a hashable key: an existing file's device and inode (hard
    links and symlinks meet), else the path it resolves to. Lets a command with hundreds of
    outputs check them against each other and its inputs in linear time."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError:
        return ("path", str(p.resolve()))
    return ("inode", st.st_dev, st.st_ino)


def input_keys(inputs: Iterable[PathLike | None]) -> dict[tuple, PathLike]:
    """``path_key`` of each given input -> the input (for ``check_output``'s ``input_keys``)."""
    return {path_key(src): src for src in inputs if src is not None and str(src)}


def _refuse_inputs(path: Path, inputs: Iterable[PathLike | None] | dict[tuple, PathLike]) -> None:
    keys = inputs if isinstance(inputs, dict) else input_keys(inputs)
    src = keys.get(path_key(path))
    if src is not None:
        raise OutputError(path, f"is also an input ({src}); choose another output")


def _check_creatable_in(folder: Path, target: Path, probed: set[Path] | None = None) -> None:
    """``folder`` (created if missing) can hold ``target``: its nearest existing ancestor is a
    writable directory, and the first missing folder can be made (``probed``: folders already
    shown to be makeable in this check, so a hundred outputs in one new folder cost one probe)."""
    probe = folder
    while not probe.exists() and not probe.is_symlink():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(target, f"{probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(target, f"permission denied (cannot write in {probe})")
    if probe != folder and (probed is None or folder not in probed):
        _probe_mkdir(folder, probe, target)
        if probed is not None:
            probed.add(folder)


def _probe_mkdir(folder: Path, existing: Path, target: Path) -> None:
    """Create and remove the first missing folder under ``existing``: ``os.access`` says yes to
    root everywhere, also in ``/proc`` or on a read-only mount, where the real ``mkdir`` after the
    work would fail. Leaves nothing behind."""
    first = folder
    while first.parent != existing and first.parent != first:
        first = first.parent
    try:
        first.mkdir()
    except FileExistsError:  # made by someone else meanwhile: it exists, which is what we need
        return
    except OSError as exc:
        raise OutputError(target, f"cannot create folder {first}: {_reason(exc)}") from exc
    with suppress(OSError):
        first.rmdir()


def check_output(
    path: PathLike,
    inputs: Iterable[PathLike | None] | dict[tuple, PathLike] = (),
    probed: set[Path] | None = None,
) -> Path:
    """Raise ``OutputError`` unless ``path`` can be written as a regular file.

    Refused: an existing non-regular target (directory, FIFO, symlink, device), a folder that
    cannot be created or written, an output that is one of ``inputs`` (paths, or the
    ``input_keys`` of them when many outputs are checked against many inputs). Creates nothing.
    """
    p = Path(path)
    if not str(path):
        raise OutputError(p, "empty output path")
    _refuse_inputs(p, inputs)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        _check_creatable_in(p.parent, p, probed)
        return p
    except OSError as exc:  # e.g. ENOTDIR: a parent is a file; name that parent
        _check_creatable_in(p.parent, p)
        raise OutputError(p, _reason(exc)) from exc
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(p, f"not a regular file ({_kind(st.st_mode)})")
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise OutputError(p, f"permission denied (cannot write in {p.parent})")
    return p


def check_output_dir(
    path: PathLike, inputs: Iterable[PathLike | None] | dict[tuple, PathLike] = ()
) -> Path:
    """Raise ``OutputError`` unless ``path`` is, or can be created as, a writable folder."""
    p = Path(path)
    if not str(path):
        raise OutputError(p, "empty output path")
    _refuse_inputs(p, inputs)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        _check_creatable_in(p, p)  # the folder itself is the one to create
        return p
    except OSError as exc:
        _check_creatable_in(p.parent, p)
        raise OutputError(p, _reason(exc)) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(p, f"not a directory ({_kind(st.st_mode)})")
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutputError(p, "permission denied")
    return p


def check_distinct(paths: Iterable[PathLike | None]) -> None:
    """Two outputs of one command must not be the same file."""
    seen: dict[tuple, Path] = {}
    for raw in paths:
        if raw is None:
            continue
        p = Path(raw)
        key = path_key(p)
        if key in seen:
            raise OutputError(p, f"given twice as an output (also as {seen[key]})")
        seen[key] = p


# ----------------------------------------------------------------------------------- writing


def current_umask() -> int:
    """The process umask (read from /proc where possible: ``os.umask`` has to set it to read it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _target_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the rename is still done
        pass
    finally:
        os.close(fd)


def commit(tmp: PathLike, path: PathLike) -> Path:
    """Move a finished temporary file onto ``path``: fsync, permission bits, rename, fsync folder.

    For writers that stream into their own temporary file (the shard writer). The target is
    checked again (it may have become a FIFO or link since the preflight).
    """
    tmp, p = Path(tmp), Path(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputError(p, f"not a regular file ({_kind(st.st_mode)})")
    try:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, _target_mode(p))
        os.replace(tmp, p)
    except OSError as exc:
        raise OutputError(p, _reason(exc)) from exc
    _fsync_dir(p.parent)
    return p


@contextmanager
def atomic_path(path: PathLike, inputs: Iterable[PathLike | None] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it goes.

    For writers that want a file name (``savefig``, ``safetensors.save_file``,
    ``Tokenizer.save``): the temporary name ends in ``path``'s suffix, so ``.png`` stays ``.png``.
    """
    p = check_output(path, inputs)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=f".tmp{p.suffix}", dir=p.parent)
        os.close(fd)
    except OSError as exc:
        raise OutputError(p, _reason(exc)) from exc
    tmp = Path(name)
    try:
        try:
            yield tmp
        except OSError as exc:
            if exc.filename is not None and Path(exc.filename) != tmp:
                raise  # about another file (an input): its own name is the right one
            raise OutputError(p, _reason(exc)) from exc
        commit(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: PathLike, data: bytes, inputs: Iterable[PathLike | None] = ()) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring for the contract)."""
    with atomic_path(path, inputs) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text(path: PathLike, text: str, inputs: Iterable[PathLike | None] = ()) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"), inputs)


def write_json(
    path: PathLike, obj: Any, *, indent: int = 2, sort_keys: bool = False, default: Any = None
) -> Path:
    """Write ``obj`` as JSON (plus a final newline) to ``path`` atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default) + "\n"
    return write_text(path, text)


def copy_file(src: PathLike, dst: PathLike) -> Path:
    """Copy ``src`` onto ``dst`` atomically (a no-op when they are the same file)."""
    if _same(Path(src), Path(dst)):
        return Path(dst)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def make_temp_dir(out: PathLike) -> Path:
    """A new empty folder beside ``out`` to fill and then ``replace_dir`` onto ``out``.

    Its mode follows the umask (``mkdtemp`` alone gives 0700, which would make a shared model
    folder unreadable to other users).
    """
    o = Path(out)
    check_output_dir(o)
    try:
        o.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{o.name}.", suffix=".tmp", dir=o.parent))
        os.chmod(tmp, 0o777 & ~current_umask())
    except OSError as exc:
        raise OutputError(o, _reason(exc)) from exc
    return tmp


def replace_dir(tmp: PathLike, out: PathLike) -> Path:
    """Swap the finished folder ``tmp`` onto ``out``; an existing ``out`` is removed after the swap.

    The caller decides whether an existing ``out`` may be replaced; between the two renames a
    crash leaves ``out`` missing and ``.NAME.old`` holding the previous version.
    """
    t, o = Path(tmp), Path(out)
    old = o.with_name(f".{o.name}.old")
    try:
        if old.exists():
            shutil.rmtree(old)
        if o.is_symlink() or (o.exists() and not o.is_dir()):
            raise OutputError(o, "not a directory")
        if o.exists():
            os.replace(o, old)
        os.replace(t, o)
    except OSError as exc:
        raise OutputError(o, _reason(exc)) from exc
    _fsync_dir(o.parent)
    shutil.rmtree(old, ignore_errors=True)
    return o


# ----------------------------------------------------------------------------------- reading


MAX_JSON_BYTES = 64 << 20
"""Largest JSON metadata file read (manifest, configs, checkpoint records are kilobytes; a 200-genome
manifest is under 1 MB). Why a bound: a damaged or hostile multi-GB file would otherwise be read
whole into memory (several times over while parsing) before it could be refused."""

MAX_JSON_DEPTH = 64
"""Deepest nesting accepted (ours is at most ~6 levels). Why: a few thousand ``[`` make the parser,
or later any recursive walk (``deepcopy``, ``json.dumps``), raise ``RecursionError``."""


def _too_deep(obj: Any, limit: int) -> bool:
    """Whether ``obj`` nests containers deeper than ``limit`` (an iterative walk: no recursion)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def read_json(path: PathLike, what: str = "JSON", max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file; any problem is ``InputError`` located as ``PATH:LINE:COL: reason``.

    At most ``max_bytes`` are read and containers may nest at most ``MAX_JSON_DEPTH`` deep: these
    files are small metadata, so anything beyond is damaged (or hostile) and refused in one line.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise InputError(p, f"no such file (expected {what})") from exc
    except OSError as exc:
        raise InputError(p, _reason(exc)) from exc
    if len(raw) > max_bytes:
        raise InputError(p, f"not {what}: larger than {max_bytes >> 20} MiB (damaged?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(p, f"not {what}: not UTF-8 text") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(p, f"not valid {what}: {exc.msg}", exc.lineno, exc.colno) from exc
    except RecursionError:
        data = None
        deep = True
    else:
        deep = _too_deep(data, MAX_JSON_DEPTH)
    if deep:
        raise InputError(p, f"not {what}: nested more than {MAX_JSON_DEPTH} levels deep (damaged?)")
    return data
