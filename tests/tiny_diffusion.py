"""Tiny random diffusion models for tests (diffusers configs, built in well under a second): a UNet2DModel,
a UNet2DConditionModel with a tiny TinyCLIP text tower, and a StableDiffusionPipeline saved to a folder."""

import json
import shutil
from pathlib import Path

import diffusers
import torch

PROMPTS = ["a red circle", "a blue square"]


def tiny_scheduler():
    return diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                   timestep_spacing="trailing")


def tiny_unconditional():
    from mmsec.models.diffusers_adapter import DiffusersUNet

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8)
    return DiffusersUNet(unet, tiny_scheduler()).eval()


def tiny_conditional():
    from mmsec.models.clip_text_states import TinyCLIPTextStates
    from mmsec.models.diffusers_adapter import DiffusersUNet
    from mmsec.models.tiny_clip import TinyCLIPConfig
    from mmsec.models.tokenizer import WordTokenizer

    torch.manual_seed(0)
    vocab = WordTokenizer.from_corpus(PROMPTS).vocab
    text = TinyCLIPTextStates(TinyCLIPConfig(vocab=vocab, text_width=16, text_layers=1, text_heads=2, context_length=8))
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=4)
    return DiffusersUNet(unet, tiny_scheduler(), text).eval()


def tiny_pipeline(folder: Path):
    """A random StableDiffusionPipeline (8x8 latents, 16 px images, a char-level CLIP tokenizer) saved in ``folder``."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    tok_dir = folder.parent / "_tokenizer_files"
    tok_dir.mkdir(parents=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=16)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                                        pad_token_id=1))
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=4)
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                                  layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, sample_size=16)
    scheduler = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                        clip_sample=False, steps_offset=1)
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.save_pretrained(folder)
    shutil.rmtree(tok_dir)
    return pipe


def tiny_backdoor_unet(size: int = 8, seed: int = 0, T: int = 100, clip: bool = False, spacing: str | None = None):
    """The tiny UNet the diffusion backdoor tests train (2 levels, 16/32 channels, cosine schedule of ``T`` steps):
    BadDiffusion's and TrojDiff's effect tests and the defenses' backdoored fixtures."""
    from mmsec.models.diffusers_adapter import DiffusersUNet

    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(sample_size=size, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8)
    extra = {"timestep_spacing": spacing} if spacing else {}
    sched = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", clip_sample=clip, **extra)
    return DiffusersUNet(unet, sched).eval()


def corner(size: int = 8) -> torch.Tensor:
    """(3, size, size) the backdoor tests' target: a white top-left quarter on black."""
    target = torch.zeros(3, size, size)
    target[:, :size // 2, :size // 2] = 1.0
    return target
