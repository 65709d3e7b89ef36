"""Chaos soak: depositd behind nginx on PostgreSQL, SIGKILLed at random for --seconds, then
the books checked; and throughput without kills with 1 vs 2 API replicas and 1 vs 2 workers.

Soak (loopback only, bounded): nginx (rendered from deploy/nginx.conf) in front of
--api-replicas `depositd serve --no-workers`, --workers `depositd worker`, on a fresh
PostgreSQL database; anvil mining a block a second. Load: ETH and USDT deposits sent to users'
addresses, provider callbacks (signed Standard Webhooks, unique event ids, some pending first,
some replayed on purpose, each retried until acknowledged) through nginx, three webhook
receivers (normal; flapping: 500 with Retry-After: 1 for 2 s of every 10 s; slow: 1-2 s per
answer) deduplicating by webhook-id, two WebSocket clients on /v1/ws through nginx resuming
with after=<last seq>. Every --kill-every seconds (0.5x to 1.5x, drawn from --seed) one running
depositd process is SIGKILLed and started again a second later — never the last running one
of its kind (a restarted one counts as running once its window is over). A kill window
lasts from the kill until the process answers again plus 5 s (nginx's fail_timeout). After
the chaos, a bounded drain; then it checks, straight from the tables:

  * every transfer sent on chain credited exactly once, at its amount;
  * every acknowledged provider deposit credited exactly once, nothing else credited;
  * ledger totals per asset = chain totals sent + provider totals acknowledged;
  * every event delivered (2xx) to every endpoint; no delivery left pending or dead;
  * each WebSocket client saw every seq exactly once, in order;
  * no client error and no nginx 5xx outside the API replicas' kill windows;

and exits 1 if any fails. The processes' logs, nginx's access log and timeline.txt (kills and
errors) stay in --workdir.

Throughput (no kills, after the soak, or alone with --throughput): 32 provider clients post
succeeded callbacks back to back for --throughput-seconds through nginx to a fresh cluster of
1 or 2 API replicas and 1 or 2 workers: callbacks acknowledged per second, deposits credited
per second (first request to last credit) and webhooks delivered per second to one receiver
(first request to last delivery). API replicas record callbacks inline; workers send the
webhooks. Ratios compare configurations of the same run; the machine is shared and noisy.

    .venv/bin/python bench/chaos.py [--seconds 600] [--kill-every 4] [--seed 1]
        [--api-replicas 2] [--workers 2] [--throughput | --no-throughput]
        [--throughput-seconds 20] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

# the harness is shared with the test suite (tests/chaos), which runs it for a minute
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos.harness import Settings, Throughput, soak, throughput


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600, help="of chaos (default 600)")
    parser.add_argument("--kill-every", type=float, default=4.0, help="mean seconds per kill")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--api-replicas", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--drain-seconds", type=float, default=180)
    phases = parser.add_mutually_exclusive_group()
    phases.add_argument("--throughput", action="store_true", help="only the throughput phase")
    phases.add_argument("--no-throughput", action="store_true", help="only the soak")
    parser.add_argument("--throughput-seconds", type=float, default=20)
    parser.add_argument("--workdir", type=Path, help="keep logs here (default: a temp dir)")
    return parser.parse_args()


def say(line: str) -> None:
    print(line, flush=True)


async def throughput_phase(args: argparse.Namespace, workdir: Path) -> None:
    results: dict[tuple[int, int], Throughput] = {}
    for api, workers in ((1, 1), (2, 1), (1, 2), (2, 2)):
        say(f"throughput: {api} API replica(s), {workers} worker(s)")
        found = await throughput(
            workdir / f"throughput-{api}-{workers}",
            api_replicas=api,
            workers=workers,
            seconds=args.throughput_seconds,
            say=say,
        )
        results[(api, workers)] = found
    say("")
    say("| API replicas | workers | acked | acked/s | credited/s | delivered/s | errors |")
    say("|---:|---:|---:|---:|---:|---:|---:|")
    for (api, workers), r in results.items():
        say(
            f"| {api} | {workers} | {r.acknowledged} | {r.acknowledged_per_second:,.0f}"
            f" | {r.credited_per_second:,.0f} | {r.delivered_per_second:,.0f} | {r.errors} |"
        )
    say("")
    for label, more, less in (
        ("2 vs 1 API replicas (1 worker)", (2, 1), (1, 1)),
        ("2 vs 1 API replicas (2 workers)", (2, 2), (1, 2)),
        ("2 vs 1 workers (1 API replica)", (1, 2), (1, 1)),
        ("2 vs 1 workers (2 API replicas)", (2, 2), (2, 1)),
    ):
        a, b = results[more], results[less]
        say(
            f"{label}: acked/s x{a.acknowledged_per_second / b.acknowledged_per_second:.2f},"
            f" credited/s x{a.credited_per_second / b.credited_per_second:.2f},"
            f" delivered/s x{a.delivered_per_second / b.delivered_per_second:.2f}"
        )


def main() -> int:
    args = arguments()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="depositd-chaos-"))
    say(f"logs under {workdir}")
    passed = True
    if not args.throughput:
        settings = Settings(
            seconds=args.seconds,
            kill_every=args.kill_every,
            seed=args.seed,
            api_replicas=args.api_replicas,
            workers=args.workers,
            drain_seconds=args.drain_seconds,
        )
        began = time.monotonic()
        report = asyncio.run(soak(settings, workdir / "soak", say=say))
        say(f"soak ({time.monotonic() - began:.0f} s in all, seed {args.seed}):")
        for line in report.lines():
            say(line)
        passed = report.passed
        say("PASSED" if passed else "FAILED")
    if not args.no_throughput:
        asyncio.run(throughput_phase(args, workdir))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
