"""Run a parameter-server training job (scheduler, servers, workers) on this machine, over loopback only.

    python tools/launch_local.py -n 2 -s 1 --timeout 3600 -- \\
        python train_segmentation.py --kvstore dist_sync ...

Every process runs the command with DMLC_ROLE and the other DMLC_* variables set; every address is
127.0.0.1 / lo. Output lines are prefixed with [scheduler], [server i], [worker i] (start order; MXNet's
rank may differ) and [launch]. The exit status is 0 when all workers succeeded, else that of the first
process that failed; 124 after --timeout. All processes are stopped when one fails, on Ctrl-C and at the end.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from gluon_fashion.errors import cli_entry
from gluon_fashion.launcher import launch_local


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--num-workers", type=int, required=True, help="worker processes")
    parser.add_argument("-s", "--num-servers", type=int, default=1, help="server processes (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop everything after this many seconds (default: no limit)")
    parser.add_argument("--keep-going", action="store_true",
                        help="when a worker fails, let the others run on (their --dist-timeout watchdog ends them) "
                             "instead of stopping the job at once")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command every process runs")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    return args


@cli_entry
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return launch_local(args.command, args.num_workers, args.num_servers, timeout=args.timeout,
                        kill_on_failure=not args.keep_going)


if __name__ == "__main__":
    sys.exit(main())
