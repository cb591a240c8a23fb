"""Held-out confirmation: score the front on documents the search never saw.

The search selects its front on the very documents it scores, so the front's scores are
biased upwards (the winners are partly lucky). Each task's confirmation documents — the
end of its seeded order, ``confirmation.examples`` of them, held out of every search
fidelity — give an unbiased score. :func:`confirm_study` scores the front and every
candidate statistically tied with it (no front member confidently dominates it, by the
paired test of :mod:`nas.search.racing`) on them, stored as their own fidelity
(``call-h100-s0``); ``nas pick``, the report, the web UI and model cards then rank and
report by the confirmed score.

A study created before confirmation sets existed gets one on its first confirmation,
from the documents its search never reached (the end of each task's order, past its top
fidelity); a study whose search scored every document has nothing left to confirm on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from evaluators.prefix import reuse_order
from evaluators.scorer import TaskScorer, build_scorers
from nas.errors import NasError
from nas.front import candidates_mask, resolve_column
from nas.model.directory import LoadedSupernet, load_supernet
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig
from nas.search.racing import Contender, dominating_member, paired_advantages
from nas.search.results import StudyResults, load_results
from nas.search.scoring import StudyScoring
from nas.search.spec import ConfirmationSpec, StudySpec
from nas.search.study import stored_spec
from storage import Database, get_study, open_database, update_study_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Confirmation:
    """What :func:`confirm_study` did."""

    study: str
    fidelity: str  # the confirmation fidelity's label
    examples: int  # confirmation documents per task
    front: tuple[int, ...]  # trials on the search front
    tied: tuple[int, ...]  # other trials no front member confidently dominates, confirmed
    evaluations: int  # scorer runs (the rest came from the cache)
    cache_hits: int
    seconds: float
    added_split: bool = False  # a study older than confirmation sets got one now
    unconfirmed: tuple[int, ...] = ()  # tied trials left out by ``confirmation.max_tied``

    @property
    def trials(self) -> tuple[int, ...]:
        return self.front + self.tied


def confirm_study(
    name: str,
    storage_url: str | None = None,
    *,
    examples: int | None = None,
    max_tied: int | None = None,
    loaded: LoadedSupernet | None = None,
    scorers: Sequence[TaskScorer] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Confirmation:
    """Score study ``name``'s front and the candidates tied with it on its confirmation
    documents (all of them, or the first ``examples`` per task); see the module docstring.
    ``max_tied`` overrides the spec's ``confirmation.max_tied``.

    ``loaded``/``scorers`` reuse a loaded supernet and built scorers (``nas search`` passes
    the search's own); ``progress(done, total)`` is called after each candidate.
    """
    start = time.perf_counter()
    db = open_database(storage_url)
    try:
        spec = stored_spec(name, db.url)
        if loaded is None:
            loaded = load_supernet(spec.supernet, dtype=spec.dtype, device=spec.device)
        if scorers is None:
            space = SearchSpace.resolve(spec.space, loaded.config, loaded.model.layer_rank, loaded.space)
            scorers = build_scorers(spec, loaded, space)
        added = spec.confirmation is None
        if added:
            spec = _add_split(db, spec, scorers, examples)
        results = load_results(db, name)
        if not results.front.shape[0]:
            raise NasError(
                f"study {name!r} has no front yet (no feasible trial scored at its top fidelity); "
                "run the search first (`nas search` or `nas worker`)"
            )
        fidelity = spec.confirm_fidelity(examples)
        scoring = StudyScoring(db, results.supernet_hash, spec, scorers)
        front, tied = _chosen(results, spec, scoring)
        cap = max_tied if max_tied is not None else (spec.confirmation.max_tied if spec.confirmation else None)
        tied, unconfirmed = (tied, []) if cap is None else (tied[:cap], tied[cap:])
        chosen = front + sorted(tied)
        rows = results.frame.set_index("trial")
        configs = [SubnetConfig.from_json(str(rows.loc[trial]["config_json"])) for trial in chosen]
        # every candidate is scored on the same documents: in trie order, neighbours share layers
        for i, k in enumerate(reuse_order(configs)):
            scoring.score(configs[k], int(rows.loc[chosen[k]]["subnet_id"]), fidelity)
            if progress is not None:
                progress(i + 1, len(chosen))
        log.info("confirmed %d candidates of study %s on %s", len(chosen), name, fidelity.label)
        return Confirmation(
            study=name, fidelity=fidelity.label, examples=fidelity.limit or spec.holdout,
            front=tuple(front), tied=tuple(sorted(tied)), evaluations=scoring.counts.evaluations,
            cache_hits=scoring.counts.cache_hits, seconds=time.perf_counter() - start, added_split=added,
            unconfirmed=tuple(sorted(unconfirmed)),
        )
    finally:
        db.close()


def _chosen(results: StudyResults, spec: StudySpec, scoring: StudyScoring) -> tuple[list[int], list[int]]:
    """(front trials, tied trials): the candidates no front member confidently dominates,
    the tied ones ordered by the front's evidence against them, weakest first."""
    frame = results.frame
    candidates = frame[candidates_mask(frame, results.objectives)]
    columns = [resolve_column(o.metric, frame) or o.metric for o in spec.objectives]
    examples = scoring.examples_of([int(s) for s in candidates["subnet_id"]], spec.top)

    def contender(row: object) -> Contender:
        values = tuple(float(row[c]) for c in columns)  # type: ignore[index]
        return Contender(int(row["trial"]), values, examples.get(int(row["subnet_id"]), {}))  # type: ignore[index]

    members = [contender(r) for _, r in candidates[candidates["on_front"]].iterrows()]
    z = spec.confirmation.z if spec.confirmation is not None else 1.96
    others = [contender(r) for _, r in candidates[~candidates["on_front"]].iterrows()]
    tied = [c for c in others if dominating_member(members, c, spec, z=z)[0] is None]
    tied.sort(key=lambda c: (_evidence_against(members, c, spec), c.trial))
    return sorted(m.trial for m in members), [c.trial for c in tied]


def _evidence_against(members: Sequence[Contender], candidate: Contender, spec: StudySpec) -> float:
    """How strongly the front says ``candidate`` is dominated: over the members at least as
    cheap on every cost, the largest (over members) of the smallest (over scored objectives)
    paired z of the member's advantage; -inf when no member is as cheap."""
    best = float("-inf")
    for member in members:
        advantages = paired_advantages(member, candidate, spec)
        if advantages:
            best = max(best, min(0.0 if a is None else a.value / max(a.stderr, 1e-12) for a in advantages))
    return best


def _add_split(db: Database, spec: StudySpec, scorers: Sequence[TaskScorer], examples: int | None) -> StudySpec:
    """Give a study created before confirmation sets one, from the documents its search
    never reached, and store it with the study."""
    top = spec.top_fidelity
    if top.limit is None:
        raise NasError(
            f"study {spec.name!r} scored every document of its tasks (its top fidelity is 'full'): no document is "
            "left that the search has not seen; confirmation needs a study whose search leaves some out"
        )
    if any(t.is_heldout for t in spec.tasks):
        raise NasError(
            f"study {spec.name!r} predates confirmation sets and scores heldout_loss, whose sequences were then drawn "
            "differently from today's held-out order: its unseen sequences are not known; start a new study to confirm"
        )
    k = examples or ConfirmationSpec().examples
    short = [(task, n) for s in scorers for task, n in s.n_docs.items() if n - top.limit < k]
    if short:
        remain = min(n - top.limit for _, n in short)
        raise NasError(
            f"a confirmation set of {k} documents per task does not fit: "
            + ", ".join(f"{task} has {n} documents and the search used up to {top.limit}" for task, n in short)
            + f"; at most {max(remain, 0)} remain unseen: pass --examples {max(remain, 0)} or fewer"
        )
    row = get_study(db, spec.name)
    assert row is not None
    update_study_spec(db, spec.name, {**row.spec, "confirmation": ConfirmationSpec(examples=k).model_dump()})
    log.warning("study %s: added a confirmation set of %d documents per task the search never reached", spec.name, k)
    return spec.model_copy(update={"confirmation": ConfirmationSpec(examples=k)})


__all__ = ["Confirmation", "confirm_study"]
