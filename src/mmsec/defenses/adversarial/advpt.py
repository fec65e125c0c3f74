"""AdvPT: adversarial prompt tuning of a frozen CLIP.

Paper: "Adversarial Prompt Tuning for Vision-Language Models", Jiaming Zhang, Xingjun Ma, Xin Wang,
Lingyu Qiu, Jiaqi Wang, Yu-Gang Jiang, Jitao Sang, ECCV 2024 (arXiv:2311.11261, 2023). Official
code: github.com/jiamingzhang94/Adversarial-Prompt-Tuning (a CoOp / Dassl code base); the attack,
loss and defaults below are read from that code.

Threat model defended: white-box L-inf perturbations of the *image* of a zero-shot CLIP classifier;
the defender may learn only text prompts: every weight of CLIP stays bit-for-bit unchanged.

Algorithm (the paper's, as its code runs it):
    1. Adversarial embedding bank, built once. For each training image x, PGD on the frozen image
       encoder f alone maximises  KL( softmax(f(x)) || softmax(f(x')) )  over ||x' - x||_inf <= eps
       (10 steps of 1.25 eps / 10 from a random start; no text is involved), and stores f(x').
    2. Prompt learning (CoOp). n_ctx context vectors V = [V1..Vn], shared by all classes, are
       prepended to each class name's token embeddings: class c's prompt is
       "<sos> V1 .. Vn <name_c> <eos>" and its text embedding t_c = g(V, name_c) (g: the frozen text
       tower run on token embeddings, :class:`mmsec.models.base.PromptableText`).
    3. Minimise over V only the cross-entropy of the true class,
           CE( logit_scale * cos(f(x'), t_c) over classes c, y ),
       by SGD on mini-batches of the bank (the adversarial embeddings alone, no clean term).
    4. Zero-shot classification then uses the learnt class embeddings t_c; the image side is untouched.

Arguments (pixel units; images in [0, 1]); "code" = the official repository:
    eps: L-inf budget of the training adversarial images, default 8/255 (code: train.py
        ``DATASET.TRAIN_EPS = 8``). eps=0 gives plain CoOp on clean embeddings (an ablation).
    steps: PGD iterations, default 10 (code: dass/engine/trainer.py ``PGD(..., num_iters=10)``).
    alpha: PGD step size; None (default) means 1.25 * eps / steps (code: attack/attackFeature.py).
    attack_loss: "embedding_kl" (default, the code's text-free embedding attack above) or
        "zeroshot_ce" (an mmsec option: maximise the cross-entropy of the true class under the
        hand-crafted ``prompts``, i.e. the usual zero-shot PGD objective).
    n_ctx: number of learnt context vectors, default 32 (code: scripts/main.sh ``NCTX=32``);
        initialised N(0, 0.02^2) as CoOp's generic context (code: ``CTX_INIT=""``, ``CSC=False``),
        class name at the end (``CLASS_TOKEN_POSITION=end``). Must fit the text tower's context
        with the longest class name: the zoo's tiny CLIPs (16 tokens, two-word names) take <= 12.
    epochs, batch_size, lr: 100, 32, 0.002 (code: configs/trainers/AdvPT/vit_b16.yaml and
        vit_l14.yaml ``MAX_EPOCH``, ``BATCH_EMBEDDING_SIZE``, ``LR``; rn50.yaml uses 10, 512, 0.01).
    momentum, weight_decay: SGD's 0.9 and 5e-4 (Dassl's defaults, which the configs keep).
    warmup_epochs, warmup_lr: 1 epoch at a constant 1e-5, then cosine decay of ``lr`` per epoch
        (code: ``WARMUP_EPOCH: 1``, ``WARMUP_TYPE: constant``, ``WARMUP_CONS_LR: 1e-5``, ``cosine``).
    attack_batch_size: images per PGD batch when building the bank (memory only; results do not
        depend on it, as every sample's gradient is its own).

Call: ``AdvPT(...)(model, data, prompts, generator)``: ``model`` a ContrastiveModel implementing
PromptableText, in eval mode; ``data`` an ImageTextData with labels and ``class_names`` (the
names put after the context vectors); ``prompts`` the hand-crafted prompts per class (used by
``attack_loss="zeroshot_ce"`` and for the diagnostics in ``extras``). Returns a DefenseResult
whose ``model`` is a :class:`PromptTunedCLIP` sharing the caller's (unchanged) model, with
``class_embeddings`` (C, D) from the learnt prompts; ``extras`` holds ``context`` (n_ctx, W),
``class_embeddings``, ``class_names`` and accuracies of the learnt and the hand-crafted prompts
on the training bank.

Example (on a shipped model)::

    from mmsec.data import ShapesDataset, zeroshot_prompts; from mmsec.zoo import load_model
    model, data = load_model("shapes-clip-resnet"), ShapesDataset("train", n=1000).to_data()
    tuned = AdvPT(n_ctx=12, epochs=20)(model, data, zeroshot_prompts()).model
    # evaluate: ZeroShotObjective(tuned, class_embeddings=tuned.class_embeddings)

What to expect (shapes world, 300 test images, eps 8/255): against the paper's own evaluation
attack (the text-free embedding PGD above, which does not know the prompts) the learnt prompts
classify more adversarial images correctly (ResNet zoo CLIP 0.27 -> 0.46, ViT 0.12 -> 0.20), at
some clean cost (1.0 -> 0.91; 0.98 -> 0.72). Against PGD on the prompt-tuned classifier itself
(adaptive cross-entropy) the gain is nil or small: prompts cannot move image embeddings, they
only re-arrange the class text embeddings, and the attacker follows them. Audit with both.

Departures from the paper's code: PGD starts uniformly in the whole ball [-eps, eps] (mmsec's PGD,
Madry et al.), where the code draws the start in [0, eps] only; the loss is summed rather than
averaged over the batch (same sign, same PGD step); the bank is built from the data as given (the
code also uses un-augmented images for it) and the last partial mini-batch of an epoch is kept;
the text tower computes in float32 (the code runs CLIP in fp16); the "." CoOp appends to class
names is not added (the tiny tokenizer drops punctuation). The default n_ctx=32 does not fit the
zoo's 16-token text towers: pass n_ctx <= 12 there (a teaching error says so). The code's
evaluation attack is the same text-free embedding attack (PGD-40, eps 16/255), which does not
know the learnt prompts; mmsec's tests also attack the prompt-tuned classifier itself (adaptive).
"""

from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from ...attacks.adversarial.pgd import PGD
from ...attacks.objectives import ZeroShotObjective
from ...checks import check_budget, check_int, check_pixels
from ...data.datasets import ImageTextData
from ...models.base import require_promptable_text
from ...models.zeroshot import ZeroShotClassifier, class_text_embeddings
from ...progress import progress_bar
from ...registry import register
from ..base import DefenseResult, HardeningDefense

logger = logging.getLogger(__name__)

ATTACK_LOSSES = ("embedding_kl", "zeroshot_ce")
PLACEHOLDER = "X"  # CoOp's placeholder word; its token embeddings are replaced by the learnt vectors
CTX_INIT_STD = 0.02  # CoOp's random initialisation of a generic context


# ------------------------------------------------------------------------------------------
# Learnt prompts: "<sos> V1 .. Vn <class name> <eos>"
# ------------------------------------------------------------------------------------------
def _fits(model, name: str, n_ctx: int) -> bool:
    """Whether n_ctx placeholders + ``name`` tokenise to n_ctx single tokens followed by exactly
    the tokens of ``name`` alone (so nothing was truncated and the placeholders line up)."""
    full = model.tokenize([" ".join([PLACEHOLDER] * n_ctx + [name])])[0]  # (L,)
    alone = model.tokenize([name])[0]  # (L,)
    L = full.shape[0]
    if n_ctx + 2 > L:
        return False
    one_token_each = bool((full[1:1 + n_ctx] == full[1]).all())
    return one_token_each and torch.equal(full[1 + n_ctx:], alone[1:L - n_ctx])


def prompt_tokens(model, class_names: list[str], n_ctx: int) -> torch.Tensor:
    """(C, L) token ids of each class's prompt "X X .. X <class name>" (``n_ctx`` placeholders).

    The ids fix where the text tower pools (``<eos>``) and its attention mask; positions
    1 .. n_ctx are the slots of the learnt vectors. Raises a teaching error if a prompt does not
    fit the text tower's context.
    """
    for name in class_names:
        if not _fits(model, name, n_ctx):
            room = next((n for n in range(n_ctx - 1, 0, -1) if _fits(model, name, n)), 0)
            raise ValueError(f"n_ctx={n_ctx} learnt tokens plus the class name {name!r} and the start / end tokens "
                             f"do not fit the text tower's context ({model.tokenize([name]).shape[1]} tokens); "
                             + (f"use n_ctx <= {room}" if room else "the class name alone fills it"))
    return model.tokenize([" ".join([PLACEHOLDER] * n_ctx + [name]) for name in class_names])


def learnt_class_embeddings(model, context: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(C, D) L2-normalised text embeddings of the prompts ``tokens`` with ``context`` (n_ctx, W)
    in the placeholder slots. Differentiable in ``context``."""
    n_ctx = context.shape[0]
    fixed = model.token_embeddings(tokens).detach()  # (C, L, W): <sos>, placeholders, name, <eos>, pad
    ctx = context.to(fixed.dtype).unsqueeze(0).expand(fixed.shape[0], -1, -1)  # (C, n_ctx, W)
    embeds = torch.cat([fixed[:, :1], ctx, fixed[:, 1 + n_ctx:]], dim=1)  # (C, L, W)
    return F.normalize(model.encode_text_embeddings(embeds, tokens).float(), dim=-1)  # (C, D)


class PromptTunedCLIP(nn.Module):
    """A frozen ContrastiveModel plus learnt prompt context vectors: what AdvPT returns.

    * ``encode_image``, ``normalize``, ``tokenize``, ``encode_text`` and ``logit_scale`` are the
      wrapped model's, unchanged (the same objects: prompt tuning never touches CLIP's weights),
      so hand-written text still works (retrieval, other prompts).
    * ``class_embeddings`` (C, D), L2-normalised, are the embeddings of the learnt prompts
      "[V1] .. [Vn] <class name>", one per ``class_names`` entry: the zero-shot head. Evaluate with
      ``ZeroShotObjective(tuned, class_embeddings=tuned.class_embeddings)`` or
      :meth:`zeroshot_classifier`; ``ZeroShotObjective(tuned, prompts)`` would classify with the
      hand-crafted prompts instead, i.e. evaluate the undefended head.

    The wrapped model is shared, not copied (``tuned.clip is model``). The wrapper stays in eval
    mode, and :meth:`train` never propagates to the shared model.
    """

    def __init__(self, model: nn.Module, context: torch.Tensor, class_names: list[str]):
        super().__init__()
        require_promptable_text(model, "PromptTunedCLIP")
        if context.ndim != 2:
            raise ValueError(f"context must be (n_ctx, W) learnt vectors, got shape {tuple(context.shape)}")
        self.clip = model
        self.image_size = model.image_size
        self.class_names = list(class_names)
        tokens = prompt_tokens(model, self.class_names, context.shape[0])
        self.register_buffer("context", context.detach().clone())  # (n_ctx, W)
        self.register_buffer("prompt_tokens", tokens)  # (C, L)
        with torch.no_grad():
            self.register_buffer("class_embeddings", learnt_class_embeddings(model, self.context, tokens))  # (C, D)
        self.training = False

    def train(self, mode: bool = True) -> PromptTunedCLIP:
        # The wrapped CLIP is frozen and shared with the caller: never flip its BatchNorm / dropout mode.
        self.training = mode
        return self

    @property
    def n_ctx(self) -> int:
        return self.context.shape[0]

    def zeroshot_classifier(self) -> ZeroShotClassifier:
        """Zero-shot classifier over ``class_names`` with the learnt prompts."""
        return ZeroShotClassifier(self, class_embeddings=self.class_embeddings)

    # ContrastiveModel, delegated to the wrapped model
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.clip.tokenize(texts)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.clip.normalize(pixels)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(pixels)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(tokens)

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.token_embeddings(tokens)

    def encode_text_embeddings(self, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text_embeddings(embeds, tokens)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale


# ------------------------------------------------------------------------------------------
# The paper code's attack objective: push the image embedding's softmax away from the clean one
# ------------------------------------------------------------------------------------------
class _EmbeddingKL:
    """Per-sample KL( softmax(f(x)) || softmax(f(x')) ) of image embeddings (no text), for PGD."""

    threat_model = "white-box"

    def __init__(self, model: nn.Module, clean_embeddings: torch.Tensor):
        self.model = model
        self.target = F.softmax(clean_embeddings.float(), dim=-1).detach()  # (B, D)

    def loss(self, pixels: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        log_q = F.log_softmax(self.model.encode_image(pixels).float(), dim=-1)  # (B, D)
        return F.kl_div(log_q, self.target, reduction="none").sum(-1)  # (B,)

    @torch.no_grad()
    def success(self, pixels: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        return self.loss(pixels, labels, targets) > 0  # the embedding moved (not used by AdvPT)


# ------------------------------------------------------------------------------------------
# The defense
# ------------------------------------------------------------------------------------------
@register("defenses", "advpt")
class AdvPT(HardeningDefense):
    """AdvPT (Zhang et al., ECCV 2024): learn prompt context vectors on adversarial image embeddings; CLIP frozen."""

    name = "advpt"
    paper = "Zhang et al., ECCV 2024"
    needs_labels = True

    def __init__(self, eps: float = 8 / 255,  # code: DATASET.TRAIN_EPS = 8
                 steps: int = 10,  # code: PGD(num_iters=10) for the training bank
                 alpha: float | None = None,  # None: 1.25 * eps / steps (code: attackFeature.PGD)
                 attack_loss: str = "embedding_kl",  # code: KL of softmaxed image embeddings, no text
                 n_ctx: int = 32,  # code: scripts/main.sh NCTX=32
                 epochs: int = 100,  # code: vit_b16.yaml / vit_l14.yaml MAX_EPOCH (rn50.yaml: 10)
                 batch_size: int = 32,  # code: BATCH_EMBEDDING_SIZE (vit) (rn50.yaml: 512)
                 lr: float = 0.002,  # code: OPTIM.LR (vit) (rn50.yaml: 0.01), SGD
                 momentum: float = 0.9,  # Dassl default
                 weight_decay: float = 5e-4,  # Dassl default
                 warmup_epochs: int = 1,  # code: WARMUP_EPOCH 1, constant
                 warmup_lr: float = 1e-5,  # code: WARMUP_CONS_LR
                 attack_batch_size: int = 256):  # memory only
        self.eps = check_budget("eps", eps, 0.0, 1.0)
        self.steps = check_int("steps", steps, 1)
        if alpha is None:
            alpha = 1.25 * self.eps / self.steps
        self.alpha = check_budget("alpha", alpha, 0.0, 1.0)
        if not isinstance(attack_loss, str) or attack_loss not in ATTACK_LOSSES:
            raise ValueError(f"attack_loss must be one of {ATTACK_LOSSES}, got {attack_loss!r}")
        self.attack_loss = attack_loss
        self.n_ctx = check_int("n_ctx", n_ctx, 1)
        self.epochs = check_int("epochs", epochs, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.lr = check_budget("lr", lr, 0.0, math.inf, hint=" (SGD learning rate, e.g. 0.002)")
        if self.lr == 0:
            raise ValueError("lr must be > 0 (SGD learning rate, e.g. 0.002), got 0")
        self.momentum = check_budget("momentum", momentum, 0.0, 0.999, hint=" (SGD momentum, e.g. 0.9)")
        self.weight_decay = check_budget("weight_decay", weight_decay, 0.0, 1.0, hint=" (e.g. 5e-4)")
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, 0)
        self.warmup_lr = check_budget("warmup_lr", warmup_lr, 0.0, math.inf, hint=" (e.g. 1e-5)")
        self.attack_batch_size = check_int("attack_batch_size", attack_batch_size, 1)

    def epoch_lr(self, epoch: int) -> float:
        """Dassl's schedule: ``warmup_lr`` for the warm-up epochs, then cosine decay of ``lr`` per epoch."""
        if epoch < self.warmup_epochs:
            return self.warmup_lr
        return 0.5 * self.lr * (1 + math.cos(math.pi * (epoch - self.warmup_epochs) / self.epochs))

    def harden(self, model: nn.Module, data: ImageTextData, prompts: list[list[str]] | None,
               generator: torch.Generator) -> DefenseResult:
        require_promptable_text(model, "AdvPT")
        if getattr(model, "training", False):
            raise ValueError(f"AdvPT: the model ({type(model).__name__}) is in training mode; call model.eval() "
                             "first (AdvPT never changes the model, not even its BatchNorm statistics)")
        check_pixels(data.pixels, "data.pixels")
        if len(data) == 0:
            raise ValueError("AdvPT: data is empty")
        names = data.class_names
        if not names:
            raise ValueError("AdvPT puts each class name after the learnt context vectors, so data.class_names must "
                             "name every label (ShapesDataset(...).to_data() and ImageFolderDataset set them)")
        if len(prompts) != len(names):
            raise ValueError(f"prompts has {len(prompts)} classes but data.class_names has {len(names)}")
        if int(data.labels.min()) < 0 or int(data.labels.max()) >= len(names):
            raise ValueError(f"labels must lie in [0, {len(names) - 1}] (one per class name), got "
                             f"[{int(data.labels.min())}, {int(data.labels.max())}]")
        device = model.logit_scale.device
        tokens = prompt_tokens(model, list(names), self.n_ctx)  # (C, L); fails early if the prompt is too long
        labels = data.labels.to(device)  # (N,)
        start = time.perf_counter()

        # 1. The adversarial embedding bank, built once against the frozen image encoder.
        bank, clean = self._adversarial_bank(model, data.pixels, labels, prompts, generator)  # (N, D) x2
        attack_seconds = time.perf_counter() - start

        # 2-3. Learn the shared context vectors by cross-entropy on the bank; CLIP stays frozen.
        width = model.token_embeddings(tokens[:1]).shape[-1]
        context = (torch.randn(self.n_ctx, width, generator=generator) * CTX_INIT_STD).to(device)  # (n_ctx, W)
        context.requires_grad_(True)
        optimizer = torch.optim.SGD([context], lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        scale = model.logit_scale.detach().float()
        bank_n = F.normalize(bank, dim=-1)  # (N, D)
        losses: list[float] = []
        with progress_bar(self.epochs, "AdvPT prompt tuning") as bar:
            for epoch in range(self.epochs):
                for group in optimizer.param_groups:
                    group["lr"] = self.epoch_lr(epoch)
                order = torch.randperm(len(bank_n), generator=generator).to(device)
                for idx in order.split(self.batch_size):
                    text = learnt_class_embeddings(model, context, tokens)  # (C, D)
                    logits = scale * bank_n[idx] @ text.T  # (b, C)
                    loss = F.cross_entropy(logits, labels[idx])
                    # Gradient w.r.t. the context only: CLIP's parameters never receive a .grad.
                    (grad,) = torch.autograd.grad(loss, [context])  # (n_ctx, W)
                    context.grad = grad
                    optimizer.step()
                    losses.append(loss.item())
                bar.advance(loss=f"{losses[-1]:.3f}")

        tuned = PromptTunedCLIP(model, context.detach(), list(names))
        with torch.no_grad():
            handcrafted = class_text_embeddings(model, prompts).to(device)  # (C, D)
            extras = {
                "context": tuned.context.clone(),
                "class_embeddings": tuned.class_embeddings.clone(),
                "class_names": list(names),
                "attack_seconds": attack_seconds,
                "train_adv_accuracy_learnt": _accuracy(bank_n, tuned.class_embeddings, labels),
                "train_adv_accuracy_handcrafted": _accuracy(bank_n, handcrafted, labels),
                "train_clean_accuracy_learnt": _accuracy(F.normalize(clean, dim=-1), tuned.class_embeddings, labels),
                "train_clean_accuracy_handcrafted": _accuracy(F.normalize(clean, dim=-1), handcrafted, labels),
            }
        logger.info("AdvPT: %d steps, final loss %.4f, training-bank accuracy %.3f (hand-crafted prompts %.3f)",
                    len(losses), losses[-1], extras["train_adv_accuracy_learnt"],
                    extras["train_adv_accuracy_handcrafted"])
        return DefenseResult(model=tuned, losses=losses, seconds=time.perf_counter() - start, steps=len(losses),
                             params=self.params(), extras=extras)

    def _adversarial_bank(self, model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor,
                          prompts: list[list[str]], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) image embeddings of the PGD images and (N, D) of the clean images (float32)."""
        pgd = PGD(eps=self.eps, alpha=self.alpha, steps=self.steps, norm="linf", random_start=True)
        zeroshot = ZeroShotObjective(model, prompts) if self.attack_loss == "zeroshot_ce" else None
        device = labels.device
        adv_emb, clean_emb = [], []
        with progress_bar(len(pixels), f"AdvPT adversarial bank (PGD-{self.steps})") as bar:
            for s in range(0, len(pixels), self.attack_batch_size):
                x = pixels[s:s + self.attack_batch_size].to(device)  # (b, 3, H, W)
                y = labels[s:s + self.attack_batch_size]
                with torch.no_grad():
                    clean = model.encode_image(x).float()  # (b, D)
                objective = zeroshot if zeroshot is not None else _EmbeddingKL(model, clean)
                x_adv = pgd(objective, x, y, generator=generator).adv_pixels if self.eps > 0 else x
                with torch.no_grad():
                    adv_emb.append(model.encode_image(x_adv).float())
                clean_emb.append(clean)
                bar.advance(len(x))
        return torch.cat(adv_emb), torch.cat(clean_emb)


def _accuracy(image_n: torch.Tensor, class_n: torch.Tensor, labels: torch.Tensor) -> float:
    return (image_n @ class_n.T).argmax(1).eq(labels).float().mean().item()
