"""Edit distance and the error rates of sequence prediction (phoneme and word error rate)."""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions turning
    ``hypothesis`` into ``reference`` (unit costs), by dynamic programming in ``O(len * len)``."""
    ref, hyp = list(reference), list(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def error_rates(references: Sequence[Sequence], hypotheses: Sequence[Sequence]) -> dict:
    """Token error rate (total edit distance / total reference length; the phoneme error rate in
    G2P) and sequence error rate (fraction of sequences not exactly right; the word error rate).
    A word with several accepted references counts its best-matching one (``references[i]`` may be
    a list of alternatives, each a sequence of tokens)."""
    if len(references) != len(hypotheses):
        raise ValueError(
            f"hypotheses: expected {len(references)} sequences (one per reference), "
            f"got {len(hypotheses)}"
        )
    if len(references) == 0:
        raise ValueError("references: expected at least one sequence, got none")
    edits = total = wrong = 0
    for refs, hyp in zip(references, hypotheses, strict=True):
        alternatives = refs if refs and isinstance(refs[0], (list, tuple)) else [refs]
        best = min(alternatives, key=lambda r: (edit_distance(r, hyp), len(r)))
        d = edit_distance(best, hyp)
        edits += d
        total += len(best)
        wrong += d > 0
    return {
        "token_error_rate": edits / max(total, 1),
        "sequence_error_rate": wrong / len(references),
    }
