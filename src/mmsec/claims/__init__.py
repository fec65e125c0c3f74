"""The claims ledger: papers' headline claims as named, versioned checks over recipe results, with verdicts
over several seeds (``mmsec claims``). See :mod:`mmsec.claims.base` and :mod:`mmsec.claims.evaluate`."""

from .base import VERDICTS, Cells, Claim, ClaimResult, MissingResult, verdict
from .evaluate import claim_spec, evaluate_claims, recipes_dir, run_claims
from .ledger import CLAIMS, get_claim

__all__ = ["CLAIMS", "VERDICTS", "Cells", "Claim", "ClaimResult", "MissingResult", "claim_spec", "evaluate_claims",
           "get_claim", "recipes_dir", "run_claims", "verdict"]
