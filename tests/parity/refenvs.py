"""Virtualenvs holding the published reference packages, built once under ``.parity-venvs/``.

Each reference package runs unmodified in its own virtualenv, in a subprocess, so its pins never
touch the project's environment. A reference venv is an *overlay*: its own site-packages come
first on ``sys.path`` (the reference package and whatever of its pins differ from ours), then a
``.pth`` file appends the site-packages of the interpreter running the tests (torch, transformers,
numpy ... of the project venv), so nothing large is downloaded twice and the CPU torch wheel is the
one both sides use. pip sees the appended packages as installed and only adds what is missing.

The specs below are the project's own record of what each reference needs (CI on a clean clone
builds from them); a venv is rebuilt when its spec changes (the spec is hashed into a stamp).
"""

from __future__ import annotations

import hashlib
import json
import os
import site
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENVS = Path(os.environ.get("EDITGRPO_PARITY_VENVS", ROOT / ".parity-venvs"))

# name -> (pip requirements, extra pip flags). Versions are the ones issue #19 names.
SPECS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # f1chexbert 0.0.2: setup.py asks torch>=1.8.1, transformers>=4.23.1, scikit-learn, numpy,
    # appdirs, pandas -- all but appdirs/pandas already satisfied by the project venv.
    "f1chexbert": (("f1chexbert==0.0.2", "transformers>=4.50,<5", "scikit-learn<1.6"), ()),
    # RaTEScore wheels declare no dependencies; score.py/utils.py import medspacy (PyRuSH sentences)
    # and scorer.py imports pandas.
    "ratescore-0.5.0": (("ratescore==0.5.0", "medspacy", "pandas"), ()),
    "ratescore-0.6.0": (("ratescore==0.6.0", "medspacy", "pandas"), ()),
}


def _stamp(name: str) -> str:
    reqs, flags = SPECS[name]
    payload = json.dumps([reqs, flags, sys.version, site.getsitepackages()], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def venv_python(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def ensure(name: str, log=print) -> Path:
    """The python of reference venv ``name``, built first when missing or stale."""
    folder = VENVS / name
    stamp_file = folder / ".editgrpo-parity-stamp"
    if stamp_file.is_file() and stamp_file.read_text().strip() == _stamp(name):
        return venv_python(name)
    reqs, flags = SPECS[name]
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(folder)], check=True)
    py = venv_python(name)
    own = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Appended after the overlay's own site-packages: the project venv's packages (and pip).
    Path(own, "zz-editgrpo-base.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *flags, *reqs],
        check=True,
    )
    stamp_file.write_text(_stamp(name) + "\n")
    log(f"built reference venv {name} in {time.monotonic() - started:.0f}s")
    return py


if __name__ == "__main__":
    for venv_name in sys.argv[1:] or list(SPECS):
        print(ensure(venv_name))
