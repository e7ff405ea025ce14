"""Build the Lambda layer as ``sam build`` would, for the runtime and architecture it declares.

    .venv/bin/python tools/build_layer.py [--out DIR] [--keep]     (make layer, part of make test)

Reads ``SharedLayer`` from template.yaml (``BuildMethod`` python3.X, ``BuildArchitecture``,
``ContentUri``) and checks that every function runs on that runtime and architecture. Then it
installs the layer's pinned requirements with ``pip install --platform manylinux2014_<arch>
--only-binary=:all: --python-version 3.X``, as SAM does when it cannot build in a container,
copies the runtime package next to them under ``python/``, and fails when:

- a pinned dependency (or one it pulls in) has no wheel for that platform and Python;
- a compiled extension in the layer is not built for the declared architecture (ELF header);
- the unzipped layer exceeds Lambda's 250 MB limit for a function and its layers together.

It prints the layer's size, and its largest packages, either way. Needs the network to PyPI
(pip's cache makes later runs fast); nothing is deployed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from servalsheets_backup_local.testing.template_file import load_template

REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDA_UNZIPPED_LIMIT_BYTES = 250 * 1024 * 1024
PLATFORMS = {"arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}
ELF_MACHINES = {"arm64": 0xB7, "x86_64": 0x3E}  # e_machine: EM_AARCH64, EM_X86_64


class LayerError(Exception):
    """The layer cannot be built for its declared platform, or is too large."""


def layer_spec(template: dict[str, Any]) -> dict[str, str]:
    """Runtime, architecture and content folder of SharedLayer; every function must match."""
    resources = template["Resources"]
    layer = resources["SharedLayer"]
    runtime = layer["Metadata"]["BuildMethod"]
    architecture = layer["Metadata"]["BuildArchitecture"]
    globals_ = template.get("Globals", {}).get("Function", {})
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        properties = {**globals_, **resource.get("Properties", {})}
        if properties.get("Runtime") != runtime or properties.get("Architectures") != [architecture]:
            raise LayerError(
                f"{name} runs {properties.get('Runtime')} on {properties.get('Architectures')}, "
                f"but SharedLayer is built for {runtime} on {architecture}"
            )
    return {"runtime": runtime, "architecture": architecture, "content": layer["Properties"]["ContentUri"]}


def install_requirements(requirements: Path, target: Path, runtime: str, architecture: str) -> None:
    """pip-install the pinned requirements as wheels for the Lambda platform, or raise."""
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--platform", PLATFORMS[architecture], "--only-binary=:all:",
        "--python-version", runtime.removeprefix("python"), "--implementation", "cp",
        "--target", str(target), "-r", str(requirements),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - pip, fixed args
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        raise LayerError(
            f"no {PLATFORMS[architecture]} wheel for {runtime} of a layer dependency: "
            + (" / ".join(errors) or done.stderr[-800:])
        )


def layer_sources(content: Path) -> list[Path]:
    """The files ``sam build`` takes from ContentUri (not caches, not pip's local egg-info)."""
    return sorted(
        path
        for path in content.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and not any(part.endswith(".egg-info") for part in path.parts)
    )


def copy_package(content: Path, target: Path) -> None:
    """Copy the runtime package (the sources under a folder; requirements.txt is installed)."""
    for source in layer_sources(content):
        relative = source.relative_to(content)
        if len(relative.parts) > 1:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)


def elf_machine(path: Path) -> int | None:
    """The ELF e_machine of ``path``, or None when it is not an ELF file."""
    header = path.read_bytes()[:20]
    if header[:4] != b"\x7fELF":
        return None
    order = "little" if header[5] == 1 else "big"
    return int.from_bytes(header[18:20], order)


def foreign_binaries(root: Path, architecture: str) -> list[str]:
    """Compiled extensions under ``root`` that are not built for ``architecture``."""
    wanted = ELF_MACHINES[architecture]
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*.so*")
        if path.is_file() and elf_machine(path) not in (None, wanted)
    )


def sizes(root: Path) -> tuple[int, Counter[str]]:
    """Total bytes under ``root`` and bytes per top-level entry."""
    per_entry: Counter[str] = Counter()
    for path in root.rglob("*"):
        if path.is_file():
            per_entry[path.relative_to(root).parts[0]] += path.stat().st_size
    return sum(per_entry.values()), per_entry


def check_layer(python_dir: Path, architecture: str, limit: int = LAMBDA_UNZIPPED_LIMIT_BYTES) -> int:
    """Raise LayerError for foreign binaries or a layer over ``limit``; return its size."""
    foreign = foreign_binaries(python_dir, architecture)
    if foreign:
        raise LayerError(f"{len(foreign)} extensions are not built for {architecture}: {foreign[:5]}")
    total, _ = sizes(python_dir)
    if total > limit:
        raise LayerError(
            f"the unzipped layer is {total / 2**20:.1f} MiB, over Lambda's {limit / 2**20:.0f} MiB"
        )
    return total


def build(out: Path) -> str:
    """Build into ``out`` (emptied first); returns the report."""
    spec = layer_spec(load_template(REPO_ROOT / "template.yaml"))
    content = REPO_ROOT / spec["content"]
    if out.exists():
        shutil.rmtree(out)
    python_dir = out / "python"
    install_requirements(content / "requirements.txt", python_dir, spec["runtime"], spec["architecture"])
    copy_package(content, python_dir)
    total = check_layer(python_dir, spec["architecture"])
    _, per_entry = sizes(python_dir)
    largest = ", ".join(f"{name} {size / 2**20:.1f}" for name, size in per_entry.most_common(6))
    return (
        f"layer built for {spec['runtime']} on {spec['architecture']} ({PLATFORMS[spec['architecture']]}): "
        f"{total / 2**20:.1f} MiB unzipped of Lambda's {LAMBDA_UNZIPPED_LIMIT_BYTES / 2**20:.0f} MiB; "
        f"largest (MiB): {largest}"
    )


def main(argv: list[str]) -> int:
    """Command line: build, print the report; exit 1 with the reason when the layer is unusable."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="where to build (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the built layer")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="ssbk-layer-")) / "layer"
    try:
        print(build(out))
    except LayerError as exc:
        print(f"layer check failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
