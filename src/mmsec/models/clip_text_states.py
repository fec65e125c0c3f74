"""The token states of a TinyCLIP text tower: the text encoder of the zoo's text-to-image model.

A text-to-image UNet cross-attends to a text encoder's per-token states, as Stable Diffusion does to
CLIP's last hidden state. :class:`TinyCLIPTextStates` holds a copy of a zoo CLIP's text tower (word
tokenizer included) and returns those states, (B, L, W) with L the CLIP's context length and W its text
width, for B prompts. The empty prompt ``""`` (``<sos> <eos>`` and padding) is the null condition of
classifier-free guidance.

On disk it is a folder (``text_encoder/`` of a diffusion model folder) in the diffusers style::

    config.json        {"_class_name": "TinyCLIPTextStates", "clip_config": {...TinyCLIPConfig, vocabulary...}}
    model.safetensors  the text tower's tensors (safetensors only)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError, check_safetensors_file, load_checkpoint, save_checkpoint
from .tiny_clip import TextTower, TinyCLIP, TinyCLIPConfig
from .tokenizer import WordTokenizer

CLASS_NAME = "TinyCLIPTextStates"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class TinyCLIPTextStates(nn.Module):
    """Prompts -> (B, L, W) token states of a TinyCLIP text tower (its final LayerNorm's output).

    Build it from a TinyCLIP with :meth:`from_clip` (the tower's weights are copied, so training the
    diffusion model never touches the CLIP), or load a saved folder with :meth:`load`.
    """

    def __init__(self, cfg: TinyCLIPConfig):
        super().__init__()
        if not cfg.vocab:
            raise ValueError("TinyCLIPTextStates: the TinyCLIPConfig has an empty vocabulary")
        self.config = cfg
        self.tokenizer = WordTokenizer(cfg.vocab, cfg.context_length)
        self.text = TextTower(cfg)

    @property
    def width(self) -> int:
        """W, the width of each token state (the UNet's ``cross_attention_dim``)."""
        return self.config.text_width

    @classmethod
    def from_clip(cls, clip: TinyCLIP) -> TinyCLIPTextStates:
        """A copy of ``clip``'s text tower and tokenizer."""
        out = cls(clip.config)
        out.text.load_state_dict(clip.text.state_dict())
        return out.eval()

    def forward(self, prompts: list[str]) -> torch.Tensor:
        """B prompts -> (B, L, W) token states, differentiable in the tower's weights."""
        tokens = self.tokenizer(list(prompts)).to(self.text.pos.device)  # (B, L)
        return self.text.token_states(self.text.token(tokens))

    def save(self, folder: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(folder / WEIGHTS_FILE, self.text.state_dict(), {"family": CLASS_NAME})
        config = {"_class_name": CLASS_NAME, "clip_config": self.config.to_dict()}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> TinyCLIPTextStates:
        """Read a folder written by :meth:`save`; CheckpointErrors name a missing or foreign file."""
        folder = Path(folder)
        config_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not config_path.is_file():
            raise CheckpointError(f"text encoder folder {folder} has no {CONFIG_FILE}")
        config = json.loads(config_path.read_text())
        if config.get("_class_name") != CLASS_NAME:
            raise CheckpointError(f"{config_path}: _class_name is {config.get('_class_name')!r}, expected "
                                  f"{CLASS_NAME!r} (mmsec reads only its own text encoders from such folders)")
        if not weights.is_file():
            raise CheckpointError(f"text encoder folder {folder} has no {WEIGHTS_FILE}")
        check_safetensors_file(weights)
        tensors, _ = load_checkpoint(weights)
        out = cls(TinyCLIPConfig.from_dict(config["clip_config"]))
        missing, unexpected = out.text.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{weights} does not fit {config_path}: missing {missing}, unexpected {unexpected}")
        return out.eval()


__all__ = ["TinyCLIPTextStates"]
