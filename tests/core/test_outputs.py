"""vehicle_cls.outputs: an output path that is, or holds, an input is refused with both paths named."""
from __future__ import annotations

import pytest


def test_output_helper_names_both_paths(tmp_path):
    from vehicle_cls.outputs import OutputError, check_output

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.jpg").write_bytes(b"x")
    check_output(tmp_path / "out.jsonl", [tmp_path / "in"])  # beside the inputs: fine
    check_output(tmp_path / "in" / "new.jsonl", [tmp_path / "in"])  # a new file in an input folder: fine
    with pytest.raises(OutputError, match=r"x\.jpg.*is an input"):
        check_output(tmp_path / "in" / "x.jpg", [tmp_path / "in"])
    with pytest.raises(OutputError, match=r"in.*holds the input"):
        check_output(tmp_path / "in", [tmp_path / "in" / "x.jpg"], directory=True)
