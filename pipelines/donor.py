"""The hallucinating stage of ``augmentor run --method donor``: context from real donor faces, no generator.

Same batch contract as :class:`pipelines.stages.Predictor` (one output row per copy still to make), plus
``donor_image_id`` and ``donor_identity``. Copy ``k`` of a face is its ``k``-th nearest donor of another identity
(:mod:`augmentor.donors`), so the copies differ and a rerun makes the same ones.
"""

from __future__ import annotations

import time

import numpy as np

from pipelines.stages import SIZE, MatchScorer, copies_of, stage_columns, write_batch


class DonorPredictor(MatchScorer):
    """Put every face into the context of its nearest donors and score it against the aligned original, in one actor.

    Loads the donor bank (built by the driver beforehand) and the dlib-ResNet descriptor once.

    Args:
        donors: A preprocess output folder holding the donor faces, or its saved ``donor_bank/``.
        copies: Copies per image (the ``todo`` bits range over them): the ``copies`` nearest donors.
        device: Device of the match score's descriptor (composition runs on the CPU).
        batch_size: Images per descriptor forward pass.
        num_threads: torch intra-op threads of this process; None leaves torch's setting alone.
        descriptor_weights: As for :class:`pipelines.stages.Predictor`.
        precision: ``fp32``, ``bf16`` or ``auto``, for the descriptor.
        refine: The seamless composition (:mod:`augmentor.donors.seamless`); False: the plain one.
    """

    def __init__(
        self,
        donors: str,
        copies: int = 1,
        device: str = "cpu",
        batch_size: int = 16,
        num_threads: int | None = None,
        descriptor_weights: str | None = None,
        precision: str = "auto",
        refine: bool = True,
    ):
        import torch

        from augmentor.donors import DonorBank
        from augmentor.evaluation.metrics import FaceDescriptor
        from augmentor.precision import pick_device, resolve_precision

        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.device = torch.device(pick_device(device))
        self.precision = resolve_precision(precision, self.device.type)
        self.bank = DonorBank.load(donors)
        self.descriptor = FaceDescriptor(descriptor_weights).to(self.device)
        self.copies, self.batch_size, self.refine = copies, batch_size, refine

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        rows, ks = copies_of(batch["todo"], self.copies)
        images = np.zeros((len(rows), SIZE, SIZE, 3), np.uint8)
        scores = np.full(len(rows), np.nan, np.float32)
        donor_ids = np.full(len(rows), "", dtype=object)
        donor_identities = np.full(len(rows), "", dtype=object)
        ok = np.asarray([str(s) == "ok" for s in batch["status"]], dtype=bool)
        faces = np.flatnonzero(ok[rows])  # output rows with a face to put in a context
        if len(faces):
            originals = np.flatnonzero(ok)  # each face searched and described once, whatever its copies
            aligned, masks = batch["aligned"][originals], batch["mask"][originals]
            landmarks = np.asarray(batch["landmarks"], np.float32)[originals]
            identities = [str(batch["identity"][i]) for i in originals]
            indices, distances = self.bank.search(aligned, masks, landmarks, identities, self.copies)
            position = np.searchsorted(originals, rows[faces])
            for out_row, i in zip(faces, position, strict=True):
                k = int(ks[out_row])
                result = self.bank.compose(
                    aligned[i], masks[i], landmarks[i], int(indices[i, k]), distances[i, k], self.refine
                )
                images[out_row] = result.image
                donor_ids[out_row], donor_identities[out_row] = result.donor_image_id, result.donor_identity
            scores[faces] = self.match_scores(images[faces], aligned, position)
        return {
            **stage_columns(batch, rows, ks, start),
            "seed": np.zeros(len(rows), np.int64),  # the donor method draws no noise
            "image": images,
            "match_score": scores,
            "donor_image_id": donor_ids,
            "donor_identity": donor_identities,
        }


class DonorPredictAndWrite(DonorPredictor):
    """:class:`DonorPredictor` then :func:`pipelines.stages.write_batch` in the same actor (the CPU layout).

    Args:
        out_dir, image_format, model_id: As for :func:`pipelines.stages.write_batch`.
        **predictor: As for :class:`DonorPredictor`.
    """

    def __init__(self, out_dir: str, image_format: str, model_id: str, **predictor) -> None:
        super().__init__(**predictor)
        self.writer = {"out_dir": out_dir, "image_format": image_format, "model_id": model_id}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return write_batch(super().__call__(batch), **self.writer)
