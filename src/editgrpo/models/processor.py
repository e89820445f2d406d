"""An image-only Qwen2.5-VL processor: tokenizer + PIL image processor, no video processor.

Why it exists: the stock ``Qwen2_5_VLProcessor`` also loads ``Qwen2VLVideoProcessor``, whose module
imports torchvision at import time. torchvision cannot be installed beside the CPU torch wheel this
project uses, and chest X-ray studies have no video, so the policy's processor is built from the
two components it needs. It produces exactly the inputs of the stock processor for image+text
prompts (``input_ids``, ``attention_mask``, ``pixel_values``, ``image_grid_thw``,
``mm_token_type_ids``), and it is what both the tiny test models and real checkpoints are loaded
with (``models/qwen_vl.py``), so there is one code path.

``register_auto_classes()`` makes ``AutoProcessor.from_pretrained`` find this class by the name
stored in ``processor_config.json``. It only adds a lookup entry for our own class name; it does
not change what transformers returns for stock checkpoints.
"""

from __future__ import annotations

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

    def __call__(self, images=None, text=None, videos=None, **kwargs):
        if videos is not None:
            raise ValueError(
                "ImageOnlyQwen2_5_VLProcessor does not process videos (it is built without the "
                "torchvision-based video processor); pass images only."
            )
        return super().__call__(images=images, text=text, **kwargs)


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
