"""Re-contexted LFW images for ``verify-lfw --context``: the same face in another (or no) background.

The paper's claim is that hallucinated context teaches a recogniser to rely on the face. ``--context`` tests that
directly: the *second* image of every pair is scored with its background replaced, the first is left as it is.

* ``original``: unchanged (the reference; always scored).
* ``masked``: the background of the 128 px aligned crop (``mask == 0``, the region the generator hallucinates)
  is set to black.
* ``donor``: the background is replaced by a real donor's context (:class:`augmentor.donors.DonorBank`, the
  nearest donor by pose; donors of the same identity are the bank's business to avoid), with the plain composition
  (``recontext(refine=False)``: similarity fit, Poisson seam), as in issue 17's grid.
* ``donor-refined``: the same donor with the seamless composition (``recontext(refine=True)``: outline warp onto
  the target's jaw and brows, multi-band seam; docs/donors.md).

Only aligned images have a mask: a centre-crop fallback is scored unchanged under every context and listed as
such. Re-contexted crops are cached in ``OUT/contexts/<context>.npz``, keyed by the images and the donor bank.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from augmentor.errors import InputError

log = logging.getLogger(__name__)

ORIGINAL, MASKED, DONOR, DONOR_REFINED = "original", "masked", "donor", "donor-refined"
CONTEXTS = (ORIGINAL, MASKED, DONOR, DONOR_REFINED)
REFINE = {DONOR: False, DONOR_REFINED: True}  # the contexts that take a donor's, and whether the seam is refined


class ContextError(InputError):
    """A context that cannot be made (unknown name, missing donor bank or donor method)."""


def parse_contexts(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``["masked,donor", "original"]`` -> ``("original", "masked", "donor")``: ``original`` first, then in
    :data:`CONTEXTS` order, each once.

    Raises:
        ContextError: an unknown name.
    """
    names = {part.strip() for value in values for part in value.split(",") if part.strip()}
    unknown = sorted(names - set(CONTEXTS))
    if unknown:
        raise ContextError(f"unknown context {', '.join(unknown)}; choose from {', '.join(CONTEXTS)}")
    return tuple(c for c in CONTEXTS if c in names or c == ORIGINAL)


def needs_donors(contexts: tuple[str, ...] | list[str]) -> bool:
    """Whether any of ``contexts`` takes a donor's context (so ``--donors`` is needed)."""
    return any(c in REFINE for c in contexts)


def load_donor_bank(path: str | Path):
    """``augmentor.donors.DonorBank.load(path)``, imported only when ``--context donor`` is asked for.

    Raises:
        ContextError: no path, a missing path, or no donor method in this checkout.
    """
    if path is None:
        raise ContextError("--context donor needs --donors PATH (a donor bank built from training faces)")
    path = Path(path)
    if not path.exists():
        raise ContextError(f"--donors {path} does not exist")
    try:
        from augmentor.donors import DonorBank
    except ImportError as exc:
        raise ContextError(
            "--context donor needs the donor-context method (augmentor.donors.DonorBank), which this checkout "
            f"does not have ({exc})"
        ) from exc
    return DonorBank.load(path)


def black_out(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 crops with the background (``masks == 0``, ``[N, H, W]``) set to black."""
    return images * (masks[..., None] > 0).astype(np.uint8)


def path_fingerprint(path: str | Path) -> str:
    """A short hash of a file's (or every file under a folder's) name, size and modification time."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    text = json.dumps([[str(p.relative_to(path) if path.is_dir() else p), *_stat(p)] for p in files])
    return hashlib.sha1(f"{path.resolve()}{text}".encode()).hexdigest()[:16]


def _stat(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@dataclass
class ContextImages:
    """The re-contexted crops of some images (the pairs' second images), in ``names`` order."""

    context: str
    names: list[str]
    images: np.ndarray  # [M, 128, 128, 3] uint8
    changed: np.ndarray  # [M] bool: re-contexted (False: a centre-crop fallback, or no donor found)
    key: str  # cache key: the context, the images and the donor bank
    donors: dict[str, dict] = field(default_factory=dict)  # donor context: name -> donor image, identity, distance

    def summary(self) -> dict:
        """The counts for ``report.json``."""
        unchanged = [n for n, c in zip(self.names, self.changed, strict=True) if not c]
        info: dict = {"images": len(self.names), "recontexted": int(self.changed.sum()), "unchanged": unchanged}
        if self.donors:
            distances = [d["distance"] for d in self.donors.values()]
            info["donor_distance_mean"] = float(np.mean(distances))
            info["distinct_donors"] = len({d["donor_image_id"] for d in self.donors.values()})
        return info


def make_context(
    context: str,
    names: list[str],
    images: np.ndarray,
    masks: np.ndarray,
    landmarks: list[np.ndarray | None],
    cache: Path,
    bank=None,
    bank_fingerprint: str = "",
) -> ContextImages:
    """Re-context ``images`` (the aligned crops of ``names``), or read them from ``cache`` when the key matches.

    Args:
        context: ``masked``, ``donor`` (plain composition) or ``donor-refined`` (seamless composition).
        names: Relative LFW paths (``Name/Name_0001.jpg``); the folder is the identity given to the donor bank.
        images: ``[M, 128, 128, 3]`` uint8 aligned crops.
        masks: ``[M, 128, 128]`` uint8 face masks (1 or 255 = face, 0 = background).
        landmarks: ``[68, 2]`` aligned landmarks per image, ``None`` for a centre-crop fallback (left unchanged).
        cache: The ``.npz`` file to read or write.
        bank: The donor bank (the donor contexts only).
        bank_fingerprint: Identifies the bank in the cache key.
    """
    aligned = np.array([lm is not None for lm in landmarks], bool)
    parts = [context, names, aligned.tolist(), bank_fingerprint]
    if context in REFINE:  # a donor cache from before the composition was chosen here is stale
        parts.append("seamless" if REFINE[context] else "plain")
    key = hashlib.sha1(json.dumps(parts).encode()).hexdigest()
    if cache.is_file():
        with np.load(cache) as stored:
            if str(stored["key"]) == key:
                log.info("%s context from %s", context, cache)
                donors = json.loads(str(stored["donors"]))
                return ContextImages(context, names, stored["images"], stored["changed"], key, donors)
    out = images.copy()
    changed = aligned.copy()
    donors: dict[str, dict] = {}
    where = np.flatnonzero(aligned)
    if context == MASKED:
        out[where] = black_out(images[where], masks[where])
    elif context in REFINE:
        if bank is None:
            raise ContextError(f"the {context} context needs a donor bank")
        results = bank.recontext(
            np.ascontiguousarray(images[where]),
            np.ascontiguousarray(masks[where]),
            np.stack([landmarks[i] for i in where]).astype(np.float32) if len(where) else np.zeros((0, 68, 2)),
            [names[i].split("/")[0] for i in where],
            k=1,
            refine=REFINE[context],
        )
        for i, found in zip(where, results, strict=True):
            if not found:
                changed[i] = False
                continue
            best = found[0]
            out[i] = best.image
            donors[names[i]] = {
                "donor_image_id": str(best.donor_image_id),
                "donor_identity": str(best.donor_identity),
                "distance": float(best.distance),
            }
    else:
        raise ContextError(f"no images to make for context {context!r}")
    if not changed.all():
        log.warning("%s context: %d of %d images left unchanged", context, int((~changed).sum()), len(names))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}")
    with tmp.open("wb") as fh:
        np.savez(fh, key=np.array(key), images=out, changed=changed, donors=np.array(json.dumps(donors)))
    tmp.replace(cache)
    return ContextImages(context, names, out, changed, key, donors)
