"""Installing a node as a service: `config init` and `systemd install`.

The wheel carries config/computenode.yaml and systemd/computenode.service as package data
(computenode/data/, symlinks in the source tree), so a host needs nothing but the wheel.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from computenode.cli.common import FAILED, OK, SYSTEM_CONFIG, UsageError, err

UNIT_NAME = "computenode.service"
UNIT_DIR = Path("/etc/systemd/system")
# The ExecStart of systemd/computenode.service; `systemd install` puts the installed script there.
TEMPLATE_EXEC = "/usr/local/bin/computenode run --config /etc/computenode/computenode.yaml"


def packaged(name: str) -> str:
    """The text of a file shipped in computenode/data/."""
    return resources.files("computenode").joinpath("data", name).read_text()


def entry_point() -> Path:
    """The `computenode` script of this installation: next to the interpreter (a venv's bin/),
    else the one on PATH. Not resolved: a venv's script is only right through its own path."""
    beside = Path(sys.executable).parent / "computenode"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside.absolute()
    found = shutil.which("computenode")
    if found is None:
        raise UsageError(
            "cannot find the installed `computenode` script (not next to "
            f"{sys.executable} nor on PATH); install the wheel first"
        )
    return Path(found).absolute()


def render_unit(executable: Path, config: Path) -> str:
    template = packaged(UNIT_NAME)
    if TEMPLATE_EXEC not in template:  # the template and this module must change together
        raise RuntimeError(f"{UNIT_NAME} no longer has ExecStart={TEMPLATE_EXEC}")
    return template.replace(TEMPLATE_EXEC, f"{executable} run --config {config}")


def _write(path: Path, text: str, force: bool, what: str) -> bool:
    if path.exists() and not force:
        err(f"computenode: {path} exists; not overwriting it (--force replaces it)")
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o644)
    except OSError as exc:
        err(f"computenode: cannot write {what} {path}: {exc.strerror}")
        return False
    print(f"wrote {what} {path}")
    return True


def _under(root: str | None, path: Path) -> Path:
    return Path(root) / path.relative_to("/") if root else path


def cmd_config_init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not _write(path, packaged("computenode.yaml"), args.force, "config"):
        return FAILED
    print(f"check it after editing: computenode config validate {path}")
    return OK


def cmd_systemd_install(args: argparse.Namespace) -> int:
    config = Path(args.config).absolute()
    unit = render_unit(entry_point(), config)
    if args.print_unit:
        print(unit, end="")
        return OK
    path = _under(args.root, Path(args.unit_dir) / UNIT_NAME)
    if not _write(path, unit, args.force, "unit"):
        return FAILED
    if not _under(args.root, config).exists():
        where = _under(args.root, config)
        print(f"no config at {where} yet: computenode config init {where}")
    print("then: systemctl daemon-reload && systemctl enable --now computenode")
    return OK


def add_config_commands(config_sub: Any) -> None:
    p = config_sub.add_parser("init", help="write the documented default config (every option)")
    p.add_argument(
        "path", metavar="PATH", nargs="?", default=str(SYSTEM_CONFIG), help=f"default {SYSTEM_CONFIG}"
    )
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_config_init)


def add_commands(sub: Any) -> None:
    p = sub.add_parser("systemd", help="install the node as a systemd service")
    action = p.add_subparsers(dest="systemd_command", metavar="ACTION", required=True)
    i = action.add_parser("install", help=f"write {UNIT_NAME} with ExecStart set to this installation")
    i.add_argument(
        "--config", metavar="FILE", default=str(SYSTEM_CONFIG), help=f"for ExecStart; default {SYSTEM_CONFIG}"
    )
    i.add_argument("--unit-dir", metavar="DIR", default=str(UNIT_DIR), help=f"default {UNIT_DIR}")
    i.add_argument("--root", metavar="DIR", help="write below DIR instead of / (images, tests)")
    i.add_argument("--print-unit", action="store_true", help="print the unit to stdout and write nothing")
    i.add_argument("--force", action="store_true", help="replace an existing unit file")
    i.set_defaults(func=cmd_systemd_install)
