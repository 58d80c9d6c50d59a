"""Atomic writes, the one mechanism every writer of shardplan uses (plan directories, forecasts, the demo
data, benchmark results): each file is staged under a temporary name beside its target, flushed to
disk, then renamed over it, so a reader never sees half a file and an interrupted run leaves the old
one in place. A set of files lands all staged first, then renamed in order."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import polars as pl


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _stage(target: Path, payload: bytes) -> Path:
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False)
    staging = Path(handle.name)
    try:
        with handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(staging, 0o666 & ~_current_umask())  # temporary files are private; ours are ordinary files
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return staging


def write_all_atomically(out_dir: str | Path, contents: dict[str, bytes]) -> None:
    """Stage every file (names relative to `out_dir`) under a temporary name beside its target, then rename
    them in order. On failure the staged files and the folders this call created are removed again."""
    out_dir = Path(out_dir)
    staged: list[tuple[Path, Path]] = []
    created: list[Path] = []
    try:
        for name, payload in contents.items():
            target = out_dir / name
            missing = [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]
            target.parent.mkdir(parents=True, exist_ok=True)
            created += [folder for folder in missing if folder not in created]
            staged.append((_stage(target, payload), target))
        while staged:
            staging, target = staged[0]
            os.replace(staging, target)
            staged.pop(0)
    except BaseException:
        for staging, _ in staged:
            staging.unlink(missing_ok=True)
        for folder in sorted(created, key=lambda folder: len(folder.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def write_atomically(path: str | Path, payload: bytes | str) -> Path:
    """One file, atomically."""
    path = Path(path)
    write_all_atomically(path.parent, {path.name: payload.encode() if isinstance(payload, str) else payload})
    return path


def parquet_bytes(frame: pl.DataFrame, **options: object) -> bytes:
    """A frame serialised as Parquet in memory (`options` go to polars' write_parquet)."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer, **options)
    return buffer.getvalue()


def write_parquet_atomically(frame: pl.DataFrame, path: str | Path, **options: object) -> Path:
    """One Parquet file, atomically (`options` go to polars' write_parquet)."""
    return write_atomically(path, parquet_bytes(frame, **options))


def write_table_atomically(frame: pl.DataFrame, path: str | Path) -> Path:
    """One table, atomically: Parquet when the name ends in .parquet, else CSV."""
    path = Path(path)
    return write_atomically(path, parquet_bytes(frame) if path.suffix == ".parquet" else frame.write_csv())
