"""Quality measurements written into zoo cards: zero-shot accuracy and retrieval recall; a classifier's
accuracy (overall and per attribute) and recognition rates.

Fusion models (:class:`~mmsec.models.base.FusionModel`) also get ALBEF's retrieval protocol:
rank the gallery by ITC similarity, then re-rank each query's top ``k`` by the ITM head.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from ..data.shapes import Scene, ShapesWorld, zeroshot_prompts
from ..metrics import retrieval_recalls, topk_accuracy
from ..metrics.generation import RECOGNITION_THRESHOLD, recognition_rate
from ..models.base import ContrastiveModel, FusionModel, ImageClassifier, require_family, require_fusion
from ..models.zeroshot import ZeroShotClassifier, embed_images, embed_texts
from ..train.classifier import OUTLIER_KINDS, shapes_outliers

# The caption variant used as each image's text in retrieval: the most specific template.
RETRIEVAL_CAPTION = 0


@torch.no_grad()
def zeroshot_accuracy(model: ContrastiveModel, world: ShapesWorld, n: int, split: str = "test") -> dict[str, float]:
    batch = world.batch(split, 0, n)
    scores = ZeroShotClassifier(model, zeroshot_prompts()).scores(batch.pixels())
    return {"zeroshot_top1": topk_accuracy(scores, batch.labels, 1),
            "zeroshot_top5": topk_accuracy(scores, batch.labels, 5)}


def true_captions(scene: Scene) -> set[str]:
    """Every caption text that is true of ``scene``: its own, and (with a second object) the
    captions that leave the second object out."""
    caps = set(scene.captions())
    if scene.second is not None:
        caps |= set(replace(scene, second=None).captions())
    return caps


def _gallery(world: ShapesWorld, n: int, split: str):
    """(batch, unique caption texts, text index of each image, set of image indices of each text)."""
    batch = world.batch(split, 0, n)
    texts = [caps[RETRIEVAL_CAPTION] for caps in batch.captions]
    # Deduplicate the caption gallery; each unique text maps to every image it describes.
    unique = list(dict.fromkeys(texts))
    index = {t: j for j, t in enumerate(unique)}
    text_of_image = [index[t] for t in texts]
    images_of_text: list[set[int]] = [set() for _ in unique]
    for i, j in enumerate(text_of_image):
        images_of_text[j].add(i)
    return batch, unique, text_of_image, images_of_text


@torch.no_grad()
def retrieval(model: ContrastiveModel, world: ShapesWorld, n: int, split: str = "test") -> dict[str, float]:
    """Image<->text recall@1/5/10 on ``n`` images, one caption each.

    Shapes-world captions repeat (two scenes can share the same description), so a retrieved
    caption counts as correct when its *text* equals the image's own caption.
    """
    batch, unique, text_of_image, images_of_text = _gallery(world, n, split)
    img = embed_images(model, batch.pixels())
    txt = embed_texts(model, unique)
    sim = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T
    out = {}
    from ..metrics import recall_at_k

    for k in (1, 5, 10):
        out[f"i2t_r{k}"] = recall_at_k(sim, torch.tensor(text_of_image), k)
        out[f"t2i_r{k}"] = recall_at_k(sim.T, images_of_text, k)
    out["retrieval_gallery_texts"] = float(len(unique))
    return out


@torch.no_grad()
def itm_rerank(model: FusionModel, sim: torch.Tensor, image_feats: torch.Tensor, text_embeds: torch.Tensor,
               tokens: torch.Tensor, k: int, images_are_queries: bool, batch_size: int = 1024) -> torch.Tensor:
    """ALBEF's re-ranking: each query keeps its top ``k`` gallery items by ITC similarity ``sim``
    (Q, G), scored by the ITM head's "match" logit; every other item scores -inf. Returns (Q, G)."""
    q_count, g_count = sim.shape
    k = min(k, g_count)
    top = sim.topk(k, dim=1).indices  # (Q, k)
    query = torch.arange(q_count).repeat_interleave(k)  # (Q*k,)
    item = top.flatten()
    img_idx, txt_idx = (query, item) if images_are_queries else (item, query)
    scores = []
    for s in range(0, len(query), batch_size):
        i, t = img_idx[s:s + batch_size], txt_idx[s:s + batch_size]
        fused = model.fuse_features(image_feats[i], text_embeds[t], tokens[t])  # (b, D_fused)
        scores.append(model.itm_head(fused)[:, 1].float())  # ALBEF ranks by the "match" logit
    out = torch.full((q_count, g_count), float("-inf"))
    out.scatter_(1, top, torch.cat(scores).view(q_count, k))
    return out


@torch.no_grad()
def retrieval_itm(model: FusionModel, world: ShapesWorld, n: int, k: int = 16, split: str = "test",
                  batch_size: int = 500) -> dict[str, float]:
    """Recall@1/5/10 after re-ranking each query's ITC top ``k`` by ITM (ALBEF, Sec. 5), on the
    gallery of :func:`retrieval`; keys ``i2t_r1_itm`` ... ``t2i_r10_itm`` and ``itm_rerank_k``.

    Also top-1 accuracy where a retrieved caption (image) counts when the caption is *true* of
    the image, not only when it is the image's own text: ``i2t_r1_true`` / ``t2i_r1_true`` (ITC)
    and ``i2t_r1_itm_true`` / ``t2i_r1_itm_true`` (ITM). ITM judges whether a caption is true,
    not whether it is the most specific true one, so for an image with a second object it may
    rank "a red circle in the top left" (true, from another scene) above the image's own
    "... and a blue square", which the exact-text recall counts as a miss."""
    require_fusion(model, "retrieval_itm")
    from ..metrics import recall_at_k

    batch, unique, text_of_image, images_of_text = _gallery(world, n, split)
    pixels = batch.pixels()
    feats = torch.cat([model.image_features(pixels[i:i + batch_size]) for i in range(0, n, batch_size)])
    tokens = model.tokenize(unique)
    embeds = model.text_token_embeddings(tokens)  # (T, L, W_txt)
    sim = (torch.nn.functional.normalize(embed_images(model, pixels), dim=-1)
           @ torch.nn.functional.normalize(embed_texts(model, unique), dim=-1).T)  # (n, T)
    i2t = itm_rerank(model, sim, feats, embeds, tokens, k, images_are_queries=True)
    t2i = itm_rerank(model, sim.T, feats, embeds, tokens, k, images_are_queries=False)
    out = {}
    for r in (1, 5, 10):
        out[f"i2t_r{r}_itm"] = recall_at_k(i2t, torch.tensor(text_of_image), r)
        out[f"t2i_r{r}_itm"] = recall_at_k(t2i, images_of_text, r)
    truth = [true_captions(s) for s in batch.scenes]
    for name, i2t_scores, t2i_scores in (("", sim, sim.T), ("_itm", i2t, t2i)):
        top_text, top_image = i2t_scores.argmax(1).tolist(), t2i_scores.argmax(1).tolist()
        out[f"i2t_r1{name}_true"] = sum(unique[t] in truth[i] for i, t in enumerate(top_text)) / n
        out[f"t2i_r1{name}_true"] = sum(unique[t] in truth[i] for t, i in enumerate(top_image)) / len(unique)
    out["itm_rerank_k"] = float(min(k, len(unique)))
    return out


@torch.no_grad()
def binding_accuracy(model: FusionModel, world: ShapesWorld, n: int, split: str = "test") -> dict[str, float]:
    """Attribute binding on ``n`` two-object scenes: how often the true caption outscores the same
    caption with the two objects' colours swapped ("a red circle ... and a blue square" vs "a blue
    circle ... and a red square"), by ITC cosine (``binding_itc``) and by the ITM match logit
    (``binding_itm``). 0.5 is chance; a bag of words cannot tell the two apart."""
    require_fusion(model, "binding_accuracy")
    two = ShapesWorld(image_size=world.image_size, seed=world.seed, second_object_prob=1.0, textures=world.textures)
    batch = two.batch(split, 0, n)
    true = [s.captions()[RETRIEVAL_CAPTION] for s in batch.scenes]
    swapped = [replace(s, color=s.second[1], second=(s.second[0], s.color)).captions()[RETRIEVAL_CAPTION]
               for s in batch.scenes]
    pixels = batch.pixels()
    img = F.normalize(model.encode_image(pixels), dim=-1)  # (n, D)
    itc, itm = [], []
    for texts in (true, swapped):
        tokens = model.tokenize(texts)
        itc.append((img * F.normalize(model.encode_text(tokens), dim=-1)).sum(-1))  # (n,)
        itm.append(model.itm_logits(pixels, tokens)[:, 1])  # (n,)
    return {"binding_itc": (itc[0] > itc[1]).float().mean().item(),
            "binding_itm": (itm[0] > itm[1]).float().mean().item()}


def shuffled_tiles(pixels: torch.Tensor, grid: int, generator: torch.Generator) -> torch.Tensor:
    """Each image cut into ``grid`` x ``grid`` tiles put back in a random order (its own per image)."""
    n, c, h, w = pixels.shape
    th, tw = h // grid, w // grid
    tiles = pixels[:, :, :th * grid, :tw * grid].reshape(n, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(n, grid * grid, c, th, tw)
    order = torch.argsort(torch.rand(n, grid * grid, generator=generator), dim=1)
    tiles = tiles[torch.arange(n)[:, None], order]
    out = tiles.reshape(n, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, th * grid, tw * grid)
    return out


@torch.no_grad()
def classifier_metrics(model: ImageClassifier, world: ShapesWorld, n: int, split: str = "test",
                       seed: int = 0) -> dict[str, float]:
    """A shapes-world classifier on ``n`` ``split`` scenes of ``world``: top-1 ``accuracy``, and how often
    the predicted class has the true colour (``colour_accuracy``) and shape (``shape_accuracy``);
    ``accuracy_32px``: the same scenes rendered at 32 px (resized inside the model).

    Recognition rates (top probability > 0.9) of the real images and of ``n`` images of no class each:
    the outlier kinds a judge may be trained on (:func:`~mmsec.train.classifier.shapes_outliers`, here
    from ``split``), and two kinds no recipe trains on: Gaussian noise (mean 0.5, sd 0.25, clipped) and
    the real images cut into 4 x 4 tiles (a quarter of the side) put back in random order (pieces of the
    shape kept, the shape gone). Random choices are seeded by ``seed``."""
    require_family(model, "classifier", "classifier_metrics")
    batch = world.batch(split, 0, n)
    pixels = batch.pixels()
    pred = model.logits(pixels).argmax(1)
    names = [c.split() for c in model.classes]
    truth = [names[k] for k in batch.labels.tolist()]
    guess = [names[k] for k in pred.tolist()]
    big = ShapesWorld(image_size=32, seed=world.seed, second_object_prob=world.second_object_prob,
                      textures=world.textures).batch(split, 0, n)
    gen = torch.Generator().manual_seed(seed)
    out = {"accuracy": (pred == batch.labels).float().mean().item(),
           "colour_accuracy": sum(g[:-1] == t[:-1] for g, t in zip(guess, truth, strict=True)) / n,
           "shape_accuracy": sum(g[-1] == t[-1] for g, t in zip(guess, truth, strict=True)) / n,
           "accuracy_32px": (model.logits(big.pixels()).argmax(1) == big.labels).float().mean().item(),
           "recognition_threshold": RECOGNITION_THRESHOLD,
           "recognition_rate_real": recognition_rate(model, pixels)}
    for kind in OUTLIER_KINDS:
        out[f"recognition_rate_{kind}"] = recognition_rate(model, shapes_outliers(world, split, 0, n, gen, (kind,)))
    gauss = (0.5 + 0.25 * torch.randn(pixels.shape, generator=gen)).clamp(0, 1)
    out["recognition_rate_gaussian_noise"] = recognition_rate(model, gauss)
    out["recognition_rate_shuffled_tiles"] = recognition_rate(model, shuffled_tiles(pixels, 4, gen))
    return out


__all__ = ["binding_accuracy", "classifier_metrics", "shuffled_tiles", "itm_rerank", "retrieval", "retrieval_itm", "retrieval_recalls", "true_captions",
           "zeroshot_accuracy"]
