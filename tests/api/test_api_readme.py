"""The README's Python API examples run as written, on the bundled demo model, from the repository
root's point of view (a scratch folder that links demo/ to the checkout's, so nothing is written
into the checkout)."""

from __future__ import annotations

import re
import subprocess
import sys

from paths import REPO


def api_examples() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_has_api_examples():
    blocks = api_examples()
    assert len(blocks) >= 3
    assert any("export_model(" in b for b in blocks) and any(".stream(" in b for b in blocks)


def test_the_readme_api_examples_run(tmp_path):
    (tmp_path / "demo").symlink_to(REPO / "demo")
    for i, block in enumerate(api_examples()):  # in order: the later ones use the exported model
        r = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, f"README API example {i + 1} failed:\n{block}\n{r.stderr[-3000:]}"
    assert (tmp_path / "runs" / "api" / "annotated.jpg").is_file()
