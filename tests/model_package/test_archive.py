"""Package zips: a good one unpacks with every byte checked; each kind of malicious or damaged
one is refused with one line naming the member, and leaves nothing behind."""

from __future__ import annotations

import io
import json
import pickle
import stat
import zipfile
from pathlib import Path

import pytest
import torch

from pfseg_pipeline.cli.common import run
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.model_package.archive import Limits, check_package, extract_package, unpacked
from pfseg_pipeline.model_package.manifest import MANIFEST, read_manifest

from .conftest import members_of, repackage

WEIGHTS = "fold_0/checkpoint_final.safetensors"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _declare_size(path: Path, name: str, size: int) -> None:
    """Patch the zip's central directory so that `name` claims `size` bytes unpacked."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        n, m, k = (int.from_bytes(data[at + o:at + o + 2], "little") for o in (28, 30, 32))
        if bytes(data[at + 46:at + 46 + n]) == name.encode():
            data[at + 24:at + 28] = size.to_bytes(4, "little")
        at = data.find(b"PK\x01\x02", at + 46 + n + m + k)
    path.write_bytes(bytes(data))


def _with_link(source: Path, target: Path) -> Path:
    """`source` plus a symbolic-link entry fold_0/link.json -> /etc/passwd."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            new.writestr(info, old.read(info))
        link = zipfile.ZipInfo("fold_0/link.json")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        new.writestr(link, "/etc/passwd")
    return target


def _torch_save_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2)}, buffer)
    return buffer.getvalue()


def _bomb(members: dict) -> None:
    members["fingerprint.json"] = b"[" + b" " * (20 * 2 ** 20) + b"]"   # valid JSON, packs ~1000x


def _oversize(path: Path) -> Path:
    """A package whose MODEL_CARD.md declares (in the zip and in the manifest) 3 GB unpacked."""
    def claim(members):
        manifest = json.loads(members[MANIFEST])
        manifest["files"]["MODEL_CARD.md"]["bytes"] = 3_000_000_000
        members[MANIFEST] = json.dumps(manifest).encode()
    repackage(path, path, claim, relist=False)
    _declare_size(path, "MODEL_CARD.md", 3_000_000_000)
    return path


# (id, how to make the bad zip from the good one, the words of the one-line refusal)
MALICIOUS = [
    ("traversal", lambda src, dst: repackage(src, dst, lambda m: m.update({"../evil.json": b"{}"})),
     "member '../evil.json' climbs out of the package"),
    ("nested-traversal", lambda src, dst: repackage(src, dst, lambda m: m.update({"fold_0/../../x.md": b""})),
     "climbs out of the package"),
    ("absolute", lambda src, dst: repackage(src, dst, lambda m: m.update({"/tmp/evil.json": b"{}"})),
     "member '/tmp/evil.json' is an absolute path"),
    ("drive", lambda src, dst: repackage(src, dst, lambda m: m.update({"C:/evil.json": b"{}"})),
     "is an absolute path"),
    ("backslash", lambda src, dst: repackage(src, dst, lambda m: m.update({"..\\evil.json": b"{}"})),
     "has a backslash or NUL in its name"),
    ("hidden", lambda src, dst: repackage(src, dst, lambda m: m.update({".bashrc.json": b"{}"})),
     "has a name outside"),
    ("symlink", _with_link, "member 'fold_0/link.json' is a symbolic link"),
    ("pt-member", lambda src, dst: repackage(src, dst, lambda m: m.update(
        {"fold_0/checkpoint_final.pt": _torch_save_bytes()})), "is a pickle file (.pt)"),
    ("pkl-member", lambda src, dst: repackage(src, dst, lambda m: m.update({"notes.pkl": pickle.dumps(1)})),
     "is a pickle file (.pkl)"),
    ("pickle-as-weights", lambda src, dst: repackage(src, dst, lambda m: m.update(
        {WEIGHTS: pickle.dumps({"weight": [0.0]}, protocol=4)})),
     f"member '{WEIGHTS}' holds a pickle stream"),
    ("torch-save-as-weights", lambda src, dst: repackage(src, dst, lambda m: m.update(
        {WEIGHTS: _torch_save_bytes()})), "holds a zip archive (a torch.save file?)"),
    ("oversize", lambda src, dst: _oversize(repackage(src, dst, lambda m: None)),
     "member 'MODEL_CARD.md' declares 3000000000 bytes unpacked, over the limit"),
    ("zip-bomb", lambda src, dst: repackage(src, dst, _bomb), "its packed size (at most 100x: a zip bomb?)"),
    ("unknown-type", lambda src, dst: repackage(src, dst, lambda m: m.update({"run.sh": b"rm -rf ~"})),
     "has a file type pfseg packages never hold (.sh)"),
]


@pytest.mark.parametrize("make, words", [m[1:] for m in MALICIOUS], ids=[m[0] for m in MALICIOUS])
def test_a_malicious_package_is_refused_in_one_line_and_leaves_nothing(tiny_model, tmp_path, make, words):
    bad = make(tiny_model[1], tmp_path / "bad.zip")
    destination = tmp_path / "out" / "model"
    with pytest.raises(UserError) as caught:
        extract_package(bad, destination)
    message = str(caught.value)
    assert words in message and message.startswith(f"{bad}: refused") and "\n" not in message
    assert not destination.exists() and _leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("kind", ["traversal", "symlink", "pt-member", "pickle-as-weights", "oversize",
                                  "zip-bomb"])
@pytest.mark.parametrize("command", ["install_model", "predict"])
def test_the_commands_refuse_a_malicious_package_with_exit_2(tiny_model, tiny_case, tmp_path, capsys, kind,
                                                             command):
    from pfseg_pipeline.cli import install_model, predict

    make, words = next(m[1:] for m in MALICIOUS if m[0] == kind)
    bad = make(tiny_model[1], tmp_path / "bad.zip")
    workspace = tmp_path / "ws"
    if command == "install_model":
        code = run(install_model.main, [str(bad), "--workspace", str(workspace)])
    else:
        code = run(predict.main, ["-i", str(tiny_case["t1"].parent), "-o", str(tmp_path / "pred"),
                                  "--model-dir", str(bad), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: refused") and words in err[0], err
    assert not workspace.exists() and not (tmp_path / "pred").exists()


def test_a_good_package_unpacks_to_exactly_its_members(tiny_model, tmp_path):
    package = tiny_model[1]
    manifest = extract_package(package, tmp_path / "model")
    unpacked_files = {str(p.relative_to(tmp_path / "model")): p.read_bytes()
                      for p in (tmp_path / "model").rglob("*") if p.is_file()}
    assert unpacked_files == members_of(package)
    assert manifest == read_manifest(tmp_path / "model")
    assert manifest.folds == ["0", "1"] and manifest.format == "pytorch" and manifest.network == "pfseg"
    assert _leftovers(tmp_path) == ["model"]
    with pytest.raises(UserError, match="already exists"):
        extract_package(package, tmp_path / "model")
    with unpacked(package) as folder:
        assert (folder / MANIFEST).is_file()
    assert not folder.exists()


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.update({"plans.json": m["plans.json"] + b" "}),
     "member 'plans.json' is .* bytes, pfseg_model.json says"),
    (lambda m: m.update({"plans.json": m["plans.json"].replace(b"Tiny", b"Tinz", 1)}),
     "member 'plans.json' differs from its SHA-256"),
    (lambda m: m.update({"extra.json": b"{}"}), "member 'extra.json' is not listed in pfseg_model.json"),
    (lambda m: m.pop("MODEL_CARD.md"), "lists 'MODEL_CARD.md', which the zip lacks"),
    (lambda m: m.pop(MANIFEST), "not a pfseg model package (no pfseg_model.json"),
    (lambda m: m.update({MANIFEST: b"{not json"}), "member 'pfseg_model.json' is not readable JSON"),
])
def test_a_package_changed_after_export_is_refused(tiny_model, tmp_path, edit, words):
    bad = repackage(tiny_model[1], tmp_path / "changed.zip", edit, relist=False)
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")):
        extract_package(bad, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_listed_json_that_does_not_parse_is_refused(tiny_model, tmp_path):
    bad = repackage(tiny_model[1], tmp_path / "bad.zip", lambda m: m.update({"dataset.json": b"{oops"}))
    with pytest.raises(UserError, match="member 'dataset.json' is not valid JSON"):
        extract_package(bad, tmp_path / "model")


def test_limits_on_members_and_total_size(tiny_model, tmp_path):
    package = tiny_model[1]
    n = len(members_of(package))
    with pytest.raises(UserError, match=f"refused: {n} members \\(at most 3\\)"):
        check_package(package, Limits(members=3))
    with pytest.raises(UserError, match="bytes unpacked in all, over the limit of 1000"):
        check_package(package, Limits(total_bytes=1000))
    with pytest.raises(UserError, match="member 'plans.json' declares .* unpacked, over the limit of 100"):
        check_package(package, Limits(member_bytes=100))


def test_duplicate_names_and_files_that_are_not_zips(tiny_model, tmp_path):
    twice = tmp_path / "twice.zip"
    with zipfile.ZipFile(tiny_model[1]) as old, zipfile.ZipFile(twice, "w") as new:
        for info in old.infolist():
            new.writestr(info, old.read(info))
        with pytest.warns(UserWarning, match="Duplicate name"):
            new.writestr("plans.json", b"{}")
    with pytest.raises(UserError, match="member 'plans.json' appears twice"):
        check_package(twice)
    not_zip = tmp_path / "model.zip"
    not_zip.write_bytes(b"PK\x03\x04 but not really a zip")
    with pytest.raises(UserError, match="model.zip: not a readable zip file"):
        check_package(not_zip)
    with pytest.raises(UserError, match="missing.zip: model package not found"):
        check_package(tmp_path / "missing.zip")
