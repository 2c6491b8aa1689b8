"""The files in etc/ agree with the code: the sample config and the systemd unit."""

import configparser
import shlex
from pathlib import Path

from chatserv.config import _SECTIONS, Settings, loadConfig
from chatserv.tap import Options

ETC = Path(__file__).resolve().parent.parent / "etc"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read(ETC / "chatserv.service")
    return parser


def test_systemd_unit_runs_twistd_unprivileged_in_the_foreground():
    service = unit()["Service"]
    assert service["User"] == service["Group"] == "chatserv"
    assert service["NoNewPrivileges"] == "yes"
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "twistd"
    assert "-n" in argv and "--pidfile=" in argv
    assert argv[argv.index("--logger") + 1] == "chatserv.logs.json"
    assert service["ExecReload"].endswith("kill -HUP $MAINPID")  # TLS reload
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["LimitNOFILE"]) > Settings().max_connections


def test_systemd_unit_chatserv_options_parse():
    argv = shlex.split(unit()["Service"]["ExecStart"])
    ours = argv[argv.index("chatserv") + 1 :]
    assert ours[ours.index("--config") + 1] == "/etc/chatserv/chatserv.toml"
    ours[ours.index("--config") + 1] = str(ETC / "chatserv.toml")  # the installed copy
    options = Options()
    options.parseOptions(ours)
    assert options["tcp"] and options["ws"]


def test_json_logger_named_in_the_unit_exists():
    from twisted.python.reflect import namedAny

    observer = namedAny("chatserv.logs.json")()
    assert callable(observer)


def test_sample_config_sets_every_setting():
    text = (ETC / "chatserv.toml").read_text()
    config = loadConfig(ETC / "chatserv.toml")
    where = {
        name: (section, key) for section, table in _SECTIONS.items() for key, name in table.items()
    }
    for name in Settings.__dataclass_fields__:
        section, key = where[name]  # every setting has a place in the file
        table = text.split(f"\n[{section}]\n", 1)[1].split("\n[", 1)[0]
        assert f"\n{key} = " in table, f"{section}.{key} is not in etc/chatserv.toml"
    assert config.settings  # and they load


def test_every_wire_is_an_option_a_config_key_and_documented(tmp_path):
    from chatserv.wires import WIRES

    readme = (ETC.parent / "README.md").read_text()
    sample = (ETC / "chatserv.toml").read_text()
    help = Options().__str__()
    for wire in WIRES:
        assert f"--{wire.kind}=" in help, wire.kind
        assert f"| `--{wire.kind} ENDPOINT` |" in readme, wire.kind
        assert f"\n{wire.kind} = [" in sample or f"\n# {wire.kind} = [" in sample, wire.kind
        config = tmp_path / f"{wire.kind}.toml"
        config.write_text(f"[listen]\n{wire.kind} = [0]\n")
        assert loadConfig(config).listeners[wire.kind] == ["tcp:0:backlog=1024"]
