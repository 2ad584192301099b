"""Bach chorales from music21's bundled corpus, as note lists and piano rolls.

A chorale becomes a list of notes ``(pitch, onset, duration)``, pitches as MIDI numbers and
times as whole numbers of grid steps (``step`` quarter notes each, 0.5 = eighth notes), taken from
the four voices (soprano, alto, tenor, bass) with ties merged. A piano roll is a ``(T, P)`` 0/1
array, ``roll[t, p] = 1`` when pitch ``low + p`` sounds during step ``t``.

The conversions are plain NumPy and do not need music21; only reading the corpus and writing MIDI
do. music21's corpus ships with the package; nothing is downloaded. Parsing all chorales takes
about a minute, so the note lists are cached in ``$JAXRNN_DATA`` (or ``~/.cache/jaxrnn``) as an
``.npz`` after the first load.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxrnn.data.deps import require
from jaxrnn.datasets.sdist import cache_dir

CACHE_VERSION = 1


class Chorales(NamedTuple):
    names: list[str]  # BWV names, e.g. "bwv1.6"
    notes: list[np.ndarray]  # per chorale (N_i, 3) int32: pitch, onset, duration (grid steps)
    step: float  # grid step in quarter notes


# --------------------------------------------------------------------------- piano rolls

def _check_notes(notes) -> np.ndarray:
    notes = np.asarray(notes)
    if notes.ndim != 2 or notes.shape[1] != 3:
        raise ValueError(f"notes: expected shape (N, 3) (pitch, onset, duration), "
                         f"got {notes.shape}")
    if not np.issubdtype(notes.dtype, np.integer):
        raise TypeError(f"notes: expected integers (grid steps), got dtype {notes.dtype}")
    if notes.size and (notes[:, 1].min() < 0 or notes[:, 2].min() < 1):
        raise ValueError("notes: onsets must be >= 0 and durations >= 1 step")
    return notes


def notes_to_roll(notes, low: int, n_pitches: int, length: int | None = None) -> np.ndarray:
    """A ``(T, n_pitches)`` float32 0/1 piano roll; ``T`` is the end of the last note unless
    ``length`` is given (notes past it are cut).

    Raises:
      ValueError: a pitch outside ``[low, low + n_pitches)``, or bad ``notes``.
    """
    notes = _check_notes(notes)
    if notes.size and (notes[:, 0].min() < low or notes[:, 0].max() >= low + n_pitches):
        raise ValueError(
            f"notes: pitches must lie in [{low}, {low + n_pitches}), got "
            f"[{notes[:, 0].min()}, {notes[:, 0].max()}]"
        )
    end = int((notes[:, 1] + notes[:, 2]).max()) if notes.size else 0
    T = end if length is None else int(length)
    roll = np.zeros((T, n_pitches), np.float32)
    for pitch, onset, dur in notes:
        roll[onset:min(onset + dur, T), pitch - low] = 1.0
    return roll


def roll_to_notes(roll, low: int) -> np.ndarray:
    """The notes of a piano roll: each maximal run of consecutive on-steps of a pitch is one note.
    ``(N, 3)`` int32 sorted by onset then pitch. ``roll_to_notes(notes_to_roll(n))`` gives ``n``
    back whenever no two notes of one pitch touch (a repeated note merges into a held one)."""
    roll = np.asarray(roll) > 0.5
    if roll.ndim != 2:
        raise ValueError(f"roll: expected shape (T, P), got {roll.shape}")
    padded = np.concatenate([np.zeros((1, roll.shape[1]), bool), roll,
                             np.zeros((1, roll.shape[1]), bool)])
    change = np.diff(padded.astype(np.int8), axis=0)  # +1 at onsets, -1 one past the end
    notes = []
    for p in range(roll.shape[1]):
        starts = np.flatnonzero(change[:, p] == 1)
        ends = np.flatnonzero(change[:, p] == -1)
        notes.extend((low + p, s, e - s) for s, e in zip(starts, ends, strict=True))
    notes = np.asarray(notes, np.int32).reshape(-1, 3)
    return notes[np.lexsort((notes[:, 0], notes[:, 1]))]


def pitch_range(chorales: Chorales) -> tuple[int, int]:
    """``(low, n_pitches)`` covering every pitch in the corpus."""
    pitches = np.concatenate([n[:, 0] for n in chorales.notes])
    return int(pitches.min()), int(pitches.max() - pitches.min() + 1)


# --------------------------------------------------------------------------- music21

def _music21():
    return require("music21", purpose="the music task (Bach chorales)")


def score_to_notes(score, step: float = 0.5) -> np.ndarray | None:
    """Notes of a four-voice music21 score on a grid of ``step`` quarter notes; None if the score
    does not have exactly four parts. Onsets and ends are rounded to the grid; notes that round
    to zero length (grace notes, short ornaments) are dropped."""
    if len(score.parts) != 4:
        return None
    notes = []
    for part in score.parts:
        for n in part.stripTies().flatten().notes:
            on = int(round(float(n.offset) / step))
            off = int(round(float(n.offset + n.quarterLength) / step))
            if off <= on:
                continue
            for p in n.pitches:
                notes.append((int(p.midi), on, off - on))
    if not notes:
        return None
    notes = np.asarray(notes, np.int32)
    notes[:, 1] -= notes[:, 1].min()  # a pickup bar may start at a negative offset
    return notes[np.lexsort((notes[:, 0], notes[:, 1]))]


def _parse_corpus(step: float, limit: int | None) -> Chorales:
    m21 = _music21()
    paths = sorted(p for p in m21.corpus.getComposer("bach") if p.suffix == ".mxl")
    names, notes = [], []
    for path in paths:
        if limit is not None and len(names) >= limit:
            break
        n = score_to_notes(m21.corpus.parse(path), step)
        if n is not None:
            names.append(path.stem)
            notes.append(n)
    return Chorales(names, notes, step)


def load_chorales(*, step: float = 0.5, limit: int | None = None, cache: bool = True,
                  verbose: bool = True) -> Chorales:
    """The four-voice Bach chorales of music21's corpus (about 400) as note lists.

    Args:
      step: grid step in quarter notes (0.5: eighth notes; 0.25: sixteenths).
      limit: parse only the first ``limit`` chorales (sorted by file name), not cached.
      cache: read/write the parsed notes in the cache directory.
    """
    if not step > 0:
        raise ValueError(f"step: expected a positive number of quarter notes, got {step!r}")
    path = cache_dir() / f"bach_chorales_step{step:g}_v{CACHE_VERSION}.npz"
    if cache and limit is None and path.is_file():
        z = np.load(path, allow_pickle=False)
        bounds = z["bounds"]
        notes = [z["notes"][a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        return Chorales([str(s) for s in z["names"]], notes, float(z["step"]))
    if verbose:
        import sys

        print("jaxrnn: parsing the Bach chorales of music21's corpus (once, about a minute)",
              file=sys.stderr)
    data = _parse_corpus(step, limit)
    if cache and limit is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        bounds = np.cumsum([0] + [len(n) for n in data.notes])
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, names=np.asarray(data.names), notes=np.concatenate(data.notes),
                 bounds=bounds, step=step)
        tmp.replace(path)
    return data


def notes_to_midi(notes, path, *, step: float = 0.5, tempo_bpm: float = 80.0) -> Path:
    """Write notes ``(N, 3)`` (pitch, onset, duration in grid steps) to a MIDI file with music21;
    notes with the same onset and duration form a chord."""
    notes = _check_notes(notes)
    m21 = _music21()
    stream = m21.stream.Stream()
    stream.insert(0, m21.tempo.MetronomeMark(number=tempo_bpm))
    groups: dict[tuple[int, int], list[int]] = {}
    for pitch, onset, dur in notes:
        groups.setdefault((int(onset), int(dur)), []).append(int(pitch))
    for (onset, dur), pitches in sorted(groups.items()):
        el = m21.chord.Chord(pitches) if len(pitches) > 1 else m21.note.Note(pitches[0])
        el.quarterLength = dur * step
        stream.insert(onset * step, el)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stream.write("midi", fp=str(path))
    return path


def midi_to_notes(path, *, step: float = 0.5) -> np.ndarray:
    """Read the notes of a MIDI file back onto the grid, from its raw note-on/note-off events
    (music21's score parser re-voices overlapping notes, so it is not used for checking)."""
    m21 = _music21()
    midi = m21.midi
    mf = midi.MidiFile()
    mf.open(str(path))
    try:
        mf.read()
    finally:
        mf.close()
    ticks_per_step = mf.ticksPerQuarterNote * step
    on_type, off_type = midi.ChannelVoiceMessages.NOTE_ON, midi.ChannelVoiceMessages.NOTE_OFF
    notes = []
    for track in mf.tracks:
        now, sounding = 0, {}
        for event in track.events:
            if isinstance(event, midi.DeltaTime):
                now += event.time
                continue
            if event.type == on_type and event.velocity > 0:
                sounding.setdefault(event.pitch, []).append(now)
            elif event.type in (on_type, off_type) and sounding.get(event.pitch):
                start = sounding[event.pitch].pop(0)
                on = int(round(start / ticks_per_step))
                dur = int(round(now / ticks_per_step)) - on
                if dur > 0:
                    notes.append((int(event.pitch), on, dur))
    notes = np.asarray(notes, np.int32).reshape(-1, 3)
    return notes[np.lexsort((notes[:, 0], notes[:, 1]))]


__all__ = ["Chorales", "notes_to_roll", "roll_to_notes", "pitch_range", "score_to_notes",
           "load_chorales", "notes_to_midi", "midi_to_notes"]
