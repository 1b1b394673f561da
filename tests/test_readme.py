"""The README's code runs as written (its Python blocks, in order, in one namespace)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the README writes cnn.fnn
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    assert namespace["result"].history["epoch"]
    out = capsys.readouterr().out
    assert "manual~autodiff" in out
    assert "Temperature: passed" in out
    assert (tmp_path / "cnn.fnn").exists()
    assert namespace["cnn"].history["epoch"] == [0, 1, 2]
