"""ResultWriter: a writer needs somewhere to write (a path or a stream)."""
import io
import json

import pytest

from vehicle_cls.io.writers import ResultWriter
from vehicle_cls.results import Result


def test_writer_without_path_or_stream_is_refused_up_front():
    with pytest.raises(ValueError, match="path or a stream"):
        ResultWriter()


def test_writer_to_a_stream_writes_json_lines_and_leaves_it_open():
    stream = io.StringIO()
    with ResultWriter(stream=stream) as out:
        out.write(Result.failed("a.jpg", 0, "a.jpg: cannot decode"))
    assert json.loads(stream.getvalue())["source"] == "a.jpg"
    assert not stream.closed
