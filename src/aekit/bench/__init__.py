"""`aekit bench`: a declared matrix of models x data x budgets x seeds, trained and evaluated
with provenance on every row, resumable, summarised as a leaderboard with the papers' claims
checked. Suites live in `aekit/bench/suites/` (smoke, quick, full) or any TOML/YAML file."""

from aekit.bench.leaderboard import write_leaderboard
from aekit.bench.runner import run_suite
from aekit.bench.suite import Suite, load_suite

__all__ = ["Suite", "load_suite", "run_suite", "write_leaderboard"]
