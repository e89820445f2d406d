"""The import table of ARCHITECTURE.md, enforced on the source tree with an ``ast`` walk.

Three rules: (1) a layer imports only the editgrpo layers the table allows; (2) a layer imports
only the third-party packages listed for it (stdlib is always fine); (3) layers that must stay fast
to import (``editgrpo --help``, pure text/metric code) import heavy packages only inside functions.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "editgrpo"

# Layer -> editgrpo layers it may import (ARCHITECTURE.md, "Layers"). `errors` is a stdlib-only leaf
# every layer may use. `demo` is the `make demo` orchestration, just below `cli`.
ALLOWED_INTERNAL: dict[str, set[str]] = {
    # cli is the top layer; besides the table's list it reaches annotators and text directly for
    # `editgrpo label` (a thin command over one annotator).
    "cli": {
        "config",
        "training",
        "eval",
        "data",
        "rewards",
        "models",
        "annotators",
        "text",
        "demo",
        "errors",
    },
    "demo": {"config", "training", "eval", "data", "rewards", "models", "errors"},
    "training": {"rewards", "edits", "data", "models", "core", "text", "config", "errors"},
    "eval": {"rewards", "metrics", "annotators", "data", "text", "config", "errors"},
    "rewards": {"metrics", "annotators", "text", "errors"},
    "edits": {"text", "annotators", "errors"},
    "metrics": {"text", "errors"},
    "annotators": {"text", "errors"},
    "data": {"text", "errors"},
    "models": {"errors"},
    "core": {"errors"},
    "text": {"errors"},
    "config": {"errors"},
    "errors": set(),
    "__init__": set(),
    # `python -m editgrpo` (for `accelerate launch -m editgrpo train`): the command line only.
    "__main__": {"cli"},
}

# Layer -> third-party top-level packages it may import (anywhere in the module).
TRAINING_ENGINES = {"trl", "accelerate", "deepspeed", "vllm", "peft"}
ALLOWED_THIRD_PARTY: dict[str, set[str] | None] = {
    "cli": {"rich"},
    "demo": {"numpy", "PIL", "torch", "transformers"},
    "training": None,  # anything, including the training engines
    "eval": {"numpy", "torch", "transformers", "PIL", "datasets", "matplotlib"},
    # h11: uvicorn's own HTTP/1.1 parser (a uvicorn dependency); the server's connection deadlines
    # subclass uvicorn's h11 protocol and read its states.
    "rewards": {"numpy", "torch", "transformers", "uvicorn", "h11", "starlette", "httpx"},
    "edits": {"numpy"},
    "metrics": {"numpy"},
    # radgraph: optional, imported only by the `radgraph` entity backend when the user has it.
    # huggingface_hub: the cache lookup and `editgrpo models download` (annotators/weights.py), a
    # transformers dependency, imported lazily.
    "annotators": {
        "huggingface_hub",
        "numpy",
        "torch",
        "transformers",
        "tokenizers",
        "safetensors",
        "httpx",
        "regex",
        "radgraph",
    },
    "data": {"numpy", "PIL", "yaml"},
    "models": {"torch", "transformers", "tokenizers", "PIL", "numpy", "safetensors", "vllm"},
    "core": {"torch"},
    "text": set(),
    "config": {"omegaconf", "yaml"},
    "errors": set(),
    "__init__": set(),
    "__main__": set(),
}

# Layers whose module-level (not function-level) imports must stay light.
HEAVY = {"torch", "transformers", "trl", "accelerate", "deepspeed", "vllm", "peft", "datasets", "omegaconf"}
MUST_IMPORT_FAST = {
    "cli",
    "config",
    "errors",
    "text",
    "metrics",
    "edits",
    "data",
    "__init__",
    "__main__",
    "demo",
}


def _layer(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.name != "__init__.py" else "__init__"


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(absolute module name, line, at module level) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(("editgrpo", *path.relative_to(SRC).with_suffix("").parts[:-1]))
    top_level = {id(node) for node in tree.body}
    # Imports under `if TYPE_CHECKING:` at module level never run.
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            top_level.difference_update(id(n) for n in ast.walk(node))
        elif isinstance(node, ast.Try | ast.If):
            top_level.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((name, node.lineno, id(node) in top_level))
    return found


SOURCES = sorted(SRC.rglob("*.py"))


def test_source_tree_is_found() -> None:
    assert len(SOURCES) >= 5, f"no sources under {SRC}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_layer_table(path: Path) -> None:
    layer = _layer(path)
    assert layer in ALLOWED_INTERNAL, (
        f"{layer!r} is not in the layer table: add it to ARCHITECTURE.md and here"
    )
    third_party_ok = ALLOWED_THIRD_PARTY[layer]
    problems = []
    for name, line, at_module_level in _imports(path):
        top = name.split(".")[0]
        where = f"{path.relative_to(SRC.parent)}:{line}"
        if top == "editgrpo":
            target = name.split(".")[1] if "." in name else "__init__"
            if target != layer and target not in ALLOWED_INTERNAL[layer]:
                problems.append(f"{where}: layer {layer!r} may not import editgrpo.{target}")
        elif top in sys.stdlib_module_names or top == "__future__":
            continue
        else:
            if third_party_ok is not None and top not in third_party_ok:
                problems.append(f"{where}: layer {layer!r} may not import third-party {top!r}")
            # An engine named in a layer's own list above is an explicit exception (models: vllm
            # for `editgrpo generate --engine vllm`, imported lazily).
            if top in TRAINING_ENGINES and layer != "training" and top not in (third_party_ok or set()):
                problems.append(f"{where}: only editgrpo.training imports {top!r}")
            if layer in MUST_IMPORT_FAST and top in HEAVY and at_module_level:
                problems.append(f"{where}: {top!r} must be imported inside the function that needs it")
    assert not problems, "\n".join(problems)


def test_table_matches_tree() -> None:
    """Every layer in the tree is in the table (a new package must be placed in it)."""
    layers = {_layer(p) for p in SOURCES}
    assert layers <= set(ALLOWED_INTERNAL), layers - set(ALLOWED_INTERNAL)


def test_cli_and_config_import_no_heavy_package() -> None:
    code = (
        "import sys, editgrpo, editgrpo.cli, editgrpo.config, editgrpo.errors\n"
        f"heavy = sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"imported at startup: {result.stdout.strip()}"


def test_import_walk_classifies_a_known_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The walker itself: relative imports resolve, function-level and TYPE_CHECKING imports are
    not module-level."""
    fake_src = tmp_path / "editgrpo"
    (fake_src / "metrics").mkdir(parents=True)
    module = fake_src / "metrics" / "f1.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "from ..text import sentences\n"
        "from . import other\n"
        "if TYPE_CHECKING:\n"
        "    import torch\n"
        "def f():\n"
        "    import transformers\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake_src)
    found = {name: top for name, _, top in _imports(module)}
    assert found == {
        "typing": True,
        "numpy": True,
        "editgrpo.text": True,
        "editgrpo.metrics": True,
        "torch": False,
        "transformers": False,
    }
