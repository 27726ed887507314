"""The prepared GPU check runs end to end at toy sizes on the CPU (its figures are measured
only on a GPU): every section, the JSON it writes, the table it prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_gpu_check_runs_tiny_on_the_cpu(tmp_path, capsys):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(BENCHMARKS))
    out = tmp_path / "gpu_check.json"
    result = gpu_check.main(["--tiny", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["device"] == "cpu" and result["tiny"]
    runs = result["sae"]["runs"]
    for name in ("fp32", "tf32", "bf16", "store bf16"):
        assert runs[name]["tokens_per_second"] > 0 and 0 < runs[name]["fvu"] < 2
        assert runs[name].get("mfu") is None  # no peak FLOP rate for a CPU
    assert "skipped" in runs["bf16+compile"]
    for kind in ("vae", "vqvae"):
        assert result["images"][kind]["aekit_images_per_second"] > 0
    assert result["goals"]["store_over_resident"] > 0
    assert "| fp32 |" in capsys.readouterr().out
