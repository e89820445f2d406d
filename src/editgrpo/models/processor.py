"""An image-only Qwen2.5-VL processor: tokenizer + PIL image processor, no video processor.

Why it exists: the stock ``Qwen2_5_VLProcessor`` also loads ``Qwen2VLVideoProcessor``, whose module
imports torchvision at import time. torchvision cannot be installed beside the CPU torch wheel this
project uses, and chest X-ray studies have no video, so the policy's processor is built from the
two components it needs. It produces exactly the inputs of the stock processor for image+text
prompts (``input_ids``, ``attention_mask``, ``pixel_values``, ``image_grid_thw``,
``mm_token_type_ids``), and it is what both the tiny test models and real checkpoints are loaded
with (``models/qwen_vl.py``), so there is one code path.

Saved checkpoints are standard: ``save_pretrained`` writes the files of the stock processor, naming
``Qwen2_5_VLProcessor`` as ``processor_class`` (in ``processor_config.json`` and
``tokenizer_config.json``) and adding the ``video_processor`` entry a stock Qwen2.5-VL processor
carries (the image settings under ``video_processor_type: Qwen2VLVideoProcessor``, as the published
checkpoints configure both alike), so ``AutoProcessor`` / ``pipeline("image-text-to-text")`` in an
environment with torchvision build the stock processor without importing editgrpo, and editgrpo
loads the same files with this class.

``register_auto_classes()`` makes ``AutoProcessor.from_pretrained`` find this class by its own name,
for checkpoints written before saving was made standard. It only adds a lookup entry for our class
name; it does not change what transformers returns for stock checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PretrainedConfig
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.processing_utils import ProcessorMixin


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` without the video component (see module docstring).

    transformers infers a processor's sub-components from the parameter names of ``__init__``
    (``ProcessorMixin.get_attributes``), so leaving ``video_processor`` out of the signature is what
    makes saving and loading skip it.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # Same token lookup as the parent's __init__; the parent cannot be called because it
        # forwards a third positional component (the video processor) to ProcessorMixin.
        self.image_token = getattr(tokenizer, "image_token", "<|image_pad|>")
        self.video_token = getattr(tokenizer, "video_token", "<|video_pad|>")
        self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.image_token
        )
        self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.video_token
        )
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as the stock ``Qwen2_5_VLProcessor`` would (module docstring)."""
        out = super().save_pretrained(save_directory, *args, **kwargs)
        standardise_processor_files(save_directory)
        return out

    def __call__(self, images=None, text=None, videos=None, **kwargs):
        if videos is not None:
            raise ValueError(
                "ImageOnlyQwen2_5_VLProcessor does not process videos (it is built without the "
                "torchvision-based video processor); pass images only."
            )
        return super().__call__(images=images, text=text, **kwargs)


STOCK_PROCESSOR_CLASS = "Qwen2_5_VLProcessor"
STOCK_VIDEO_PROCESSOR_TYPE = "Qwen2VLVideoProcessor"


def _rewrite_json(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(path)


def standardise_processor_files(directory) -> None:
    """Name the stock processor class in a saved processor's files and add its video entry."""
    directory = Path(directory)

    def processor(data: dict) -> None:
        data["processor_class"] = STOCK_PROCESSOR_CLASS
        image = data.get("image_processor")
        if isinstance(image, dict) and "video_processor" not in data:
            video = {k: v for k, v in image.items() if k != "image_processor_type"}
            data["video_processor"] = {**video, "video_processor_type": STOCK_VIDEO_PROCESSOR_TYPE}

    def tokenizer(data: dict) -> None:
        if "processor_class" in data:
            data["processor_class"] = STOCK_PROCESSOR_CLASS

    for name, change in (("processor_config.json", processor), ("tokenizer_config.json", tokenizer)):
        if (directory / name).is_file():
            _rewrite_json(directory / name, change)


class _ImageOnlyProcessorKey(PretrainedConfig):
    """Registration key only: ``AutoProcessor.register`` wants a config class, and registering the
    stock ``Qwen2_5_VLConfig`` would redirect every Qwen2.5-VL checkpoint in the process."""

    model_type = "editgrpo_image_only_qwen2_5_vl"


def register_auto_classes() -> None:
    """Let ``AutoProcessor`` resolve ``"processor_class": "ImageOnlyQwen2_5_VLProcessor"``.

    Idempotent. transformers looks registered classes up by ``__name__``
    (``processing_auto.processor_class_from_name``)."""
    from transformers import AutoProcessor

    AutoProcessor.register(_ImageOnlyProcessorKey, ImageOnlyQwen2_5_VLProcessor, exist_ok=True)
