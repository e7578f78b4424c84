"""A ConfigMap volume laid out in a directory the way the kubelet writes it."""

from __future__ import annotations

import os
from pathlib import Path


class ConfigMapVolume:
    """Lays files out exactly as the kubelet's AtomicWriter does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        root.mkdir()

    def publish(self, files: dict[str, str]) -> None:
        self.generation += 1
        revision = f"..2026_11_29_15_00_{self.generation:02d}.{1000 + self.generation}"
        target = self.root / revision
        target.mkdir()
        for name, content in files.items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_text(content)
        tmp_link = self.root / "..data_tmp"
        tmp_link.symlink_to(revision)
        old = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        os.rename(tmp_link, self.root / "..data")  # the atomic swap
        for name in files:
            top = name.split("/")[0]
            link = self.root / top
            if not link.is_symlink():
                link.symlink_to(f"..data/{top}")
        tops = {n.split("/")[0] for n in files}
        for entry in self.root.iterdir():
            if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in tops:
                entry.unlink()
        if old:
            for path in sorted((self.root / old).rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            (self.root / old).rmdir()
