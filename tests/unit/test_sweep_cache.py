"""The sweep cache: a killed sweep resumed at another batch size returns every row exactly once,
and a corpus of damaged caches each ends in an error naming the file or in the correct table."""

import json
import shutil

import pandas as pd
import pytest
import torch

from workbench.data.pairs import ContrastPair
from workbench.errors import ArtefactError
from workbench.measure import sweeps
from workbench.measure.sweep_cache import rebuild_table
from workbench.measure.sweeps import run_sweep
from workbench.steering.forms import SteeringVector

GRID = (-1.0, 0.0, 2.0)


@pytest.fixture(scope="module")
def pairs():
    words = ["good", "fine", "bad", "grim", "nice", "awful", "kind", "cruel", "calm", "loud"]
    return [
        ContrastPair(f"q{i}", f"Item {i}: it was" + " very" * (i % 3), f" {w}", f" not {w} at all")
        for i, w in enumerate(words * 2)
    ]


@pytest.fixture(scope="module")
def steer(tiny_llama):
    vector = SteeringVector.for_model(tiny_llama, 1)
    with torch.no_grad():
        vector.bias.copy_(
            torch.randn(vector.bias.shape, generator=torch.Generator().manual_seed(0))
        )
    return vector


@pytest.fixture(scope="module")
def reference(tiny_llama, pairs, steer):
    return run_sweep(tiny_llama, pairs, steer, GRID, batch_size=4, progress=False)


def _sweep(model, pairs, steer, folder, batch_size=4):
    return run_sweep(
        model, pairs, steer, GRID, batch_size=batch_size, cache_dir=folder, progress=False
    )


def _killed_after(monkeypatch, calls: int) -> None:
    original, seen = sweeps._batch_losses, []

    def dying(*args, **kwargs):
        if len(seen) == calls:
            raise KeyboardInterrupt  # as a user's Ctrl-C or a killed worker
        seen.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(sweeps, "_batch_losses", dying)


@pytest.mark.parametrize("resume_batch", [3, 4, 8, 20])
def test_killed_and_resumed_at_another_batch_size_returns_every_row_once(
    tiny_llama, pairs, steer, reference, tmp_path, monkeypatch, resume_batch
):
    with monkeypatch.context() as patch:
        _killed_after(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            _sweep(tiny_llama, pairs, steer, tmp_path, batch_size=4)
    folder = next(tmp_path.glob("sweep-*"))
    assert len(list(folder.glob("part-*.json"))) == 3 and not (folder / "table.parquet").exists()
    resumed = _sweep(tiny_llama, pairs, steer, tmp_path, batch_size=resume_batch)
    assert len(resumed) == len(pairs) * len(GRID)
    assert not resumed.duplicated(["pair_id", "m"]).any()
    pd.testing.assert_frame_equal(resumed, reference, check_exact=False, atol=1e-4, rtol=0)


def _part(folder, index=0):
    return sorted(folder.glob("part-*.parquet"))[index]


def _flip_value(folder):
    part = _part(folder)
    table = pd.read_parquet(part)
    table.loc[0, "pref_odds"] = -table.loc[0, "pref_odds"]
    table.to_parquet(part)


def _part_over_another(folder):
    shutil.copyfile(_part(folder, 0), _part(folder, 1))


def _edit_record(change):
    def edit(folder):
        record = sorted(folder.glob("part-*.json"))[0]
        data = json.loads(record.read_text())
        change(data)
        record.write_text(json.dumps(data))

    return edit


def _flip_table_byte(folder):
    table = folder / "table.parquet"
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0x10
    table.write_bytes(bytes(data))


REFUSED = {
    "a value flipped in a part": _flip_value,
    "one part copied over another": _part_over_another,
    "a part truncated": lambda f: _part(f).write_bytes(_part(f).read_bytes()[:100]),
    "a record's pair ids edited": _edit_record(lambda d: d["pair_ids"].pop()),
    "a record's key edited": _edit_record(lambda d: d.update(key="0" * 64)),
    "a record not JSON": lambda f: sorted(f.glob("part-*.json"))[0].write_text("{"),
    "a recorded part deleted": lambda f: _part(f).unlink(),
    "config.json of another sweep": lambda f: (f / "config.json").write_text(
        json.dumps({"sweep": {"other": 1}, "pair_ids": []})
    ),
    "table.parquet byte flipped": _flip_table_byte,
    "table record deleted": lambda f: (f / "table.json").unlink(),
}


@pytest.mark.parametrize("damage", list(REFUSED))
def test_damaged_caches_are_refused_naming_the_file(tiny_llama, pairs, steer, tmp_path, damage):
    _sweep(tiny_llama, pairs, steer, tmp_path)
    folder = next(tmp_path.glob("sweep-*"))
    if "table" not in damage:
        (folder / "table.parquet").unlink()
    REFUSED[damage](folder)
    with pytest.raises(ArtefactError, match=r"sweep-\w+/(part-\w+|config|table)\.(parquet|json)"):
        _sweep(tiny_llama, pairs, steer, tmp_path)


def test_a_part_of_another_sweep_is_refused(tiny_llama, pairs, steer, tmp_path):
    _sweep(tiny_llama, pairs, steer, tmp_path / "a")
    _sweep(tiny_llama, pairs[:8], steer, tmp_path / "b")
    mine, theirs = next((tmp_path / "a").glob("sweep-*")), next((tmp_path / "b").glob("sweep-*"))
    (mine / "table.parquet").unlink()
    for file in theirs.glob("part-*"):
        shutil.copy(file, mine / file.name.replace("part-", "part-0"))
    with pytest.raises(ArtefactError, match="another sweep"):
        _sweep(tiny_llama, pairs, steer, tmp_path / "a")


RECOVERED = {
    "table deleted": lambda f: (f / "table.parquet").unlink(),
    "a part's record deleted (killed between the two writes)": lambda f: (
        (f / "table.parquet").unlink(),
        sorted(f.glob("part-*.json"))[0].unlink(),
    ),
    "a temporary file left by a kill": lambda f: (
        (f / "table.parquet").unlink(),
        (f / ".part-x.parquet.1.tmp").write_bytes(b"half"),
    ),
}


@pytest.mark.parametrize("damage", list(RECOVERED))
def test_recoverable_damage_gives_the_correct_table(
    tiny_llama, pairs, steer, reference, tmp_path, damage
):
    _sweep(tiny_llama, pairs, steer, tmp_path)
    folder = next(tmp_path.glob("sweep-*"))
    RECOVERED[damage](folder)
    again = _sweep(tiny_llama, pairs, steer, tmp_path)
    pd.testing.assert_frame_equal(again, reference, check_exact=False, atol=1e-4, rtol=0)


def test_the_table_is_rebuilt_from_its_parts(tiny_llama, pairs, steer, reference, tmp_path):
    _sweep(tiny_llama, pairs, steer, tmp_path)
    folder = next(tmp_path.glob("sweep-*"))
    _flip_table_byte(folder)
    rebuilt = rebuild_table(folder)
    pd.testing.assert_frame_equal(rebuilt, reference, check_exact=False, atol=1e-4, rtol=0)
    pd.testing.assert_frame_equal(_sweep(tiny_llama, pairs, steer, tmp_path), rebuilt)
    _part(folder).with_suffix(".json").unlink()
    _part(folder).unlink()
    with pytest.raises(ArtefactError, match="no part holds pairs"):
        rebuild_table(folder)


def test_repeated_pair_ids_are_refused(tiny_llama, pairs, steer):
    with pytest.raises(ValueError, match=r"pair ids repeat.*q0"):
        run_sweep(tiny_llama, [pairs[0], pairs[0]], steer, GRID, progress=False)
