"""Options, the config file and the service tree, without sockets."""

from dataclasses import replace

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.testing import MemoryReactorClock as MemoryReactor

from chatserv.config import ConfigError, Settings, loadConfig, normaliseEndpoint
from chatserv.filelimit import FileLimitService
from chatserv.service import ChatService
from chatserv.tap import Options
from chatserv.tap import makeService as _makeService


def makeService(options: Options, reactor):
    """The service tree, keeping nothing on disk (the store has tests of its own)."""
    options["settings"] = replace(options["settings"], db="memory")
    return _makeService(options, reactor=reactor)


def parse(*args) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def refused(*args) -> str:
    with pytest.raises(SystemExit) as info:
        parse(*args)
    return str(info.value)


def test_defaults_when_no_listener_is_given():
    options = parse()
    assert options["tcp"] == ["tcp:10001:backlog=1024"]
    assert options["ws"] == ["tcp:8765:backlog=1024"]
    assert options["settings"] == Settings()


def test_repeatable_listeners_and_descriptions():
    options = parse("--tcp", "10001", "--tcp", "tcp:10002:interface=127.0.0.1", "--ws", "0")
    assert options["tcp"] == ["tcp:10001:backlog=1024", "tcp:10002:interface=127.0.0.1"]
    assert options["ws"] == ["tcp:0:backlog=1024"]


def test_only_tcp_means_no_websocket():
    assert parse("--tcp", "10001")["ws"] == []


def test_bad_values_give_one_line():
    assert refused("--tcp", "bogus") == (
        "chatserv: error: bad endpoint 'bogus': Unknown endpoint type: 'bogus'"
    )
    assert "port 70000 is out of range" in refused("--ws", "70000")
    assert "bad endpoint '²'" in refused("--tcp", "²")  # a digit to isdigit(), not to int()
    assert "invalid room name" in refused("--default-room", "no spaces")
    assert "max_line_length must be at least 64" in refused("--max-line-length", "3")
    assert "cannot read config file /nonexistent.toml" in refused("-c", "/nonexistent.toml")
    assert refused("--bogus") == (
        "chatserv: error: option --bogus not recognized (see: twistd chatserv --help)"
    )
    assert "expected a whole number, got 'abc'" in refused("--max-line-length", "abc")


def test_config_file_and_command_line_override(tmp_path):
    path = tmp_path / "chat.toml"
    path.write_text(
        '[listen]\ntcp = [7000, "tcp:7001"]\nws = 7002\n'
        '[chat]\ndefault_room = "#main"\nmotd = "hi"\n'
        "[limits]\nmax_line_length = 512\n"
        '[websocket]\nallowed_origins = ["https://chat.example"]\n'
    )
    options = parse("--config", str(path))
    assert options["tcp"] == ["tcp:7000:backlog=1024", "tcp:7001"]
    assert options["ws"] == ["tcp:7002:backlog=1024"]
    settings = options["settings"]
    assert (settings.default_room, settings.motd, settings.max_line_length) == ("#main", "hi", 512)
    assert settings.ws_allowed_origins == ("https://chat.example",)
    options = parse("--config", str(path), "--tcp", "9000", "--max-line-length", "100")
    assert options["tcp"] == ["tcp:9000:backlog=1024"] and options["ws"] == [
        "tcp:7002:backlog=1024"
    ]
    assert options["settings"].max_line_length == 100


def test_config_problems_are_reported_together(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        '[chat]\nmax_line_length = 5\ncolour = "red"\n[limits]\nmax_line_length = "big"\n'
        "[listen]\ntcp = [true]\n[nonsense]\nx = 1\n[websocket]\nweb_client = 1\n"
    )
    with pytest.raises(ConfigError) as info:
        loadConfig(path)
    message = str(info.value)
    for problem in (
        "unknown setting chat.max_line_length",
        "unknown setting chat.colour",
        "limits.max_line_length must be a whole number",
        "listen.tcp takes port numbers or endpoint strings",
        "unknown section [nonsense]",
        "websocket.web_client must be true or false",
    ):
        assert problem in message


def test_account_limits_in_the_config_file(tmp_path):
    path = tmp_path / "chat.toml"
    path.write_text(
        "[accounts]\nmax_login_failures_per_ip = 50\nmax_registrations_per_ip = 1\n"
        "registration_decay = 3600\nmax_password_queue = 8\n"
    )
    settings = parse("--config", str(path))["settings"]
    assert (
        settings.max_login_failures_per_ip,
        settings.max_registrations_per_ip,
        settings.registration_decay,
        settings.max_password_queue,
    ) == (50, 1, 3600, 8)
    path.write_text(
        "[accounts]\nmax_login_failures = 10\nmax_login_failures_per_ip = 5\n"
        'max_password_queue = 0\nmax_registrations_per_ip = 0\nregistration_decay = "long"\n'
    )
    with pytest.raises(ConfigError) as info:
        loadConfig(path)
    for problem in (
        "accounts.registration_decay must be a number",
        "max_registrations_per_ip must be at least 1",
        "max_password_queue must be at least 1",
        "max_login_failures_per_ip must be at least max_login_failures",
    ):
        assert problem in str(info.value)


def test_invalid_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[chat\n")
    assert "is not valid TOML" in refused("--config", str(path))


def test_sample_config_loads_and_matches_defaults():
    from pathlib import Path

    sample = Path(__file__).parent.parent / "etc" / "chatserv.toml"
    options = parse("--config", str(sample))
    assert options["settings"] == Settings()
    assert options["tcp"] == [normaliseEndpoint(10001)]
    assert options["ws"] == [normaliseEndpoint(8765)]


def test_make_service_listens_where_asked():
    reactor = MemoryReactor()
    top = makeService(parse("--tcp", "10001", "--ws", "8765", "--ws", "8766"), reactor=reactor)
    children = list(top)
    assert isinstance(children[0], FileLimitService)  # before any listener starts
    assert isinstance(children[1], ChatService)  # before the listeners, so it stops after
    assert all(isinstance(c, StreamServerEndpointService) for c in children[2:])
    top.privilegedStartService()
    top.startService()
    assert sorted(port for port, *_ in reactor.tcpServers) == [8765, 8766, 10001]
    assert all(backlog == 1024 for _, _, backlog, _ in reactor.tcpServers)
    from chatserv.protocols.line import LineChatFactory
    from chatserv.protocols.web import ChatSite

    factories = {port: factory for port, factory, *_ in reactor.tcpServers}
    assert isinstance(factories[10001], LineChatFactory)
    # Websocket ports are web sites: the browser client, and the websocket on any path.
    assert isinstance(factories[8765], ChatSite) and factories[8765] is factories[8766]
    top.stopService()


def test_irc_listeners_from_the_command_line_and_the_config_file(tmp_path):
    from chatserv.protocols.irc import IrcFactory

    path = tmp_path / "chat.toml"
    path.write_text('[listen]\nirc = [6667, 6668]\n[irc]\nnetwork = "example"\n')
    for options in (parse("--irc", "6667", "--irc", "6668"), parse("--config", str(path))):
        reactor = MemoryReactor()
        top = makeService(options, reactor=reactor)
        top.privilegedStartService()
        top.startService()
        factories = {port: factory for port, factory, *_ in reactor.tcpServers}
        assert sorted(factories) == [6667, 6668]
        assert isinstance(factories[6667], IrcFactory) and factories[6667] is factories[6668]
        top.stopService()
    assert top.getServiceNamed("chat").settings.irc_network == "example"


def test_version_option(capsys):
    with pytest.raises(SystemExit) as info:
        parse("--version")
    assert info.value.code == 0 and capsys.readouterr().out.startswith("chatserv 0.")


def test_port_in_use_stops_start_up_with_one_line():
    import errno

    from twisted.internet.error import CannotListenError
    from twisted.internet.testing import RaisingMemoryReactor

    inUse = OSError(errno.EADDRINUSE, "Address already in use")
    reactor = RaisingMemoryReactor(listenException=CannotListenError("", 10001, inUse))
    top = makeService(parse("--tcp", "10001"), reactor=reactor)
    with pytest.raises(SystemExit) as info:
        top.privilegedStartService()
    assert str(info.value) == (
        "chatserv: error: cannot listen for line clients on tcp:10001:backlog=1024: "
        "Address already in use"
    )


def test_tls_listeners_from_the_config_file(tmp_path):
    from twisted.protocols.tls import TLSMemoryBIOFactory

    from chatserv.makecert import main as makecert

    makecert(["--host", "localhost", "--out", str(tmp_path)])
    path = tmp_path / "chat.toml"
    path.write_text(
        '[listen]\ntls = [10443]\nwss = ["tcp:8766:interface=127.0.0.1"]\n'
        '[tls]\ncert = "chatserv.crt"\nkey = "chatserv.key"\n'  # relative to the file
    )
    options = parse("--config", str(path))
    assert options["tcp"] == options["ws"] == []  # TLS only: no plain default listeners
    assert options["credentials"].certificate is not None
    reactor = MemoryReactor()
    top = makeService(options, reactor=reactor)
    top.privilegedStartService()
    top.startService()
    listening = {port: factory for port, factory, *_ in reactor.tcpServers}
    assert sorted(listening) == [8766, 10443]
    assert all(isinstance(f, TLSMemoryBIOFactory) for f in listening.values())
    assert top.getServiceNamed("tls-reload").running
    top.stopService()


def test_tls_certificate_problems_are_one_line(tmp_path):
    (tmp_path / "bad.crt").write_text("not a certificate")
    message = refused("--tls", "10443", "--tls-cert", str(tmp_path / "bad.crt"))
    assert message.startswith("chatserv: error: TLS certificate file")
    assert "\n" not in message
    assert "TLS certificate file" in refused("--wss", "1", "--tls-cert", "/nonexistent.crt")


def test_full_ssl_descriptions_need_no_tls_cert_option(tmp_path):
    from chatserv.makecert import main as makecert

    makecert(["--out", str(tmp_path)])
    description = f"ssl:10443:privateKey={tmp_path}/chatserv.key:certKey={tmp_path}/chatserv.crt"
    options = parse("--tls", description)
    assert options["tls"] == [description] and options["credentials"] is None


def test_no_manhole_unless_asked():
    assert parse()["manhole"] is None


def test_manhole_from_the_config_file_listens_on_localhost(tmp_path):
    from test_manhole import makeKey

    _, public = makeKey(tmp_path, "admin")
    (tmp_path / "keys").write_bytes(public + b"\n")
    path = tmp_path / "chat.toml"
    path.write_text('[manhole]\nport = 2222\nauthorized_keys = "keys"\nhost_key = "hostkey"\n')
    options = parse("--config", str(path))
    assert options["manhole"] == {
        "port": "tcp:2222:interface=127.0.0.1:backlog=1024",
        "authorized_keys": str(tmp_path / "keys"),
        "host_key": str(tmp_path / "hostkey"),
    }
    reactor = MemoryReactor()
    top = makeService(options, reactor=reactor)
    top.privilegedStartService()
    top.startService()
    assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == [
        (10001, ""),
        (8765, ""),
        (2222, "127.0.0.1"),
    ]
    assert (tmp_path / "hostkey").exists()  # made on first start
    top.stopService()


def test_manhole_problems_are_one_line(tmp_path):
    assert refused("--manhole-keys", "keys") == (
        "chatserv: error: manhole settings given but no --manhole port"
    )
    options = parse("--manhole", "2222", "--manhole-host-key", str(tmp_path / "hk"))
    with pytest.raises(SystemExit) as info:
        makeService(options, reactor=MemoryReactor())
    assert str(info.value) == (
        "chatserv: error: the manhole needs --manhole-keys FILE or --manhole-passwords FILE"
    )
