"""README's Python snippets run as written, in order, in one fresh interpreter (so they cannot go stale)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_snippets_run(tmp_path: Path) -> None:
    snippets = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(snippets) >= 3  # a built-in spec, a module of one's own, a new representation
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(snippets))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout.splitlines()
    assert printed[0].startswith("torch.Size([2, 1, 128, 128])")  # HOG is inverted in grey
    assert printed[1].startswith("module:ResNet:layer2")
    assert printed[-1] == "torch.Size([2, 3, 128, 128])"
