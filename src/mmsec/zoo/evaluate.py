"""Quality measurements written into zoo cards: zero-shot accuracy and retrieval recall."""

from __future__ import annotations

import torch

from ..data.shapes import ShapesWorld, zeroshot_prompts
from ..metrics import retrieval_recalls, topk_accuracy
from ..models.base import ContrastiveModel
from ..models.zeroshot import ZeroShotClassifier, embed_images, embed_texts

# The caption variant used as each image's text in retrieval: the most specific template.
RETRIEVAL_CAPTION = 0


@torch.no_grad()
def zeroshot_accuracy(model: ContrastiveModel, world: ShapesWorld, n: int, split: str = "test") -> dict[str, float]:
    batch = world.batch(split, 0, n)
    scores = ZeroShotClassifier(model, zeroshot_prompts()).scores(batch.pixels())
    return {"zeroshot_top1": topk_accuracy(scores, batch.labels, 1),
            "zeroshot_top5": topk_accuracy(scores, batch.labels, 5)}


@torch.no_grad()
def retrieval(model: ContrastiveModel, world: ShapesWorld, n: int, split: str = "test") -> dict[str, float]:
    """Image<->text recall@1/5/10 on ``n`` images, one caption each.

    Shapes-world captions repeat (two scenes can share the same description), so a retrieved
    caption counts as correct when its *text* equals the image's own caption.
    """
    batch = world.batch(split, 0, n)
    texts = [caps[RETRIEVAL_CAPTION] for caps in batch.captions]
    first_with_text: dict[str, int] = {}
    for i, t in enumerate(texts):
        first_with_text.setdefault(t, i)
    # Deduplicate the caption gallery; each unique text maps to every image it describes.
    unique = list(first_with_text)
    text_of_image = [unique.index(t) for t in texts]
    img = embed_images(model, batch.pixels())
    txt = embed_texts(model, unique)
    sim = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T
    out = {}
    images_of_text: list[set[int]] = [set() for _ in unique]
    for i, j in enumerate(text_of_image):
        images_of_text[j].add(i)
    from ..metrics import recall_at_k

    for k in (1, 5, 10):
        out[f"i2t_r{k}"] = recall_at_k(sim, torch.tensor(text_of_image), k)
        out[f"t2i_r{k}"] = recall_at_k(sim.T, images_of_text, k)
    out["retrieval_gallery_texts"] = float(len(unique))
    return out


__all__ = ["retrieval", "retrieval_recalls", "zeroshot_accuracy"]
