"""tools/build_layer.py's checks: platform of compiled extensions, size limit, runtime agreement."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tools import build_layer

from .template_helpers import source_template

pytestmark = pytest.mark.unit


def _elf(path: Path, machine: int) -> None:
    """A 64-bit little-endian ELF header naming ``machine`` (enough for the check)."""
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + (3).to_bytes(2, "little") + machine.to_bytes(2, "little")
    path.write_bytes(header + bytes(44))


def test_an_extension_for_the_wrong_architecture_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    _elf(tmp_path / "pkg" / "fast.cpython-312-aarch64-linux-gnu.so", 0xB7)
    (tmp_path / "pkg" / "pure.py").write_text("x = 1\n")
    assert build_layer.check_layer(tmp_path, "arm64") > 0
    _elf(tmp_path / "pkg" / "slow.cpython-312-x86_64-linux-gnu.so", 0x3E)
    with pytest.raises(build_layer.LayerError, match="1 extensions are not built for arm64"):
        build_layer.check_layer(tmp_path, "arm64")


def test_a_layer_over_the_limit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(bytes(4096))
    with pytest.raises(build_layer.LayerError, match="unzipped layer is"):
        build_layer.check_layer(tmp_path, "arm64", limit=1024)


def test_the_spec_comes_from_the_template_and_functions_must_agree() -> None:
    template = source_template()
    assert build_layer.layer_spec(template) == {
        "runtime": "python3.12",
        "architecture": "arm64",
        "content": "layers/shared/",
    }
    changed = copy.deepcopy(template)
    changed["Resources"]["DumpRedisFunction"]["Properties"]["Architectures"] = ["x86_64"]
    with pytest.raises(build_layer.LayerError, match="DumpRedisFunction runs"):
        build_layer.layer_spec(changed)
