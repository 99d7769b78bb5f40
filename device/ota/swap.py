"""The hand-over: a checked classifier becomes a camera's main model between two frames.

Each camera's worker gets a new main :class:`~device.run.cascade.CascadeStage` (a fresh
smoother: the new model's scores mean something else) with the cascade stages it had, through
:meth:`~device.run.worker.CameraWorker.replace_stages`. The worker swaps at the top of its next
frame and, from its own thread (so nothing it publishes later can overtake it), publishes the
``type: model`` event and the camera's state under the new model. Nothing restarts and no
frame is dropped; the classifiers no camera uses any more are closed afterwards.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from device.inference.engine import Classifier
from device.publish.payloads import MAIN_STAGE, model_event_payload, state_payload
from device.run.cascade import CascadeStage

if TYPE_CHECKING:
    from device.run.daemon import Daemon
    from device.run.worker import CameraWorker

log = logging.getLogger(__name__)

APPLY_TIMEOUT_S = 30.0  # a worker takes it within a frame, or 0.5 s without frames


class SwapTimeout(RuntimeError):
    """A camera's worker did not take the new model in time."""


def _announce(daemon: Daemon, worker: CameraWorker, old: list[CascadeStage], sha: str) -> None:
    """In the worker's thread, right after the swap: the model event and the new state."""
    name = worker.camera.name
    daemon.stages[name] = worker.stages
    state = state_payload(name, worker.stages, None, time.time())
    event = model_event_payload(state, old[0].labels, old[0].manifest, sha)
    for sink in worker.sinks:
        sink.publish_event(name, event)
        sink.publish_state(name, state)
    log.warning(
        "camera %s: model %s -> %s (swapped between two frames)",
        name,
        old[0].manifest.name,
        worker.stages[0].manifest.name,
    )


def hand_over(
    daemon: Daemon,
    cameras: Sequence[str],
    classifier: Classifier,
    bundle_sha256: str,
    timeout: float = APPLY_TIMEOUT_S,
) -> None:
    """Make ``classifier`` the main model of ``cameras``; returns once every worker did."""
    lock, _ = daemon.replace_classifier(classifier)
    workers = [w for w in daemon.workers if w.camera.name in cameras]
    pending = {w.camera.name for w in workers}
    guard, done = threading.Lock(), threading.Event()

    def applied(worker: CameraWorker, old: list[CascadeStage]) -> None:
        try:
            _announce(daemon, worker, old, bundle_sha256)
        except Exception:  # the swap happened; only the announcement failed
            log.exception("camera %s: publishing the model swap failed", worker.camera.name)
        finally:
            with guard:
                pending.discard(worker.camera.name)
                if not pending:
                    done.set()

    for worker in workers:
        main = CascadeStage.build(MAIN_STAGE, classifier, worker.camera.smoothing, lock=lock)
        worker.replace_stages(
            [main, *worker.stages[1:]], lambda old, worker=worker: applied(worker, old)
        )
    if workers and not done.wait(timeout):
        raise SwapTimeout(f"camera(s) {sorted(pending)} did not take the model in {timeout:g} s")
    _, unused = daemon.replace_classifier(classifier)
    for old_classifier in unused:
        old_classifier.close()
