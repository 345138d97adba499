"""`vehicle-cls` logging: our INFO lines by default, third-party INFO (onnxscript, ...) only with -v."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE = """
import logging, sys
from vehicle_cls.cli import main
main(sys.argv[1:] + ["recipes"])
logging.getLogger("onnxscript.optimizer").info("THIRD-PARTY INFO")
logging.getLogger("onnxscript.optimizer").warning("THIRD-PARTY WARNING")
logging.getLogger("vehicle_cls.export").info("OUR INFO")
"""


@pytest.mark.parametrize("flags, third_party_info", [([], False), (["-v"], True)])
def test_third_party_info_only_when_verbose(tmp_path, flags, third_party_info):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", CODE, *flags], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    assert "OUR INFO" in out.stderr and "THIRD-PARTY WARNING" in out.stderr
    assert ("THIRD-PARTY INFO" in out.stderr) == third_party_info
