"""Every learnable run under a results folder, read as the learnable-variance study chose its length (issue 27).

One CSV row per run (``<results>/runs/learnable/<dataset>/<method>/<setting>/metrics.json``, finished or not): its
best validation BPD and that epoch, the mean of its last 3 epochs, the best value's gain over the last 20% of its
epochs (:func:`silentvae.training.history.plateau_gain`; plateaued below 0.5%), and the epochs at which its
validation BPD jumped by more than 0.5 from the epoch before.

    python tools/plateau_table.py results/study --methods reparam gumbel reinforce > benchmarks/results/study-baselines.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from silentvae.training.history import best_epoch, final_value, plateau_gain, run_value  # noqa: E402

JUMP = 0.5            # BPD between consecutive epochs
TOLERANCE = 0.005     # plateau: the best value gains less than this over the last 20% of the epochs


def row(path: Path) -> dict:
    result = json.loads(path.read_text())
    history = result["history"]
    jumps = [b["epoch"] for a, b in zip(history, history[1:]) if b["val_bpd"] - a["val_bpd"] > JUMP]
    gain = plateau_gain(result)
    return {"method": path.parent.parent.name, "setting": path.parent.name, "epochs": len(history),
            "planned_epochs": result["config"]["epochs"], "lr_schedule": result["config"].get("lr_schedule", "constant"),
            "best_val_bpd": round(run_value(result, rule="best_epoch"), 4), "best_epoch": best_epoch(result),
            "last3_val_bpd": round(final_value(result), 4), "gain_last_20pct": round(gain, 4),
            "plateaued": gain < TOLERANCE, "jumps_over_0.5": len(jumps), "jump_epochs": " ".join(map(str, jumps)),
            "wall_s_per_epoch": round(sum(h["wall_time"] for h in history) / len(history), 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results")
    p.add_argument("--methods", nargs="*", default=None, help="method ids (default: all)")
    args = p.parse_args(argv)
    paths = sorted(Path(args.results).glob("runs/learnable/*/*/*/metrics.json"))
    rows = [row(path) for path in paths if args.methods is None or path.parent.parent.name in args.methods]
    if not rows:
        print(f"no learnable runs under {args.results}/runs/learnable", file=sys.stderr)
        return 1
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
