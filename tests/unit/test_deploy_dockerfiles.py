"""The operator and sidecar Dockerfiles, checked for structure (no Docker engine runs here).

What must hold for both images: two stages from the same slim Python base; dependencies
installed strictly from uv.lock without dev tools; the final stage receives the virtual
environment and nothing else from the build stage; it runs as a numeric non-root user
with an exec-form entrypoint that is the project's console script; the command it runs
is a real `auditlock` subcommand.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {"operator": ROOT / "operator", "sidecar": ROOT / "sidecar"}
VENV = "/opt/venv"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """-> (global ARG defaults, stages). Joins `\\` continuations, drops comments."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, flags=re.IGNORECASE)
            assert match, f"cannot parse FROM {rest!r}"
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), match[1])
            stages.append(Stage(base=base, name=match[2]))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def load(image: str) -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile((IMAGES[image] / "Dockerfile").read_text())


@pytest.fixture(params=sorted(IMAGES))
def image(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_parser_understands_continuations_and_stages() -> None:
    args, stages = parse_dockerfile(
        "ARG BASE=python:3.12-slim\n# c\nFROM ${BASE} AS b\nRUN a \\\n  # inner\n  b\n"
        "FROM ${BASE}\nUSER 1000\n"
    )
    assert args == {"BASE": "python:3.12-slim"}
    assert [s.base for s in stages] == ["python:3.12-slim", "python:3.12-slim"]
    assert stages[0].all("RUN") == ["a  b"]
    assert stages[1].all("USER") == ["1000"]


def test_multi_stage_from_one_slim_python_base(image: str) -> None:
    _, stages = load(image)
    assert len(stages) >= 2, "a build stage and a final stage"
    bases = {s.base for s in stages}
    assert len(bases) == 1, f"build and final stages must share the base (venv paths): {bases}"
    base = bases.pop()
    assert re.fullmatch(r"python:3\.1[1-9][.\d]*-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base
    # The base's Python must satisfy the project's requires-python.
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minor = int(base.split(":")[1].split(".")[1].split("-")[0])
    assert requires == ">=3.11" and minor >= 11


def test_dependencies_come_from_the_lock_file_without_dev_tools(image: str) -> None:
    _, stages = load(image)
    build = stages[0]
    syncs = [r for r in build.all("RUN") if "uv sync" in r]
    assert syncs, "dependencies are installed with uv sync"
    for run in syncs:
        assert "--frozen" in run or "--locked" in run, f"not pinned to uv.lock: {run}"
        assert "--no-dev" in run, f"dev dependencies would be installed: {run}"
    assert any("uv.lock" in c for c in build.all("COPY")), "uv.lock is copied in"
    assert not any("pip install" in r and "uv" not in r for r in build.all("RUN"))
    env = " ".join(build.all("ENV"))
    assert f"UV_PROJECT_ENVIRONMENT={VENV}" in env
    assert "--no-editable" in syncs[-1], "the project itself must not point back at /src"


def test_final_stage_takes_only_the_venv_from_the_build_stage(image: str) -> None:
    _, stages = load(image)
    build, final = stages[0], stages[-1]
    assert build.name, "the build stage is named, so COPY --from names it"
    copies = final.all("COPY")
    from_build = [c for c in copies if "--from=" in c]
    assert from_build, "the final stage copies the venv from the build stage"
    for copy in copies:
        parts = shlex.split(copy)
        flags = [p for p in parts if p.startswith("--")]
        paths = [p for p in parts if not p.startswith("--")]
        assert flags == [f"--from={build.name}"], f"unexpected COPY into the final image: {copy}"
        assert paths == [VENV, VENV], f"only {VENV} may leave the build stage: {copy}"
    # Nothing in the final stage fetches packages or tools on its own.
    for run in final.all("RUN"):
        assert not re.search(r"\b(pip|uv|apt-get|curl|wget)\b", run), run


def test_runs_as_numeric_non_root_user(image: str) -> None:
    _, stages = load(image)
    users = stages[-1].all("USER")
    assert users, "the final stage sets USER"
    user = users[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER must be a numeric non-root uid: {user}"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    # The chart and the injected collector run as the same uid.
    values = (ROOT / "charts" / "auditlock" / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in values
    from auditlock.operator.injection import InjectionSettings

    assert InjectionSettings(image="x", native_sidecar=True).run_as_user == int(uid)


def test_read_only_root_filesystem_friendly(image: str) -> None:
    _, stages = load(image)
    env = " ".join(stages[-1].all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "UV_COMPILE_BYTECODE=1" in " ".join(stages[0].all("ENV")), "bytecode built ahead"
    assert f"PATH={VENV}/bin:" in env, "the injected command `auditlock ...` must resolve"


def test_entrypoint_is_the_console_script_in_exec_form(image: str) -> None:
    _, stages = load(image)
    final = stages[-1]
    entrypoint = json.loads(final.all("ENTRYPOINT")[-1])
    assert entrypoint == [f"{VENV}/bin/auditlock"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["auditlock"] == "auditlock.cli.main:main"
    cmd = json.loads(final.all("CMD")[-1])
    assert cmd[0] == image, f"the {image} image runs `auditlock {image} ...` by default"
    # ... and that is a command the real CLI accepts.
    from auditlock.cli.main import build_parser

    assert callable(build_parser().parse_args(cmd).func)


def test_dockerignore_sends_only_what_the_build_copies(image: str) -> None:
    ignore = (IMAGES[image] / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:1] == ["*"], "everything is excluded first"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    _, stages = load(image)
    copied: set[str] = set()
    for copy in stages[0].all("COPY"):
        copied.update(p.rstrip("/").lstrip("./") for p in shlex.split(copy)[:-1])
    assert copied <= allowed, f"the build copies files the context does not send: {copied}"
    assert ".venv" not in allowed and "tests" not in allowed


def test_readme_documents_the_build_command(image: str) -> None:
    readme = (IMAGES[image] / "README.md").read_text()
    assert f"docker build -f {image}/Dockerfile" in readme
