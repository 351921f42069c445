"""A saved folder carries our code, and it runs only with trust_remote_code=True."""

import shutil

from .helpers import remote_code_probe


def test_saved_code_runs_only_with_trust_remote_code(saved_model, tmp_path):
    """A saved folder carries our code; loading it where our package is not importable must refuse to run it
    unless trust_remote_code=True. The copied modeling file writes a marker when executed."""
    folder = tmp_path / "model"
    shutil.copytree(saved_model, folder)
    marker = tmp_path / "code_ran"
    code = (folder / "modeling_vit_scratch.py").read_text()
    (folder / "modeling_vit_scratch.py").write_text(f"open({str(marker)!r}, 'w').close()\n" + code)
    report = remote_code_probe(folder, tmp_path / "probe", marker=marker)
    assert report["importable"] == [] and report["ours_imported"] == []
    assert report["refused"].startswith("ValueError: ") and "trust_remote_code=True" in report["refused"], report
    assert report["code_ran_before_trust"] is False
    assert report["cls"] == "ViTScratchForImageClassification" and report["code_ran"] is True
