"""A saved folder carries our code, and it runs only with trust_remote_code=True."""

import shutil
import subprocess

from .faults_harness import TIMEOUT
from .helpers import PYTHON, subprocess_env

REMOTE_CODE_PROBE = r"""
import json, sys
sys.modules["modeling_vit_scratch"] = None  # our package may not be imported, so nothing is registered
from pathlib import Path
from transformers import AutoModelForImageClassification
folder, marker = Path(sys.argv[1]), Path(sys.argv[2])
try:
    AutoModelForImageClassification.from_pretrained(folder)
except Exception as error:
    print("REFUSED", type(error).__name__, error)
else:
    print("LOADED without trust_remote_code")
print("MARKER AFTER REFUSAL", marker.exists())
model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)
print("LOADED WITH trust_remote_code", type(model).__name__, marker.exists())
"""


def test_saved_code_runs_only_with_trust_remote_code(saved_model, tmp_path):
    """A saved folder carries our code; loading it where our package is not importable must refuse to run it
    unless trust_remote_code=True. The copied modeling file writes a marker when executed."""
    folder = tmp_path / "model"
    shutil.copytree(saved_model, folder)
    marker = tmp_path / "code_ran"
    code = (folder / "modeling_vit_scratch.py").read_text()
    (folder / "modeling_vit_scratch.py").write_text(f"open({str(marker)!r}, 'w').close()\n" + code)
    proc = subprocess.run([PYTHON, "-c", REMOTE_CODE_PROBE, str(folder), str(marker)], cwd=tmp_path,
                          env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "REFUSED ValueError" in proc.stdout and "trust_remote_code=True" in proc.stdout, proc.stdout
    assert "MARKER AFTER REFUSAL False" in proc.stdout
    assert "LOADED WITH trust_remote_code ViTScratchForImageClassification True" in proc.stdout
