"""Output file names of the bulk pipeline: deterministic, collision-free and safe whatever the identity strings hold.

An identity or image name is kept verbatim when it is a plain file name (ASCII letters, digits, ``.``, ``_``,
``-``; no leading dot or dash; at most :data:`MAX_VERBATIM` characters; not a Windows device name). Anything else
becomes an ASCII slug, ``+`` and a hash of the exact string: ``José María`` -> ``Jose_Maria+6dd315b3e50e``. ``+``
never occurs in a verbatim name, so the two kinds never meet. The manifest keeps the original strings; only paths
use these names.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence

MAX_VERBATIM = 100  # longer names are shortened and hashed (file systems stop at 255 bytes)
SLUG_CHARS = 48  # characters of the readable part of a hashed name
HASH_CHARS = 12  # hex digits of sha256 in a hashed name (48 bits)
_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul"] + [f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)]
)  # reserved names on Windows and SMB shares, with or without an extension


def is_verbatim(name: str) -> bool:
    """Whether ``name`` can be used as a file name as it is."""
    return (
        0 < len(name) <= MAX_VERBATIM
        and _SAFE.fullmatch(name) is not None
        and name.split(".", 1)[0].lower() not in _WINDOWS_DEVICES
    )


def hashed_name(name: str) -> str:
    """``<ascii slug>+<sha256 prefix>`` of any string (lone surrogates and NUL included)."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    ascii_text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = _UNSAFE_RUN.sub("_", ascii_text).lstrip("._-")[:SLUG_CHARS].rstrip(".") or "x"
    if slug.split(".", 1)[0].lower() in _WINDOWS_DEVICES:  # "aux.txt+..." is still AUX to Windows
        slug = f"_{slug}"
    return f"{slug}+{digest}"


def safe_name(name: str) -> str:
    """``name`` itself when :func:`is_verbatim`, else :func:`hashed_name`. Injective up to sha256 collisions."""
    return name if is_verbatim(name) else hashed_name(name)


def _image_stem(image_id: str, identity: str) -> str:
    """The part of an image id that names its file inside the identity folder.

    ``Aaron/Aaron_0001`` of identity ``Aaron`` (LFW, CASIA) and ``000001`` (CelebA) keep their last component;
    deeper ids (``folder`` datasets) keep the whole id, which is then hashed since it holds a ``/``.
    """
    folder, _, base = image_id.rpartition("/")
    return base if folder in ("", identity) else image_id


def output_stems(identities: Sequence[str], image_ids: Sequence[str]) -> list[str]:
    """Relative output stem ``<identity folder>/<image name>`` of every image, unique even on case-blind disks.

    A pure function of the whole listing, so a rerun computes the same names. Names that would meet (also when
    compared case-insensitively, for macOS and Windows shares) fall back to hashes of the full strings.

    Args:
        identities: Identity of each image.
        image_ids: Unique image id of each image.

    Returns:
        One ``folder/name`` per image, without the copy suffix and extension.

    Raises:
        ValueError: the lists differ in length, or two stems still meet (sha256 prefix collision).
    """
    if len(identities) != len(image_ids):
        raise ValueError(f"{len(identities)} identities for {len(image_ids)} image ids")
    folders = _deduplicate({identity: safe_name(identity) for identity in set(identities)})
    safe: dict[str, str] = {}  # image names repeat across folders (CASIA's 001.jpg ...): check each once
    by_folder: dict[str, dict[tuple[str, str], str]] = defaultdict(dict)
    for identity, image_id in zip(identities, image_ids, strict=True):
        stem = _image_stem(image_id, identity)
        name = safe.get(stem)
        if name is None:
            name = safe[stem] = safe_name(stem)
        by_folder[folders[identity]][(identity, image_id)] = name
    out: dict[tuple[str, str], str] = {}  # one entry per distinct (identity, image id)
    for folder, names in by_folder.items():
        for key, name in _deduplicate(names, fallback=lambda k: hashed_name(k[1])).items():
            out[key] = f"{folder}/{name}"
    result = [out[key] for key in zip(identities, image_ids, strict=True)]
    if len({s.lower() for s in result}) != len(out):
        raise ValueError("output names collide even after hashing; please report this listing")
    return result


def _deduplicate(names: dict, fallback=hashed_name) -> dict:
    """Replace the names that meet case-insensitively by ``fallback(key)``."""
    groups: dict[str, list] = defaultdict(list)
    for key, name in names.items():
        groups[name.lower()].append(key)
    clashing = {key for keys in groups.values() if len(keys) > 1 for key in keys}
    return {key: fallback(key) if key in clashing else name for key, name in names.items()}


def image_path(stem: str, copy: int, extension: str) -> str:
    """Relative path of one hallucinated copy, under the output folder: ``images/<stem>_hal<copy>.<extension>``."""
    return f"images/{stem}_hal{copy}.{extension}"
