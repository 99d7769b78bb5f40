"""Debouncing per-frame predictions into a stable state, and the events between states.

A camera's frames are classified one by one; a dashboard wants "the cat arrived" once, not
thirty flickering labels a second. :class:`Smoother` turns per-frame candidate scores (from
:func:`device.run.scores.frame_scores`) into a published state (a tuple of labels, ``()``
meaning nothing) and emits one :class:`Transition` per change of that state. Each frame goes
through these pure steps, in this order:

1. **Filter** (:func:`filter_labels`): only ``include`` labels count (all when empty), and
   ``exclude`` labels never do. Filtered labels are treated as absent from the frame. For a
   hierarchical model (the smoother is given the taxonomy's ancestor sets) a name matches a
   label or any of its ancestors: ``include: [insect]`` admits "bee".
   **Calibrate**: each score is multiplied by ``0.5 / t``, where ``t`` is the bundle's
   calibrated decision threshold for that label (``scores.decision_thresholds``: binary,
   per-label multilabel, the abstain threshold of multiclass, the hierarchy threshold), so
   the levels below are relative to it -- ``enter: 0.5`` means "at the bundle's threshold",
   and the daemon agrees with ``kestrel classify``. A bundle without thresholds (``t`` 0.5)
   is judged on its raw probabilities. Scores reported (states, transitions) are unscaled.
2. **Smooth** -- ``ema`` (:func:`ema_step`): ``s = alpha * score + (1 - alpha) * s`` for every
   label; a label absent from a frame has score 0 there, so it decays toward 0, and a label
   never seen before starts from 0 (the time before the first frame counts as "nothing").
   Scores that decay below 1e-4 are forgotten. ``vote`` (:func:`frame_winners`,
   :func:`vote_scores`): a label *wins* a frame when it is the frame's top candidate with a
   score >= ``enter`` (multi-label: every label with a score >= ``enter``); its smoothed score
   is the fraction of the last ``window`` frames it won (frames before the first count as
   lost).
3. **Hysteresis** (:func:`candidate_single`, :func:`candidate_multi`), relative to the
   *published* state, on smoothed scores and two levels (:func:`hysteresis_levels`):
   ``ema`` enters at ``enter`` and stays down to ``exit``; ``vote`` enters at
   ``votes / window`` (``votes`` of the last ``window`` frames won) and stays down to
   ``min(exit, votes / window)`` -- with the defaults (3 of 5, exit 0.4) a label gets in with
   3 wins of the last 5 frames and leaves when it has fewer than 2. A smoothed score of 0
   never enters nor stays, so ``exit: 0`` means "until its score has decayed away".
   Single-label: the current label stays while its score >= the exit level; a different label
   replaces it only when it reaches the enter level *and* exceeds the current one; with no
   current label, the top label enters when it reaches the enter level. Multi-label: each
   label enters and leaves on its own. So a score between exit and enter neither enters nor
   leaves, and a brief dip of a published label that recovers above exit produces nothing.
4. **Cooldown**: once a label has left the published state (an ``end``, or a ``change`` away
   from it), it cannot enter again for ``cooldown`` seconds; meanwhile it is ignored as a
   candidate (another label may take its place). Its smoothed score keeps being tracked, so
   it can come back as soon as the cooldown is over.
5. **Dwell**: the state proposed by step 3 (the *candidate*) must stay the same on every
   frame for ``min_dwell`` seconds (measured on frame times ``at``, from the first frame that
   proposed it to the current one) before it is published. Flicker shorter than that -- a
   label appearing, disappearing or being replaced for a moment -- publishes nothing. This
   applies to start, change and end alike. ``min_dwell: 0`` publishes on the first frame.

A published change yields exactly one :class:`Transition` (``start``: nothing -> labels,
``change``: labels -> other labels, ``end``: labels -> nothing); no frame yields more than
one, and an unchanged state yields none. Time is passed in, never read from a clock, so the
behaviour is deterministic. Dwell is only checked when :meth:`Smoother.update` is called: a
caller that skips frames (motion gating) should keep feeding frames while
:attr:`Smoother.pending` is set, or a pending transition waits for the next frame, and while
the smoother is not :attr:`Smoother.settled` (frames like the last one would still change the
state: an EMA climbs to a still scene's score over a few frames, a vote fills its window).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from device.config import SmoothingConfig
from device.run.scores import NEUTRAL, scale_to_neutral

# EMA scores below this are dropped, so the label set stays bounded (and exit 0 can end).
FORGET_BELOW = 1e-4

TransitionType = Literal["start", "change", "end"]


@dataclass(frozen=True)
class Transition:
    """One change of the published state."""

    type: TransitionType
    previous: tuple[str, ...]
    current: tuple[str, ...]
    scores: dict[str, float]  # smoothed scores of the current labels (previous ones for end)
    at: float  # time of the frame that completed the transition

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "previous": list(self.previous),
            "current": list(self.current),
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "at": self.at,
        }


# ---------------------------------------------------------------- pure steps


def filter_labels(
    scores: Mapping[str, float],
    include: Iterable[str],
    exclude: Iterable[str],
    ancestors: Mapping[str, frozenset[str]] | None = None,
) -> dict[str, float]:
    """Keep only labels matching ``include`` (all when empty) and none of ``exclude``.

    A label matches a name equal to it or, with a taxonomy's ``ancestors`` (see
    :func:`device.inference.taxonomy.ancestor_sets`), to one of its ancestors.
    """
    keep, drop = frozenset(include), frozenset(exclude)
    kept = {}
    for label, score in scores.items():
        lineage = ancestors.get(label, {label}) if ancestors else {label}
        if (not keep or keep & lineage) and not drop & lineage:
            kept[label] = float(score)
    return kept


def ema_step(
    smoothed: Mapping[str, float], scores: Mapping[str, float], alpha: float
) -> dict[str, float]:
    """One EMA step over every known label; absent labels get 0 and decay, tiny ones vanish."""
    out = {}
    for label in smoothed.keys() | scores.keys():
        value = alpha * scores.get(label, 0.0) + (1.0 - alpha) * smoothed.get(label, 0.0)
        if value >= FORGET_BELOW:
            out[label] = value
    return out


def frame_winners(
    scores: Mapping[str, float], enter: float, multi_label: bool = False
) -> frozenset[str]:
    """Labels that win one frame for voting: the top one if it reaches ``enter``
    (multi-label: every label that does). Ties go to the alphabetically first label."""
    if multi_label:
        return frozenset(label for label, score in scores.items() if score >= enter)
    if not scores:
        return frozenset()
    label, score = min(scores.items(), key=lambda item: (-item[1], item[0]))
    return frozenset((label,)) if score >= enter else frozenset()


def vote_scores(history: Iterable[frozenset[str]], window: int) -> dict[str, float]:
    """Fraction of the last ``window`` frames each label won (missing frames count as lost)."""
    counts: dict[str, int] = {}
    for winners in history:
        for label in winners:
            counts[label] = counts.get(label, 0) + 1
    return {label: n / window for label, n in counts.items()}


def hysteresis_levels(config: SmoothingConfig) -> tuple[float, float]:
    """(enter, exit) levels on the smoothed score for the configured method."""
    if config.method == "vote":
        enter = config.votes / config.window
        return enter, min(config.exit, enter)
    return config.enter, config.exit


def _stays(score: float, exit_level: float) -> bool:
    return score > 0.0 and score >= exit_level


def _enters(score: float, enter_level: float) -> bool:
    return score > 0.0 and score >= enter_level


def candidate_single(
    published: tuple[str, ...],
    smoothed: Mapping[str, float],
    enter_level: float,
    exit_level: float,
    blocked: frozenset[str] = frozenset(),
) -> tuple[str, ...]:
    """The single-label state the smoothed scores call for, given the published one.

    ``blocked`` labels (cooling down) cannot enter. Ties between equal scores go to the
    alphabetically first label, so the result never depends on dict order.
    """
    current = published[0] if published else None
    eligible = [(label, s) for label, s in smoothed.items() if label not in blocked]
    best = min(eligible, key=lambda item: (-item[1], item[0]), default=None)
    if current is not None and _stays(smoothed.get(current, 0.0), exit_level):
        if (
            best is not None
            and best[0] != current
            and _enters(best[1], enter_level)
            and best[1] > smoothed[current]
        ):
            return (best[0],)
        return (current,)
    if best is not None and _enters(best[1], enter_level):
        return (best[0],)
    return ()


def candidate_multi(
    published: tuple[str, ...],
    smoothed: Mapping[str, float],
    enter_level: float,
    exit_level: float,
    blocked: frozenset[str] = frozenset(),
) -> tuple[str, ...]:
    """Every label judged on its own: published ones stay down to exit, others enter at enter.

    The result is ordered by smoothed score (highest first), then by name.
    """
    current = set(published)
    chosen = [
        label
        for label, score in smoothed.items()
        if (
            _stays(score, exit_level)
            if label in current
            else label not in blocked and _enters(score, enter_level)
        )
    ]
    return tuple(sorted(chosen, key=lambda label: (-smoothed[label], label)))


def transition_type(previous: tuple[str, ...], current: tuple[str, ...]) -> TransitionType:
    if not previous:
        return "start"
    return "end" if not current else "change"


# ---------------------------------------------------------------- the smoother


@dataclass
class _Pending:
    labels: tuple[str, ...]
    since: float


class Smoother:
    """Debounces one model's per-frame scores for one camera; see the module docstring.

    ``multi_label`` (for multilabel models) lets several labels be published at once, each
    entering and leaving on its own; otherwise the state holds at most one label.
    ``thresholds`` is :func:`decision_thresholds` of the bundle (default: none, 0.5).
    ``ancestors`` (a hierarchical bundle's taxonomy, as ``ancestor_sets``) lets ``include`` /
    ``exclude`` match a label's ancestors too.
    """

    def __init__(
        self,
        config: SmoothingConfig,
        *,
        multi_label: bool = False,
        thresholds: tuple[Mapping[str, float], float] = ({}, NEUTRAL),
        ancestors: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.config = config
        self.multi_label = multi_label
        self.ancestors = ancestors or {}
        per_label, default = thresholds
        self._scales = {label: scale_to_neutral(t) for label, t in per_label.items()}
        self._default_scale = scale_to_neutral(default)
        self._enter_level, self._exit_level = hysteresis_levels(config)
        self._published: tuple[str, ...] = ()
        self._smoothed: dict[str, float] = {}
        self._history: deque[frozenset[str]] = deque(maxlen=config.window)
        self._pending: _Pending | None = None
        self._cooldown_until: dict[str, float] = {}
        self._settled = True

    @property
    def state(self) -> tuple[str, ...]:
        """The published (debounced) labels; ``()`` means nothing."""
        return self._published

    @property
    def smoothed(self) -> dict[str, float]:
        """Current smoothed scores, on the model's own scale (vote: the fraction won)."""
        return {label: self._reported(label, v) for label, v in self._smoothed.items()}

    def _scale_of(self, label: str) -> float:
        return self._scales.get(label, self._default_scale)

    def _reported(self, label: str, value: float) -> float:
        # EMA is linear: unscaling the smoothed value gives the EMA of the raw scores.
        return value / self._scale_of(label) if self.config.method == "ema" else value

    @property
    def settled(self) -> bool:
        """Whether more frames like the last one would leave the candidate state as it is.

        False while e.g. the EMA of a scene that just appeared still climbs toward the
        enter level: a caller skipping still frames (the motion gate) must keep feeding
        them, or the state waits for the gate's next forced frame.
        """
        return self._settled

    def _limit(self, scores: Mapping[str, float]) -> dict[str, float]:
        """The smoothed scores that frames like this one (filtered, scaled) tend to."""
        if self.config.method == "vote":
            winners = frame_winners(scores, self.config.enter, self.multi_label)
            return dict.fromkeys(winners, 1.0)
        return {label: score for label, score in scores.items() if score > 0.0}

    @property
    def pending(self) -> tuple[str, ...] | None:
        """The candidate state waiting out ``min_dwell``, or None when none is."""
        return self._pending.labels if self._pending is not None else None

    def update(self, at: float, scores: Mapping[str, float]) -> Transition | None:
        """Feed one frame's candidate scores taken at time ``at`` (seconds, non-decreasing).

        Returns the transition this frame completed, if any.
        """
        config = self.config
        scores = filter_labels(scores, config.include, config.exclude, self.ancestors)
        scores = {label: score * self._scale_of(label) for label, score in scores.items()}
        if config.method == "vote":
            self._history.append(frame_winners(scores, config.enter, self.multi_label))
            self._smoothed = vote_scores(self._history, config.window)
        else:
            self._smoothed = ema_step(self._smoothed, scores, config.alpha)

        self._cooldown_until = {k: t for k, t in self._cooldown_until.items() if t > at}
        blocked = frozenset(self._cooldown_until)
        choose = candidate_multi if self.multi_label else candidate_single
        levels = (self._enter_level, self._exit_level, blocked)
        candidate = choose(self._published, self._smoothed, *levels)
        prospect = choose(self._published, self._limit(scores), *levels)
        self._settled = set(prospect) == set(candidate)

        if set(candidate) == set(self._published):
            self._pending = None
            return None
        if self._pending is None or set(self._pending.labels) != set(candidate):
            self._pending = _Pending(candidate, at)
        if at - self._pending.since < config.min_dwell:
            return None
        return self._publish(candidate, at)

    def _publish(self, current: tuple[str, ...], at: float) -> Transition:
        previous = self._published
        shown = current or previous
        reported = self.smoothed
        transition = Transition(
            type=transition_type(previous, current),
            previous=previous,
            current=current,
            scores={label: reported.get(label, 0.0) for label in shown},
            at=at,
        )
        if self.config.cooldown > 0:
            for label in set(previous) - set(current):
                self._cooldown_until[label] = at + self.config.cooldown
        self._published = current
        self._pending = None
        return transition
