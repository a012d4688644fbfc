"""Context from a real donor: the second hallucination method (see docs/donors.md).

Each target face keeps its own pixels bit-exact and takes the whole context of a real face of another identity
from a bank of preprocessed faces, recoloured near the seam, with the donor's own face edge blended away.

    from augmentor.donors import DonorBank
    bank = DonorBank.load("runs/pre-celeba")  # builds and saves runs/pre-celeba/donor_bank/ the first time
    results = bank.recontext(aligned, masks, landmarks, identities, k=3)  # N lists of 3 DonorResult
"""

from augmentor.donors.bank import DonorBank, DonorResult
from augmentor.donors.config import DonorConfig

__all__ = ["DonorBank", "DonorConfig", "DonorResult"]
