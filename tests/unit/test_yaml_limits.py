"""Every YAML fleetkit reads refuses alias bombs, deep nesting and oversized documents."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import yaml

from fleetkit.foundation import yamlfile
from fleetkit.foundation.inventory import load_inventory
from fleetkit.foundation.settings import load_settings
from fleetkit.foundation.status import ConfigError, ExitStatus
from fleetkit.foundation.yamlfile import load_yaml, parse_yaml
from tests.unit.test_settings import make_setup

#: "Billion laughs": 9 levels of 9 aliases = 387,420,489 strings from ~300 bytes.
BOMB = "a0: &a0 [lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)


def test_an_alias_bomb_is_refused_before_expanding() -> None:
    with pytest.raises(ConfigError, match="aliases") as caught:
        parse_yaml(BOMB, file="bomb.yaml")
    assert caught.value.file == "bomb.yaml"
    assert caught.value.exit_status == ExitStatus.BAD_INPUT
    assert "line 2" in str(caught.value)


def test_merge_keys_need_aliases_and_are_refused_too() -> None:
    with pytest.raises(ConfigError, match="aliases"):
        parse_yaml("base: &b {port: 22}\nhost: {<<: *b, address: x}\n", file="f")


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(ConfigError, match="nested deeper than"):
        parse_yaml("[" * 100_000 + "]" * 100_000, file="deep.yaml")
    assert parse_yaml("[" * 30 + "]" * 30, file="ok.yaml") is not None


def test_too_many_values_are_refused() -> None:
    text = "[" + "1," * (yamlfile.MAX_NODES + 10) + "1]"
    with pytest.raises(ConfigError, match="more than"):
        parse_yaml(text, file="many.yaml", max_bytes=10 * len(text))


def test_the_caller_caps_the_size_of_host_files() -> None:
    text = "key: " + "x" * (yamlfile.HOST_FILE_BYTES + 1) + "\n"
    with pytest.raises(ConfigError, match="larger than") as caught:
        parse_yaml(
            text, file="node-1:/etc/bacalhau/config.yaml", max_bytes=yamlfile.HOST_FILE_BYTES
        )
    assert caught.value.file == "node-1:/etc/bacalhau/config.yaml"
    assert parse_yaml("key: small\n", file="f", max_bytes=yamlfile.HOST_FILE_BYTES) == {
        "key": "small"
    }


def test_an_oversized_file_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(1 << 33)  # 8 GiB sparse: reading it would exhaust memory
    with pytest.raises(ConfigError, match="the limit is") as caught:
        load_yaml(path)
    assert caught.value.file == str(path)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fleetkit.yaml"
    os.mkfifo(fifo)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            load_yaml(fifo)
        except BaseException as exc:  # inspected below
            errors.append(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive()
    assert "not a regular file" in str(errors[0])


def test_a_bomb_in_the_inventory_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "inventory").mkdir()
    bad = tmp_path / "inventory" / "fleet.yaml"
    bad.write_text(BOMB)
    with pytest.raises(ConfigError, match="aliases") as caught:
        load_inventory(tmp_path / "inventory")
    assert caught.value.file == str(bad)


def test_an_oversized_inventory_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "inventory").mkdir()
    big = tmp_path / "inventory" / "fleet.yaml"
    big.write_text("# " + "x" * yamlfile.INVENTORY_BYTES + "\n")
    with pytest.raises(ConfigError, match="the limit is"):
        load_inventory(tmp_path / "inventory")


def test_a_bomb_in_the_settings_names_the_file(tmp_path: Path) -> None:
    setup = make_setup(tmp_path, settings_text=BOMB)
    with pytest.raises(ConfigError, match="aliases") as caught:
        load_settings({}, str(tmp_path))
    assert caught.value.file == str(setup.settings_file)


def test_oversized_settings_are_refused(tmp_path: Path) -> None:
    make_setup(tmp_path, settings_text="# " + "x" * yamlfile.SETTINGS_BYTES)
    with pytest.raises(ConfigError, match="the limit is"):
        load_settings({}, str(tmp_path))


def test_a_bomb_in_a_pack_names_the_file(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(BOMB)
    with pytest.raises(ConfigError, match="aliases") as caught:
        load_yaml(pack, max_bytes=yamlfile.PACK_BYTES)
    assert caught.value.file == str(pack)


def test_duplicate_and_unhashable_keys_are_errors() -> None:
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        parse_yaml("a: 1\na: 2\n", file="f")
    with pytest.raises(ConfigError, match="plain value"):
        parse_yaml("? [1, 2]\n: x\n", file="f")


def test_ordinary_documents_still_load() -> None:
    text = yaml.safe_dump({"compute": {"hosts": {"n1": {"address": "10.0.0.1"}}}})
    assert parse_yaml(text, file="f") == {"compute": {"hosts": {"n1": {"address": "10.0.0.1"}}}}
    assert parse_yaml("", file="f") is None
