"""Where each model backend's weights live, and failing fast when they are not there.

Every model backend looks for local files first: a path the user gave, else the standard Hugging
Face cache (``HF_HUB_CACHE``, the layout ``huggingface_hub`` writes: ``models--org--name/snapshots/
<rev>/``). Only when the files are in neither place does it go to the hub, and only after a quick
check that the hub can be reached: ``HF_HUB_OFFLINE`` set, or no TCP connection to the endpoint
within ``PROBE_TIMEOUT_S``, is a ``UserError`` (exit 2) naming the missing file and the fix, instead
of transformers' minute of retries and a traceback that never names the file (issue #19).

``MODELS`` is the registry behind ``editgrpo models check`` / ``models download``: each published
model's hub repo, the files a backend reads, and the option that points a backend at a local copy.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from editgrpo.errors import UserError

PROBE_TIMEOUT_S = 1.5
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class ModelSpec:
    """One published model: ``repo`` on the hub, the ``files`` our backend reads from it (the first
    one proves a cached copy), the backend that uses it and the option naming a local copy."""

    name: str
    repo: str
    files: tuple[str, ...]
    backend: str
    option: str
    what: str


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "chexbert",
            "StanfordAIMI/RRG_scorers",
            ("chexbert.pth",),
            "labeler chexbert",
            "reward.labeler_checkpoint / label --checkpoint",
            "CheXbert weights (f1chexbert's file)",
        ),
        ModelSpec(
            "bert-base-uncased",
            "bert-base-uncased",
            ("vocab.txt", "tokenizer_config.json", "config.json"),
            "labeler chexbert",
            "label --tokenizer",
            "CheXbert's WordPiece tokenizer",
        ),
        ModelSpec(
            "rate-ner",
            "Angelakeke/RaTE-NER-Deberta",
            ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"),
            "entities rate",
            "reward.entity_model",
            "RaTE-NER (DeBERTa-v3 token classifier)",
        ),
        ModelSpec(
            "biolord",
            "FremyCompany/BioLORD-2023-C",
            ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"),
            "embedder biolord",
            "reward.embedder_model",
            "BioLORD-2023-C entity embeddings",
        ),
        ModelSpec(
            "radgraph-xl",
            "StanfordAIMI/RRG_scorers",
            ("radgraph-xl.tar.gz",),
            "graph_entities radgraph",
            "the radgraph package's cache (~/.cache/radgraph/<version>/radgraph-xl)",
            "RadGraph-XL (DyGIE++ archive, run by the radgraph package)",
        ),
        ModelSpec(
            "green",
            "StanfordAIMI/GREEN-RadLlama2-7b",
            ("config.json", "tokenizer_config.json"),
            "green judge transformers",
            "green judge model",
            "GREEN judge LLM (7B)",
        ),
    )
}


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set to a true value."""
    return any(
        os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """A TCP connection to the hub endpoint opens within ``timeout`` seconds (no request is sent)."""
    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub),
    read from the environment now rather than at import time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def cached_file(repo: str, filename: str) -> Path | None:
    """``filename`` of ``repo``'s main revision in the hub cache, or None."""
    folder = hub_cache_dir() / ("models--" + repo.replace("/", "--"))
    ref = folder / "refs" / "main"
    revisions = [ref.read_text().strip()] if ref.is_file() else []
    if not revisions and (folder / "snapshots").is_dir():
        revisions = sorted(p.name for p in (folder / "snapshots").iterdir())
    for revision in revisions:
        path = folder / "snapshots" / revision / filename
        if path.is_file():
            return path
    return None


def missing_message(what: str, name: str, filename: str, fix_option: str) -> str:
    reason = "HF_HUB_OFFLINE is set" if hub_offline() else f"the hub ({hub_endpoint()}) cannot be reached"
    model = next((m.name for m in MODELS.values() if m.repo == name), None)
    download = f"`editgrpo models download {model}` on a machine with hub access, or " if model else ""
    return (
        f"{what} {name!r}: {filename} is not a local file and not in the Hugging Face cache "
        f"({hub_cache_dir()}), and {reason}. Fix: {download}copy the model folder here and give its path "
        f"({fix_option}); `editgrpo models check` lists what is present"
    )


def local_or_hub(name: str, what: str, filename: str, fix_option: str) -> tuple[str, bool]:
    """A model named by path or hub id -> (source to load, local_files_only).

    A local folder or file: itself. A hub id cached with ``filename``: its snapshot folder, loaded
    with local_files_only. Otherwise the hub id when the hub can be reached, else UserError."""
    path = Path(name).expanduser()
    if path.exists():
        return str(path), True
    cached = cached_file(name, filename)
    if cached is not None:
        return str(cached.parent), True
    if hub_offline() or not hub_reachable():
        raise UserError(missing_message(what, name, filename, fix_option))
    return name, False


def needed_models(reward: object | None) -> list[tuple[str, str | None]]:
    """(model name, the local path the recipe gives or None) of each model backend a reward config
    uses; every model when ``reward`` is None (evaluate's options can name any of them)."""
    if reward is None:
        return [(name, None) for name in MODELS]
    out: list[tuple[str, str | None]] = []
    if getattr(reward, "labeler", None) == "chexbert":
        out += [("chexbert", getattr(reward, "labeler_checkpoint", None)), ("bert-base-uncased", None)]
    entities = getattr(reward, "entities", None)
    graphs = getattr(reward, "graph_entities", None) or entities
    if entities == "rate":
        out.append(("rate-ner", getattr(reward, "entity_model", None)))
    if graphs == "radgraph":
        out.append(("radgraph-xl", None))
    if getattr(reward, "embedder", None) == "biolord":
        out.append(("biolord", getattr(reward, "embedder_model", None)))
    return out


def check_model(name: str, given: str | None = None) -> dict[str, object]:
    """Where model ``name`` is looked up and whether its first file is there."""
    spec = MODELS[name]
    first = spec.files[0]
    places: list[str] = []
    found: Path | None = None
    if given:
        places.append(given)
        path = Path(given).expanduser()
        hit = path if path.is_file() else path / first
        found = hit if hit.is_file() else None
    if found is None:
        places.append(f"{hub_cache_dir()}/models--{spec.repo.replace('/', '--')}/snapshots/*/{first}")
        found = cached_file(spec.repo, first)
    if name == "radgraph-xl" and found is None:
        # radgraph's appdirs.user_cache_dir("radgraph") on Linux: $XDG_CACHE_HOME or ~/.cache.
        folder = Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "radgraph"
        places.append(f"{folder}/<radgraph version>/radgraph-xl/weights.th")
        found = next(iter(sorted(folder.glob("*/radgraph-xl/weights.th"))), None) if folder.is_dir() else None
    return {
        "model": name,
        "backend": spec.backend,
        "hub": f"{spec.repo} ({', '.join(spec.files)})",
        "looked_in": places,
        "present": found is not None,
        "path": str(found) if found else None,
        "fix": None
        if found
        else f"editgrpo models download {name} (needs hub access), or copy {spec.repo} and set {spec.option}",
    }


def download(name: str) -> list[Path]:
    """Fetch model ``name``'s files into the standard hub cache; UserError at once when offline."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    spec = MODELS[name]
    if hub_offline() or not hub_reachable():
        reason = "HF_HUB_OFFLINE is set" if hub_offline() else f"the hub ({hub_endpoint()}) cannot be reached"
        raise UserError(
            f"cannot download {name} ({spec.repo}): {reason}. Fix: run `editgrpo models download {name}` on a "
            f"machine with hub access and copy {hub_cache_dir()} (or the files {', '.join(spec.files)}) here"
        )
    from huggingface_hub import hf_hub_download

    return [Path(hf_hub_download(spec.repo, f, cache_dir=str(hub_cache_dir()))) for f in spec.files]
