"""Smoothing and debouncing: deterministic sequences of frame scores with explicit times."""

from collections.abc import Iterable, Mapping

import numpy as np
import pytest

from device.config import SmoothingConfig
from device.inference.bundle import load_bundle
from device.inference.decode import (
    Hierarchy,
    LabelScore,
    Prediction,
    decode_binary,
    decode_hierarchical,
    decode_multiclass,
    decode_multilabel,
)
from device.inference.taxonomy import ancestor_sets
from device.run.scores import decision_thresholds, frame_scores
from device.run.smoothing import (
    Smoother,
    Transition,
    candidate_single,
    ema_step,
    filter_labels,
    frame_winners,
    hysteresis_levels,
    vote_scores,
)

FPS = 10
DT = 1 / FPS


def config(**overrides) -> SmoothingConfig:
    return SmoothingConfig(**overrides)


def run(
    smoother: Smoother, frames: Iterable[Mapping[str, float]], start: float = 0.0
) -> list[Transition]:
    """Feed frames at FPS from ``start``; return the transitions in order."""
    out = []
    for i, scores in enumerate(frames):
        transition = smoother.update(start + i * DT, scores)
        if transition is not None:
            out.append(transition)
    return out


def seconds(scores: Mapping[str, float], duration: float) -> list[Mapping[str, float]]:
    return [scores] * round(duration * FPS)


def summary(transitions: list[Transition]) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    return [(t.type, t.previous, t.current) for t in transitions]


# ---------------------------------------------------------------- EMA, dwell, events


def test_a_stable_label_starts_exactly_once_after_min_dwell():
    smoother = Smoother(config(alpha=0.5, enter=0.6, exit=0.4, min_dwell=1.0))
    assert smoother.update(0.0, {"cat": 0.9}) is None and smoother.pending is None
    assert smoother.update(0.1, {"cat": 0.9}) is None and smoother.pending == ("cat",)
    assert smoother.state == ()
    smoother = Smoother(config(alpha=0.5, enter=0.6, exit=0.4, min_dwell=1.0))
    transitions = run(smoother, seconds({"cat": 0.9}, 5.0))
    assert summary(transitions) == [("start", (), ("cat",))]
    # EMA from 0: 0.45 at t=0, 0.675 at t=0.1 (the candidate appears), published 1 s later.
    start = transitions[0]
    assert start.at == pytest.approx(1.1)
    assert start.scores["cat"] == pytest.approx(0.9, abs=1e-3)
    assert smoother.state == ("cat",) and smoother.pending is None
    assert start.to_dict() == {
        "type": "start",
        "previous": [],
        "current": ["cat"],
        "scores": {"cat": round(start.scores["cat"], 4)},
        "at": start.at,
    }


def test_min_dwell_zero_publishes_on_the_first_qualifying_frame():
    smoother = Smoother(config(alpha=1.0, min_dwell=0.0))
    assert smoother.update(3.0, {"cat": 0.7}) == Transition(
        "start", (), ("cat",), {"cat": 0.7}, 3.0
    )


def test_flicker_shorter_than_min_dwell_publishes_nothing():
    smoother = Smoother(config(alpha=1.0, min_dwell=1.0))
    # A label that shows up for 0.5 s, twice, never starts.
    frames = [*seconds({"cat": 0.9}, 0.5), *seconds({}, 1.0), *seconds({"cat": 0.9}, 0.5)]
    frames += seconds({}, 2.0)
    assert run(smoother, frames) == []
    assert smoother.state == ()


def test_a_short_dropout_of_a_published_label_does_not_end_it():
    smoother = Smoother(config(alpha=1.0, min_dwell=1.0))
    frames = [*seconds({"cat": 0.9}, 2.0), *seconds({}, 0.5), *seconds({"cat": 0.5}, 2.0)]
    transitions = run(smoother, frames)
    # Back at 0.5 (between exit and enter) after the dropout: still cat, no end, no restart.
    assert summary(transitions) == [("start", (), ("cat",))]
    assert smoother.state == ("cat",)


def test_a_scene_change_gives_exactly_one_change():
    smoother = Smoother(config(alpha=0.5, min_dwell=1.0))
    frames = [
        *seconds({"cat": 0.9, "dog": 0.05, "fox": 0.03}, 3.0),
        *seconds({"dog": 0.85, "cat": 0.1, "fox": 0.03}, 3.0),
    ]
    transitions = run(smoother, frames)
    assert summary(transitions) == [("start", (), ("cat",)), ("change", ("cat",), ("dog",))]
    change = transitions[1]
    assert 4.0 <= change.at <= 4.5  # the scene changed at 3.0: EMA catch-up plus 1 s dwell
    assert set(change.scores) == {"dog"} and change.scores["dog"] > 0.6


def test_end_when_scores_vanish():
    smoother = Smoother(config(alpha=0.5, min_dwell=0.5))
    transitions = run(smoother, [*seconds({"cat": 0.9}, 2.0), *seconds({}, 2.0)])
    assert summary(transitions) == [("start", (), ("cat",)), ("end", ("cat",), ())]
    end = transitions[1]
    # The end reports the leaving label's (decayed) score, below exit.
    assert set(end.scores) == {"cat"} and end.scores["cat"] < 0.4
    assert smoother.state == ()


def settling(smoother: Smoother, frames: Iterable[Mapping[str, float]]) -> list[bool]:
    """``settled`` after each frame (fed at FPS)."""
    out = []
    for i, scores in enumerate(frames):
        smoother.update(i * DT, scores)
        out.append(smoother.settled)
    return out


def test_settled_only_once_frames_like_the_last_would_change_nothing():
    """A still scene appears: the EMA needs frames to climb to enter (the motion gate must keep
    feeding them); once the state is there, or a score can never reach enter, it is settled."""
    ema = Smoother(config(alpha=0.5, min_dwell=0.0))
    assert ema.settled  # nothing seen, nothing coming
    # 0.9: 0.45 (below enter 0.5, but heading above it), then 0.675: published, settled.
    assert settling(ema, [{"cat": 0.9}] * 3) == [False, True, True]
    assert ema.state == ("cat",)
    # Gone: 0.39 (still above exit 0.35, but on its way out), then 0.2: ended, settled.
    assert settling(ema, [{}] * 3) == [False, True, True]
    assert ema.state == ()
    faint = Smoother(config(alpha=0.5, min_dwell=0.0))
    assert settling(faint, [{"cat": 0.45}] * 3) == [True] * 3  # never reaches enter
    vote = Smoother(config(method="vote", window=5, votes=3, min_dwell=0.0))
    assert settling(vote, [{"cat": 0.9}] * 4) == [False, False, True, True]


def test_hysteresis_a_score_between_exit_and_enter_never_toggles():
    oscillating = [{"cat": 0.45}, {"cat": 0.55}] * 30  # always within [exit, enter)
    # From nothing it never enters...
    idle = Smoother(config(alpha=1.0, enter=0.6, exit=0.4, min_dwell=0.0))
    assert run(idle, oscillating) == []
    # ...and once in, it never leaves.
    busy = Smoother(config(alpha=1.0, enter=0.6, exit=0.4, min_dwell=0.0))
    transitions = run(busy, [{"cat": 0.9}, *oscillating])
    assert summary(transitions) == [("start", (), ("cat",))]
    # Below exit it leaves.
    assert busy.update(100.0, {"cat": 0.39}).type == "end"


def test_another_label_replaces_the_current_one_only_when_it_exceeds_it():
    smoother = Smoother(config(alpha=1.0, enter=0.6, exit=0.4, min_dwell=0.0))
    assert smoother.update(0.0, {"cat": 0.7}).type == "start"
    # dog reaches enter but stays below cat: no change (multilabel-like scores).
    assert smoother.update(0.1, {"cat": 0.7, "dog": 0.65}) is None
    change = smoother.update(0.2, {"cat": 0.7, "dog": 0.8})
    assert change is not None and (change.previous, change.current) == (("cat",), ("dog",))


def test_cooldown_suppresses_a_restart_of_the_same_label():
    smoother = Smoother(config(alpha=1.0, min_dwell=0.0, cooldown=5.0))
    frames = [*seconds({"cat": 0.9}, 1.0), *seconds({}, 1.0), *seconds({"cat": 0.9}, 6.0)]
    transitions = run(smoother, frames)
    assert summary(transitions) == [
        ("start", (), ("cat",)),
        ("end", ("cat",), ()),
        ("start", (), ("cat",)),
    ]
    ended, restarted = transitions[1].at, transitions[2].at
    assert ended == pytest.approx(1.0)
    # cat was back at 2.0 but had to wait for the cooldown to end at 6.0.
    assert restarted == pytest.approx(ended + 5.0)


def test_cooldown_blocks_only_that_label():
    smoother = Smoother(config(alpha=1.0, min_dwell=0.0, cooldown=5.0))
    frames = [{"cat": 0.9}, {}, {"cat": 0.9, "dog": 0.7}]
    # cat cools down, so dog (second best) is the candidate.
    assert summary(run(smoother, frames)) == [
        ("start", (), ("cat",)),
        ("end", ("cat",), ()),
        ("start", (), ("dog",)),
    ]


def test_cooldown_applies_to_a_label_changed_away_from():
    smoother = Smoother(config(alpha=1.0, min_dwell=0.0, cooldown=2.0))
    frames = [{"cat": 0.9}, {"dog": 0.9}, *seconds({"cat": 0.9, "dog": 0.2}, 2.5)]
    transitions = run(smoother, frames)
    assert summary(transitions) == [
        ("start", (), ("cat",)),
        ("change", ("cat",), ("dog",)),
        ("end", ("dog",), ()),  # dog fell below exit while cat was still cooling down
        ("start", (), ("cat",)),
    ]
    assert transitions[3].at == pytest.approx(0.1 + 2.0)


def test_include_and_exclude_filter_candidates():
    frames = seconds({"person": 0.95, "cat": 0.7}, 1.0)
    only_cats = Smoother(config(alpha=1.0, min_dwell=0.0, include=["cat", "dog"]))
    assert summary(run(only_cats, frames)) == [("start", (), ("cat",))]
    no_people = Smoother(config(alpha=1.0, min_dwell=0.0, exclude=["person"]))
    assert summary(run(no_people, frames)) == [("start", (), ("cat",))]
    assert "person" not in no_people.smoothed
    everything = Smoother(config(alpha=1.0, min_dwell=0.0))
    assert summary(run(everything, frames)) == [("start", (), ("person",))]


def test_ema_forgets_labels_that_decayed_away():
    smoothed = {"cat": 0.8}
    for _ in range(20):
        smoothed = ema_step(smoothed, {"dog": 0.5}, alpha=0.5)
    assert set(smoothed) == {"dog"} and smoothed["dog"] == pytest.approx(0.5, abs=1e-5)


def test_one_transition_per_change_on_noisy_input():
    """Random scores: every transition follows from the previous one; none is a no-op."""
    rng = np.random.default_rng(7)
    labels = ["cat", "dog", "fox"]
    smoother = Smoother(config(alpha=0.6, min_dwell=0.3, cooldown=0.5))
    transitions = []
    for i in range(3000):
        scene = labels[(i // 150) % 3] if (i // 50) % 4 else None  # scenes and empty spells
        scores = {label: float(rng.uniform(0, 0.5)) for label in labels}
        if scene is not None:
            scores[scene] = float(rng.uniform(0.5, 1.0))
        transition = smoother.update(i * DT, scores)
        if transition is not None:
            transitions.append(transition)
    assert len(transitions) > 10
    state: tuple[str, ...] = ()
    for t in transitions:
        assert t.previous == state and t.current != t.previous
        assert t.type == ("start" if not t.previous else "end" if not t.current else "change")
        assert set(t.scores) == set(t.current or t.previous)
        state = t.current
    assert state == smoother.state


# ---------------------------------------------------------------- voting


def test_vote_levels_follow_votes_and_exit():
    assert hysteresis_levels(config(method="vote", window=5, votes=3, exit=0.4)) == (0.6, 0.4)
    # exit never lies above what it takes to enter.
    assert hysteresis_levels(config(method="vote", window=5, votes=1, exit=0.4)) == (0.2, 0.2)
    assert hysteresis_levels(config(alpha=0.3, enter=0.7, exit=0.2)) == (0.7, 0.2)


def test_frame_winners_top_label_at_enter():
    assert frame_winners({"cat": 0.7, "dog": 0.2}, 0.6) == {"cat"}
    assert frame_winners({"cat": 0.55, "dog": 0.2}, 0.6) == frozenset()
    assert frame_winners({"cat": 0.7, "dog": 0.7}, 0.6) == {"cat"}  # deterministic tie
    assert frame_winners({"cat": 0.7, "dog": 0.65, "x": 0.1}, 0.6, multi_label=True) == {
        "cat",
        "dog",
    }
    assert vote_scores([{"cat"}, frozenset(), {"cat", "dog"}], window=5) == {"cat": 0.4, "dog": 0.2}


def test_vote_k_of_n_enters_with_k_wins_and_leaves_below_exit():
    smoother = Smoother(
        config(method="vote", window=5, votes=3, enter=0.6, exit=0.4, min_dwell=0.0)
    )
    win, lose, weak = {"cat": 0.9}, {}, {"cat": 0.55}  # weak: top label but under enter
    steps = [
        (win, None),  # 1 of 5
        (weak, None),  # a weak frame does not count
        (win, None),  # 2 of 5
        (lose, None),
        (win, "start"),  # 3 of the last 5: in
        (lose, None),  # L W L W L: 2 of the last 5, stays (>= exit 0.4)
        (lose, None),  # W L W L L: still 2
        (lose, "end"),  # L W L L L: 1 of the last 5, out
    ]
    for i, (scores, expected) in enumerate(steps):
        transition = smoother.update(i * DT, scores)
        assert (transition.type if transition else None) == expected, f"frame {i}"
    assert smoother.smoothed == {"cat": pytest.approx(0.2)}


def test_vote_steady_two_of_five_keeps_but_does_not_start():
    pattern = [{"cat": 0.9}, {}, {}, {"cat": 0.9}, {}] * 10  # wins 2 of every 5 frames
    idle = Smoother(config(method="vote", window=5, votes=3, min_dwell=0.0))
    assert run(idle, pattern) == []
    busy = Smoother(config(method="vote", window=5, votes=3, min_dwell=0.0))
    transitions = run(busy, [{"cat": 0.9}] * 3 + pattern)
    assert summary(transitions) == [("start", (), ("cat",))]


def test_vote_scene_change_with_dwell():
    smoother = Smoother(config(method="vote", window=5, votes=3, min_dwell=0.5))
    frames = [*seconds({"cat": 0.9, "dog": 0.1}, 2.0), *seconds({"dog": 0.9, "cat": 0.1}, 2.0)]
    transitions = run(smoother, frames)
    assert summary(transitions) == [("start", (), ("cat",)), ("change", ("cat",), ("dog",))]
    # dog reaches 3 of 5 at 2.2 s (cat has 2 left, below dog's 3), then 0.5 s of dwell.
    assert transitions[1].at == pytest.approx(2.7)


# ---------------------------------------------------------------- multi-label


def test_multi_label_labels_enter_and_leave_independently():
    smoother = Smoother(config(alpha=1.0, min_dwell=0.5), multi_label=True)
    frames = [
        *seconds({"rain": 0.9, "bird": 0.1}, 2.0),
        *seconds({"rain": 0.9, "bird": 0.8}, 2.0),
        *seconds({"rain": 0.5, "bird": 0.8}, 2.0),  # rain between exit and enter: stays
        *seconds({"rain": 0.1, "bird": 0.8}, 2.0),
        *seconds({}, 2.0),
    ]
    transitions = run(smoother, frames)
    assert [(t.type, set(t.current)) for t in transitions] == [
        ("start", {"rain"}),
        ("change", {"rain", "bird"}),
        ("change", {"bird"}),
        ("end", set()),
    ]
    assert transitions[1].current == ("rain", "bird")  # ordered by score
    assert transitions[1].scores == {"rain": 0.9, "bird": 0.8}


def test_multi_label_vote_counts_each_label():
    smoother = Smoother(
        config(method="vote", window=3, votes=2, enter=0.5, min_dwell=0.0), multi_label=True
    )
    transitions = run(smoother, [{"a": 0.9, "b": 0.7}, {"a": 0.9, "b": 0.7}])
    assert [set(t.current) for t in transitions] == [{"a", "b"}]


def test_single_label_candidate_ignores_dict_order():
    a = candidate_single((), {"dog": 0.7, "cat": 0.7}, 0.6, 0.4)
    b = candidate_single((), {"cat": 0.7, "dog": 0.7}, 0.6, 0.4)
    assert a == b == ("cat",)


# ---------------------------------------------------------------- frame_scores


def test_frame_scores_binary_keeps_only_the_positive_label():
    labels = ["empty", "person"]
    assert frame_scores(decode_binary(np.array([0.8]), labels, 0.5)) == {
        "person": pytest.approx(0.8)
    }
    negative = decode_binary(np.array([0.1]), labels, 0.5)
    assert negative.label == "empty"
    assert frame_scores(negative) == {"person": pytest.approx(0.1)}
    both = frame_scores(negative, positive_only_binary=False)
    assert both == {"person": pytest.approx(0.1), "empty": pytest.approx(0.9)}


def test_frame_scores_multiclass_answer_and_competitors():
    labels = ["cat", "dog", "fox", "owl"]
    probs = np.array([0.7, 0.2, 0.06, 0.04])
    scores = frame_scores(decode_multiclass(probs, labels, k=3, abstain=0.5))
    assert scores == {"cat": pytest.approx(0.7), "dog": pytest.approx(0.2), "fox": 0.06}
    unsure = decode_multiclass(np.array([0.4, 0.35, 0.15, 0.1]), labels, k=3, abstain=0.5)
    assert frame_scores(unsure) == {}


def test_frame_scores_multilabel_every_label():
    labels = ["bird", "cat", "rain"]
    prediction = decode_multilabel(np.array([0.9, 0.2, 0.6]), labels, {"rain": 0.7}, k=3)
    assert [x.label for x in prediction.labels] == ["bird"]  # rain is under its threshold
    assert frame_scores(prediction) == {
        "bird": pytest.approx(0.9),
        "cat": pytest.approx(0.2),
        "rain": pytest.approx(0.6),
    }
    # Active labels beyond the top-k are still seen.
    many = decode_multilabel(np.array([0.9, 0.8, 0.7]), labels, {}, k=1)
    assert set(frame_scores(many)) == {"bird", "cat", "rain"}


TAXONOMY = {
    "animal": None,
    "insect": "animal",
    "bird": "animal",
    "aphid": "insect",
    "beetle": "insect",
    "sparrow": "bird",
    "vehicle": None,
    "car": "vehicle",
}
LEAVES = ["aphid", "beetle", "sparrow", "car"]


def test_frame_scores_hierarchical_answer_node_only():
    hierarchy = Hierarchy.build(LEAVES, TAXONOMY)
    sure_leaf = decode_hierarchical(np.array([0.8, 0.1, 0.05, 0.05]), hierarchy, 0.6)
    assert frame_scores(sure_leaf) == {"aphid": pytest.approx(0.8)}
    # Unsure between aphid and beetle: the answer backs off to insect (0.9), ancestors excluded.
    backed_off = decode_hierarchical(np.array([0.45, 0.45, 0.05, 0.05]), hierarchy, 0.6)
    assert [x.label for x in backed_off.path] == ["animal", "insect"]
    assert frame_scores(backed_off) == {"insect": pytest.approx(0.9)}
    unknown = decode_hierarchical(np.array([0.25, 0.25, 0.0, 0.5]), hierarchy, 0.6)
    assert frame_scores(unknown) == {}


def test_hierarchical_answers_debounce_to_the_stable_node():
    hierarchy = Hierarchy.build(LEAVES, TAXONOMY)
    frame = decode_hierarchical(np.array([0.45, 0.45, 0.05, 0.05]), hierarchy, 0.6)
    smoother = Smoother(config(min_dwell=0.5))
    assert summary(run(smoother, [frame_scores(frame)] * 20)) == [("start", (), ("insect",))]


def test_include_and_exclude_match_ancestors_of_hierarchical_labels():
    ancestors = ancestor_sets(TAXONOMY)
    frames = seconds({"aphid": 0.9, "sparrow": 0.8}, 1.0)
    insects = Smoother(config(alpha=1.0, min_dwell=0.0, include=["insect"]), ancestors=ancestors)
    assert summary(run(insects, frames)) == [("start", (), ("aphid",))]
    assert "sparrow" not in insects.smoothed
    no_insects = Smoother(config(alpha=1.0, min_dwell=0.0, exclude=["insect"]), ancestors=ancestors)
    assert summary(run(no_insects, frames)) == [("start", (), ("sparrow",))]
    # Without the taxonomy, names match labels only: "insect" is none of them.
    flat = Smoother(config(alpha=1.0, min_dwell=0.0, include=["insect"]))
    assert run(flat, frames) == []
    assert filter_labels({"aphid": 1, "car": 0.5}, ["animal"], ["beetle"], ancestors) == {
        "aphid": 1.0
    }


def test_frame_scores_rejects_an_unknown_task():
    prediction = Prediction("regression", (LabelScore("x", 1.0),), ())
    with pytest.raises(ValueError, match="regression"):
        frame_scores(prediction)


# ---------------------------------------------------------------- calibrated thresholds


def binary_frames(probabilities: Iterable[float], threshold: float) -> list[dict[str, float]]:
    """What the daemon feeds the smoother for a binary model: frame_scores of its decoding."""
    return [
        frame_scores(decode_binary(np.array([p]), ["background", "face"], threshold))
        for p in probabilities
    ]


def test_binary_state_follows_the_bundles_calibrated_threshold():
    """A face model calibrated at 0.3: p = 0.4 is a face for kestrel classify, and so for the
    daemon; p = 0.25 is not. The reported score stays the model's probability."""
    thresholds = ({"face": 0.3, "background": 0.7}, 0.5)
    calibrated = Smoother(config(alpha=1.0, min_dwell=0.0), thresholds=thresholds)
    (start,) = run(calibrated, binary_frames([0.25, 0.25, 0.4, 0.4], 0.3))
    assert start.type == "start" and start.current == ("face",)
    assert start.scores["face"] == pytest.approx(0.4)
    assert calibrated.smoothed["face"] == pytest.approx(0.4)
    # Exit at 0.35 on the calibrated scale = 0.21 here: 0.25 stays, 0.2 leaves.
    assert run(calibrated, binary_frames([0.25], 0.3), start=1.0) == []
    (end,) = run(calibrated, binary_frames([0.2], 0.3), start=2.0)
    assert end.type == "end"

    raw = Smoother(config(alpha=1.0, min_dwell=0.0))  # no thresholds: probabilities, 0.5
    assert run(raw, binary_frames([0.25, 0.4, 0.4], 0.3)) == []


def test_multilabel_labels_enter_at_their_own_thresholds():
    thresholds = ({"cat": 0.2, "dog": 0.8}, 0.5)
    smoother = Smoother(config(alpha=1.0, min_dwell=0.0), multi_label=True, thresholds=thresholds)
    (start,) = run(smoother, [{"cat": 0.25, "dog": 0.7, "bird": 0.45}])
    assert start.current == ("cat",)  # dog under its 0.8, bird under the default 0.5
    (change,) = run(smoother, [{"cat": 0.25, "dog": 0.85, "bird": 0.55}], start=1.0)
    assert set(change.current) == {"cat", "dog", "bird"}


def test_vote_counts_frames_won_at_the_calibrated_threshold():
    thresholds = ({"face": 0.3, "background": 0.7}, 0.5)
    smoother = Smoother(
        config(method="vote", window=3, votes=2, min_dwell=0.0), thresholds=thresholds
    )
    (start,) = run(smoother, binary_frames([0.35, 0.35], 0.3))
    assert start.current == ("face",) and start.scores["face"] == pytest.approx(2 / 3)


def test_decision_thresholds_per_task(shipped_model):
    manifest = load_bundle(shipped_model).manifest
    assert decision_thresholds(manifest) == ({}, manifest.thresholds.hierarchy)
    binary = manifest.model_copy(
        update={
            "task": "binary",
            "labels": ["background", "face"],
            "thresholds": manifest.thresholds.model_copy(update={"binary": 0.3}),
        }
    )
    per_label, default = decision_thresholds(binary)
    assert per_label == {"face": 0.3, "background": pytest.approx(0.7)} and default == 0.5
    multiclass = manifest.model_copy(
        update={
            "task": "multiclass",
            "thresholds": manifest.thresholds.model_copy(update={"abstain": 0.6}),
        }
    )
    assert decision_thresholds(multiclass) == ({}, 0.6)
    multilabel = manifest.model_copy(
        update={
            "task": "multilabel",
            "thresholds": manifest.thresholds.model_copy(update={"per_label": {"cat": 0.2}}),
        }
    )
    assert decision_thresholds(multilabel) == ({"cat": 0.2}, 0.5)
