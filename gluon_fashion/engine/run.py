"""The shell around both trainers: run logger and step watchdog opened before a trainer builds its network
and data, closed on every way out, and a failing run taken out of its distributed job."""
from __future__ import annotations

from typing import Dict, Mapping

from .distributed import DistInfo, StepWatchdog, abandon_job
from .logger import RunLogger
from .plots import plot_metrics_or_warn


class TrainingRun:
    """Base of the Mask R-CNN and segmentation trainers. A subclass sets ``self.dist`` (its
    ``engine.distributed`` job) and ``self.prefix`` (the path prefix of the run's files), calls
    :meth:`open_run` at the end of ``__init__`` and implements :meth:`build` and :meth:`fit`;
    :func:`run_training` drives it."""

    dist: DistInfo
    prefix: str
    logger: RunLogger
    watchdog: StepWatchdog

    def open_run(self, prefix: str, config: Mapping, dist_timeout: float) -> None:
        """Start the run's log files and watchdog, then :meth:`build`; on a failed build close them again
        and leave the distributed job, so the other workers stop instead of waiting."""
        self.logger = RunLogger(prefix, dict(config), rank=self.dist.rank)
        # Only dist_sync steps are watched; rank 0's validation and saving happen outside any guard.
        self.watchdog = StepWatchdog(dist_timeout if self.dist.is_dist else 0)
        try:
            self.build()
        except BaseException:
            abandon_job(self.dist)
            self.watchdog.close()
            self.logger.close()
            raise

    def build(self) -> None:
        """Network, data, optimizer: everything the run needs before :meth:`fit`."""
        raise NotImplementedError

    def fit(self) -> Dict:
        """Train; returns a summary (best metric, its epoch, ...)."""
        raise NotImplementedError

    def plot(self) -> None:
        """Redraw the run's PNG plots from its metrics (a warning, not a failure, when plotting fails)."""
        plot_metrics_or_warn(self.logger.metrics_path, self.prefix)

    def close(self) -> None:
        """Flush and close the run's files and stop the watchdog."""
        self.watchdog.close()
        self.logger.flush()
        self.logger.close()


def run_training(run: TrainingRun) -> Dict:
    """``run.fit()``, leaving the distributed job on any failure and closing the run in every case."""
    try:
        return run.fit()
    except BaseException:
        abandon_job(run.dist)
        raise
    finally:
        run.close()
