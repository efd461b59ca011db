"""README facts that code owns: the set-up commands come first and equal what CI runs, the preset table is the
output of `segformer presets`, and the Layout names every package of the tree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_preset_table_is_the_presets_command_output():
    out = subprocess.run([sys.executable, "-m", "segformer", "presets"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    table = [line for line in out.stdout.splitlines() if line.startswith("|")]
    assert len(table) > 20
    section = README.split("## Presets", 1)[1].split("\n## ", 1)[0]
    assert [line for line in section.splitlines() if line.startswith("|")] == table


def test_setup_commands_come_first_and_match_ci():
    first_section = README.split("\n## ", 2)[1]
    assert first_section.startswith("Set-up"), "the first README section is the set-up commands"
    commands = re.findall(r"```bash\n(.*?)\n```", first_section, re.S)
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1].strip() in ci  # the test command CI runs is the README's, to the letter
    assert "segformer demo" in commands[0]


def test_layout_names_every_package():
    layout = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    packages = sorted(str(p.parent.relative_to(ROOT)) for p in (ROOT / "segformer").rglob("__init__.py"))
    missing = [p for p in packages if p.split("/")[-1] + "/" not in layout and p + "/" not in layout]
    assert not missing, f"README Layout does not show {missing}"


def test_converting_checkpoints_lists_every_format_of_convert():
    from segformer.conversion.report import SOURCE_FORMATS, TARGET_FORMATS

    section = README.split("## Converting checkpoints", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`segformer convert" in line]
    assert rows == [f"| {what} | `{example}` |" for what, example in SOURCE_FORMATS + TARGET_FORMATS]
