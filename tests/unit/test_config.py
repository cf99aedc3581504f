"""Node config: TOML plus flags (flags win); bad values name the key and file."""

import pytest

from chronik_trio.node.config import ConfigError, load


def test_flags_win_over_the_file(tmp_path):
    f = tmp_path / "node.toml"
    f.write_text('[node]\nnode_id = 3\nlisten = "127.0.0.1:9999"\nrack = "r1"\n')
    cfg = load(f, {"node_id": 5, "listen": None})
    assert (cfg.node_id, cfg.listen, cfg.rack) == (5, "127.0.0.1:9999", "r1")
    assert cfg.advertised_host_port == ("127.0.0.1", 9999)


def test_defaults_give_a_node_on_9092():
    cfg = load(None, {})
    assert cfg.listen_host_port == ("127.0.0.1", 9092) and cfg.voters == (1,)


@pytest.mark.parametrize("text,match", [
    ('nodeid = 1', "unknown key 'nodeid'"),
    ('listen = "nohost"', "HOST:PORT"),
    ('fsync = "always"', "unknown key 'fsync'"),
    ('peers = "1@a:1,1@b:2"', "twice"),
    ('node_id = 4\npeers = "1@a:1,2@b:2"', "no entry for node_id 4"),
    ('default_partitions = 0', "default_partitions"),
    ('node_id = ', "node.toml"),
])
def test_bad_files_are_refused_with_a_clear_message(tmp_path, text, match):
    f = tmp_path / "node.toml"
    f.write_text(text + "\n")
    with pytest.raises(ConfigError, match=match):
        load(f, {})


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.toml", {})
