"""The grid's cells and shards, in process (the Ray runtime is the services tier's)."""

import pytest

from workbench.errors import ArtefactError, ConfigError
from workbench.pipelines.grid import SHARDS, GridSettings, grid_cells, merge_shards, run_cell

SETTINGS = GridSettings(
    model="tiny-llama",
    concepts=("sentiment",),
    layers=(1,),
    methods=("diff_of_means", "sft"),
    forms=("vector", "lora"),
    multipliers=(0.0, 1.0),
    train_pairs=16,
    test_pairs=4,
    epochs=1,
)


def test_cells_cover_the_grid_once():
    cells = grid_cells(GridSettings(layers=(1, 2), forms=("vector", "lora"), seeds=(0, 1)))
    # diff_of_means and random: one cell (a direction); split: one per form
    assert len(cells) == 2 * 2 * (1 + 1 + 2) and len(set(cells)) == len(cells)
    names = {c.name(SETTINGS) for c in cells}
    assert len(names) == len(cells)
    other = GridSettings(layers=(1, 2), forms=("vector", "lora"), seeds=(0, 1), epochs=3)
    assert cells[0].name(other) != cells[0].name(GridSettings(layers=(1, 2)))  # settings count


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="unknown"):
        GridSettings(methods=("dpo",))
    with pytest.raises(ConfigError, match="must hold 0 and 1"):
        GridSettings(multipliers=(0.0, 2.0))
    with pytest.raises(ConfigError, match="layers is empty"):
        GridSettings(layers=())


def test_a_cell_writes_a_checked_shard(tmp_path):
    cell = grid_cells(SETTINGS)[0]
    shard = run_cell(cell, SETTINGS, tmp_path)
    table = merge_shards(tmp_path, [cell], SETTINGS)
    assert len(table) == 4 * 2 and set(table["method"]) == {"diff_of_means"}
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match=rf"{SHARDS}/.*parquet: does not match"):
        merge_shards(tmp_path, [cell], SETTINGS)
