"""The command line answers --help and bad input without loading torch or diffusers."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_cli_loads_no_torch():
    code = (
        "import sys, ditlens.cli; print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_help_and_a_bad_k_need_no_torch():
    """`ditlens find --help` and `ditlens find --k 0` answer from the parser and the early checks."""
    code = (
        "import sys\n"
        "from ditlens.cli import main\n"
        "try:\n"
        "    main(['find', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert main(['find', '--k', '0']) == 2\n"
        "assert main(['generate', '--steps', '0']) == 2\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stdout + result.stderr
    assert "--k must be a whole number from 1" in result.stderr


def test_the_package_still_exports_its_names():
    import ditlens

    assert set(ditlens.__all__) <= set(dir(ditlens))
    assert ditlens.TopK(2).k == 2 and callable(ditlens.hooks)
