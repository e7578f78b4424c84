"""From the validating front end to the lean collector process.

`auditlock sidecar --config FILE` validates the file with pydantic, then replaces itself
(`exec`, same PID, so the container's PID 1 and its signals stay put) with
`python -m auditlock.sidecar.handoff --validated-config-fd N`. The new process reads
the validated config from an anonymous in-memory file (memfd: the config may hold a
Forward shared key, so not argv or the environment) into the same frozen dataclasses,
without importing pydantic. pydantic and its schema would otherwise stay resident for
the life of the pod, in the collector's memory limit (docs/benchmarks.md, "Import
costs").

Where memfd is not available (not Linux) the front end runs the collector itself.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auditlock.sidecar.config import SidecarConfig, config_json

FD_OPTION = "--validated-config-fd"


def exec_collector(config: SidecarConfig) -> None:
    """Replace this process with the lean collector; returns only when that cannot be."""
    if not hasattr(os, "memfd_create") or not sys.executable:
        return
    fd = os.memfd_create("auditlock-sidecar-config", 0)
    os.write(fd, config_json(config))
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", "auditlock.sidecar.handoff", FD_OPTION, str(fd)]
    try:
        os.execv(sys.executable, argv)
    except OSError as exc:  # e.g. the interpreter path is gone: run in this process
        os.close(fd)
        print(f"auditlock sidecar: cannot exec {sys.executable}: {exc}; running the "
              "collector in the front end's process", file=sys.stderr)  # fmt: skip


def config_from_validated(data: dict[str, Any]) -> SidecarConfig:
    """Rebuild the dataclasses from `config_json` output, trusting its values.

    Only the front end's output comes here, so values are not checked again; a key
    that names no field still fails (TypeError), which catches a front end and a
    collector of different versions.
    """
    config = _build(SidecarConfig, data)
    assert isinstance(config, SidecarConfig)
    return config


def _build(hint: Any, value: Any) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        hints = _field_types(hint)
        unknown = sorted(set(value) - set(hints))
        if unknown:
            raise TypeError(f"{hint.__name__} has no field {', '.join(unknown)}")
        return hint(**{name: _build(hints[name], item) for name, item in value.items()})
    if typing.get_origin(hint) is list:
        (item_hint,) = typing.get_args(hint)
        return [_build(item_hint, item) for item in value]
    if hint is Path:
        return Path(value)
    if value is not None and set(typing.get_args(hint)) == {Path, type(None)}:
        return Path(value)  # Path | None
    if hint is float:
        return float(value)  # JSON may spell 20.0 as 20
    return value  # str, int, bool, a Literal, X | None (None here), dict[str, Any]


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)  # Annotated constraints stripped


def _read_fd(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _without_charset_detection() -> None:
    # requests imports charset-normalizer (docs/benchmarks.md, "Import costs") to guess
    # the encoding of text responses. The collector reads only bytes and JSON from its
    # destinations, and requests falls back to UTF-8 without it, which it supports and
    # warns about.
    import warnings

    sys.modules.setdefault("charset_normalizer", None)  # type: ignore[arg-type]
    sys.modules.setdefault("chardet", None)  # type: ignore[arg-type]
    warnings.filterwarnings("ignore", message="Unable to find acceptable character detection")


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] != FD_OPTION:
        print(
            f"usage: python -m auditlock.sidecar.handoff {FD_OPTION} N "
            "(started by `auditlock sidecar --config FILE`, not by hand)",
            file=sys.stderr,
        )
        return 2
    config = config_from_validated(json.loads(_read_fd(int(argv[1]))))
    _without_charset_detection()
    from auditlock.sidecar.app import main as run_collector

    return run_collector(config)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
