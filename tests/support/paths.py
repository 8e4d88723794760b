"""Where the tests' files are, whichever tier folder a test lives in."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"  # recorded outputs of real programs and published tables
SHARED = REPO.parent / "shared"  # the seeds and their reference tables, beside the checkout
