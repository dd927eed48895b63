"""python -m grades.report record: results/record/<profile>/ rebuilt from a finished profile's files."""

from __future__ import annotations

import json

from grades.report.__main__ import main as report_main
from grades.report.record import manifest_markdown, write_record


def fake_profile(root, profile="p"):
    run = root / "results" / "runs" / profile / "m" / "fp" / "seed0"
    run.mkdir(parents=True)
    (run / "train.json").write_text(json.dumps({"status": "ok", "name": "FP", "mode": "fp", "method": "none",
                                                "git_commit": "abc123", "device": "cpu", "threads": 2,
                                                "versions": {"torch": "2.13.0"}}))
    tables = root / "results" / "tables" / profile
    tables.mkdir(parents=True)
    (tables / "accuracy.md").write_text("| a |\n|---|\n| 1 |\n")
    (tables / "accuracy.csv").write_text("a\n1\n")
    (tables / "notes.txt").write_text("not a table")
    figs = root / "figures" / profile
    figs.mkdir(parents=True)
    (figs / "fig1.png").write_bytes(b"\x89PNG fake")
    (figs / "fig1.pdf").write_bytes(b"%PDF fake")


def test_record_copies_tables_figures_and_writes_a_manifest(tmp_path):
    fake_profile(tmp_path)
    out = tmp_path / "results" / "record" / "p"
    out.mkdir(parents=True)
    (out / "README.md").write_text("hand-written")
    (out / "old.md").write_text("from an earlier record")
    (out / "manifest.json").write_text(json.dumps({"files": ["old.md"]}))
    paths = write_record("p", root=tmp_path)
    assert (out / "accuracy.md").read_text() == "| a |\n|---|\n| 1 |\n"
    assert (out / "figures" / "fig1.png").read_bytes() == b"\x89PNG fake"
    assert not (out / "figures" / "fig1.pdf").exists() and not (out / "notes.txt").exists()
    assert not (out / "old.md").exists()  # listed by the earlier record, not by this one
    assert (out / "README.md").read_text() == "hand-written"
    m = json.loads(paths["manifest.json"].read_text())
    assert m["profile"] == "p" and m["files"] == ["accuracy.csv", "accuracy.md", "figures/fig1.png"]
    assert m["runs"]["count"] == 1 and m["runs"]["git_commits"] == ["abc123"] and m["runs"]["seeds"] == [0]
    assert m["source"]["tables"] == "results/tables/p"
    assert m["machine"]["cpus"] >= 1
    md = (out / "manifest.md").read_text()
    assert "`abc123`" in md and "1 finished" in md and "`figures/fig1.png`" in md
    assert manifest_markdown(m) == md


def test_record_cli(tmp_path, capsys):
    fake_profile(tmp_path, "q")
    assert report_main(["record", "--profile", "q", "--root", str(tmp_path)]) == 0
    assert "manifest.md" in capsys.readouterr().out
    assert report_main(["record", "--profile", "missing", "--root", str(tmp_path)]) == 2


def test_git_commit_of_a_checkout_and_of_no_checkout(tmp_path):
    """One git_commit for run records and the record manifest: this checkout's commit (with -dirty
    when tracked files changed), None for a folder that is no git tree or for an installed copy."""
    import re

    from grades.resources import REPO_ROOT, git_commit

    got = git_commit()
    assert got is not None and re.fullmatch(r"[0-9a-f]{40}(-dirty)?", got), got
    assert git_commit(REPO_ROOT) == got
    assert git_commit(tmp_path) is None and git_commit(None) is None
