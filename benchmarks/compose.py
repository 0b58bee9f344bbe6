"""Composed and refined queries on the demo model: "like this, but in red", "without red", "more like these".

Runs ``fashion-retrieval eval --task compose`` on the demo workdir with its held-out items as references
(building the demo first, offline, ~2.5 min, when the workdir has no embeddings yet) and writes
benchmarks/results/compose.json: Recall@10/@50 per method and changed attribute, the negatives and
feedback tasks, the default weights and the sweeps that chose them.

    python -m benchmarks.compose [--workdir demo_workdir]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benchmarks.common import write_result
from fashion_retrieval.evaluate.compose import ComposeEvalConfig, evaluate_compose, format_compose_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="demo_workdir", help="A demo workdir (built if it has no embeddings).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default="compose", help="Result file name under benchmarks/results/.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work = Path(args.workdir)
    if not (work / "embeddings" / "manifest.json").is_file():
        from fashion_retrieval.demo import DemoConfig, run_demo

        run_demo(DemoConfig(workdir=str(work), serve=False), progress=True)
    config = ComposeEvalConfig(str(work / "embeddings"), device=args.device, query_ids=str(work / "heldout_ids.txt"))
    report = evaluate_compose(config)
    print(format_compose_report(report))
    summary = {
        "command": f"fashion-retrieval eval {config.embeddings} --task compose --query-ids {config.query_ids}",
        "targets": {
            "gain_recall@10 (>= 0.10)": report["gain_recall@10"],
            "negatives (free >= 0.9, recall@10 drop <= 0.05)": {
                attribute: {
                    "free_of_y@10": neg["default"]["free_of_y@10"],
                    "recall@10_drop": round(neg["no negative"]["recall@10"] - neg["default"]["recall@10"], 4),
                    "separability_auc": neg["separability_auc"],
                }
                for attribute, neg in report["negatives"].items()
            },
            "feedback_gain_recall@10 (>= 0.10)": round(
                report["feedback"]["recall@10_after_liked"] - report["feedback"]["recall@10_before"], 4
            ),
        },
    }
    write_result(args.name, {**summary, **report})


if __name__ == "__main__":
    main()
