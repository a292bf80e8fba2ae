"""Configuration: every mistake names its key; `vpnrouter run` exits 2 with one line."""

import subprocess
import sys

import pytest

from tests.unit.frames import config
from router.config import ConfigError, parse


@pytest.mark.parametrize("change, key", [
    ({"lan": {"bogus": 1}}, "lan.bogus"),
    ({"wan": {"address": "198.51.100.1"}}, "wan.address"),
    ({"wan": {"address": "300.1.1.1/24"}}, "wan.address"),
    ({"lan": {"address": "198.51.100.2/24"}}, "wan.address"),   # overlapping subnets
    ({"wan": {"gateway": "10.0.0.1"}}, "wan.gateway"),
    ({"lan": {"mac": "zz"}}, "lan.mac"),
    ({"lan": {"mtu": 100}}, "lan.mtu"),
    ({"timeouts": {"udp": -1}}, "timeouts.udp"),
    ({"timeouts": {"udp": "long"}}, "timeouts.udp"),
    ({"limits": {"sessions": 0}}, "limits.sessions"),
    ({"passthrough": {"pptp": "yes"}}, "passthrough.pptp"),
    ({"passthrough": {"wireguard": True}}, "passthrough.wireguard"),
    ({"nat": {"filtering": "open"}}, "nat.filtering"),
    ({"forward": [{"proto": "tcp", "port": 80, "to": "10.0.0.1:80"}]}, "forward[0].to"),
    ({"forward": [{"proto": "sctp", "port": 80, "to": "192.168.77.5:80"}]}, "forward[0].proto"),
    ({"surprise": {}}, "surprise"),
    ({"ipsec": {"ike_port": "keep"}}, "ipsec.ike_port"),
    ({"ipsec": {"ike_port": 500}}, "ipsec.ike_port"),
    ({"ipsec": {"nat_t": True}}, "ipsec.nat_t"),
    ({"timeouts": {"natt": 0}}, "timeouts.natt"),
    ({"control": {"group": "no-such-group-here"}}, "control.group"),
    ({"control": {"mode": "0666"}}, "control.mode"),
    ({"control": {"mode": "rw"}}, "control.mode"),
    ({"control": {"max_clients": 0}}, "control.max_clients"),
    ({"control": {"max_clients": "many"}}, "control.max_clients"),
    ({"state": {"interval": -1}}, "state.interval"),
    ({"state": {"file": 7}}, "state.file"),
    ({"state": {"path": "/tmp/x"}}, "state.path"),
])
def test_bad_config_names_the_key(change, key):
    with pytest.raises(ConfigError) as info:
        parse(config(**change))
    assert str(info.value).startswith(key + ":")


def test_control_socket_group_and_limits():
    import grp
    default = parse(config())
    assert (default.control_mode, default.control_group, default.control_max_clients) == (0o600, None, 256)
    grouped = parse(config(control={"socket": "/tmp/unused.sock", "group": "daemon", "max_clients": 8}))
    assert grouped.control_group == grp.getgrnam("daemon").gr_gid
    assert (grouped.control_mode, grouped.control_max_clients) == (0o660, 8)     # the group may connect
    assert parse(config(control={"socket": "/tmp/unused.sock", "group": "daemon", "mode": "0640"})).control_mode == 0o640


def test_missing_table():
    data = config()
    del data["wan"]
    with pytest.raises(ConfigError, match=r"^wan: missing"):
        parse(data)


def test_defaults():
    cfg = parse(config())
    assert cfg.timeouts.udp == 300 and cfg.timeouts.tcp_established == 7440 and cfg.timeouts.icmp == 60
    assert cfg.passthrough == {"pptp": "multi", "l2tp": "multi", "ipsec": "multi"}
    ipsec = cfg.helpers["ipsec"]
    assert ipsec.settings["ike_port"] == "preserve" and ipsec.timeouts["natt"] == 600 and ipsec.timeouts["esp"] == 600
    assert cfg.helpers["l2tp"].settings["port"] == "preserve" and cfg.helpers["pptp"].timeouts["gre"] == 600
    assert cfg.lan.mac == bytes([0x02, 0x76, 0x72, 0, 77, 1]) and cfg.wan.mac == bytes([0x02, 0x76, 0x72, 1, 100, 1])


def test_run_with_bad_config_exits_2_with_one_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[lan]\ntap = "lan0"\naddress = "192.168.77.1/24"\ncolour = "blue"\n[wan]\ntap="wan0"\naddress="198.51.100.1/24"\n')
    result = subprocess.run([sys.executable, "-m", "router", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["vpnrouter: lan.colour: unknown key (known: address, gateway, mac, mtu, tap)"]
    missing = subprocess.run([sys.executable, "-m", "router", "run", "--config", str(tmp_path / "none.toml")],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "cannot read config" in missing.stderr and "Traceback" not in missing.stderr


def test_the_default_state_file_is_the_configuration_files_own(tmp_path):
    """Two routers started from two configuration files (two labs) never share a state file; one file's router
    finds its own again after a restart; `[state] file` chooses another, and "" none."""
    from router.config import load
    toml = '[lan]\ntap = "lan0"\naddress = "192.168.77.1/24"\n[wan]\ntap = "wan0"\naddress = "198.51.100.1/24"\n'
    first, second = tmp_path / "a" / "router.toml", tmp_path / "b" / "router.toml"
    for path in (first, second):
        path.parent.mkdir()
        path.write_text(toml)
    a, b = load(first).state_file, load(second).state_file
    assert a.startswith("/var/lib/vpnrouter/router-") and a.endswith(".state") and a != b
    assert load(tmp_path / "a" / ".." / "a" / "router.toml").state_file == a
    first.write_text(toml + '[state]\nfile = "/tmp/mine.state"\n')
    assert load(first).state_file == "/tmp/mine.state"
    first.write_text(toml + '[state]\nfile = ""\n')
    assert load(first).state_file == ""
    assert parse(config()).state_file == ""            # no file read, none named: no state file
