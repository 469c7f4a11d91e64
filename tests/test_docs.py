"""README.md and docs/*.md against the code: every `streetwatch ...` command line they show names a command that
exists and only options it takes, and every route of the service they name exists with that method. A command
renamed or an option dropped in the code, or mistyped in a page, fails here instead of in a city's first run.
Each check is also run on a planted mistake, so it is shown to catch one."""

from __future__ import annotations

import functools
import re

import click
import pytest
import typer

from api.app import create_app
from api.config import service_config
from api.routers.pages import PAGES
from pipelines.dispatch.adapters import case_marker
from streetwatch.cli import app as cli
from tests.api_helpers import settings_for
from tests.conftest import REPO

PAGES_READ = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
#: Text that reads like a command but is not one: the marker an Open311 description carries (docs/cases-and-dispatch.md).
NOT_COMMANDS = {case_marker("<case id>")}
#: Routes of the dispatch simulator and of the platforms it plays (docs/cases-and-dispatch.md), not the service's.
OTHER_SERVERS = ("/sim/", "/cn-dcm/", "/open311/", "/tokens/", "/requests/")
PLACEHOLDERS = {"...", "…"}


def _split(text: str) -> tuple[list[list[str]], str]:
    """The lines of each fenced block that holds shell commands (YAML, JSON and Python blocks are left out), and the
    prose outside every fenced block."""
    blocks, prose, lines, lang = [], [], None, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if lines is None:
                lines, lang = [], line.strip()[3:].strip()
            else:
                if lang in SHELL_BLOCKS:
                    blocks.append(lines)
                lines = None
        elif lines is not None:
            lines.append(line)
        else:
            prose.append(line)
    return blocks, "\n".join(prose)


def command_lines(text: str) -> list[str]:
    """Every `streetwatch ...` command a page shows, without the `streetwatch`: in shell blocks (a line ending in `\\`,
    or an indented line of `[--options]` under a usage line, continues it) and inline in backticks in the prose."""
    found = []
    start = re.compile(r"(?:(?<![\w/.$-])streetwatch|python -m streetwatch\.cli)\s+([a-z].*)")
    blocks, prose = _split(text)
    for block in blocks:
        current: str | None = None
        for line in block:
            stripped = line.strip()
            if current is not None and (current.endswith("\\") or (line[:1].isspace() and stripped[:1] in "[-")):
                current = current.removesuffix("\\") + " " + stripped
                continue
            if current is not None:
                found.append(current)
            match = start.search(stripped)
            current = match.group(1) if match else None
        if current is not None:
            found.append(current)
    found += [m.group(1) for m in re.finditer(r"`(?:streetwatch|python -m streetwatch\.cli) ([^`]+)`", prose)
              if m.group(0).strip("`") not in NOT_COMMANDS]
    return found


@functools.cache
def _cli_command() -> click.Command:
    """The CLI's click tree, built once: Typer builds it afresh on each call (0.4 s), and the docs name hundreds of lines."""
    return typer.main.get_command(cli)


def command_problems(line: str) -> list[str]:
    """What is wrong with one command line: an unknown command, or options the command does not take."""
    words = re.sub(r"\s#\s.*", "", line).split()  # a shell comment after the command
    command, path = _cli_command(), []
    context = typer.Context(command)
    while hasattr(command, "list_commands") and words and not words[0].startswith("-"):
        word = words.pop(0)
        if word in PLACEHOLDERS:
            return []
        found = command.get_command(context, word)
        if found is None:
            alternatives = word.split("/")  # `users add/list/revoke`
            if len(alternatives) > 1 and all(command.get_command(context, w) for w in alternatives):
                return []
            return [f"no command `streetwatch {' '.join([*path, word])}`"]
        command, path = found, [*path, word]
    if hasattr(command, "list_commands"):
        return []  # a group named on its own (`streetwatch data ...`)
    known = {"--help", *(o for p in command.params for o in (*p.opts, *p.secondary_opts))}
    named = re.findall(r"(?<![\w-])(--[a-z][\w-]*|-[a-zA-Z])\b", " ".join(words))
    return [f"`streetwatch {' '.join(path)}` has no option {o}" for o in named if o not in known]


def test_every_command_line_in_the_readme_and_docs_runs_an_existing_command_with_its_options():
    problems, checked = [], 0
    for page in PAGES_READ:
        for line in command_lines(page.read_text(encoding="utf-8")):
            checked += 1
            problems += [f"{page.relative_to(REPO)}: {p}: streetwatch {line}" for p in command_problems(line)]
    assert checked > 100 and problems == []


def test_the_command_check_catches_a_wrong_command_or_option():
    planted = ("```bash\nstreetwatch triage photos/ --out run \\\n    --ocr-mode all   # a renamed option\n"
               "streetwatch watch --cameras c.yaml [--config FILE]\n    [--snapshot-evry 10]\n```\n"
               "Run `streetwatch case list` or `streetwatch users add/list/revoke`; "
               f"Open311 descriptions carry `{case_marker('<case id>')}`.\n"
               "```yaml\nreports_dir: x   # `streetwatch report --no-such` writes here\n```\n")
    lines = command_lines(planted)
    assert lines == ["triage photos/ --out run  --ocr-mode all   # a renamed option",
                     "watch --cameras c.yaml [--config FILE] [--snapshot-evry 10]",
                     "case list", "users add/list/revoke"]
    assert [p for line in lines for p in command_problems(line)] == [
        "`streetwatch triage` has no option --ocr-mode", "`streetwatch watch` has no option --snapshot-evry",
        "no command `streetwatch case`"]


@pytest.fixture(scope="module")
def routes(tmp_path_factory) -> set[tuple[str, str]]:
    """(method, path) of every route of the service, path parameters written `{}`."""
    settings = settings_for(tmp_path_factory.mktemp("service"))
    spec = create_app(settings, service_config(settings, "test")).openapi()
    return {(method.upper(), re.sub(r"\{[^}]*\}", "{}", path)) for path, ops in spec["paths"].items() for method in ops}


def route_problems(text: str, routes: set[tuple[str, str]]) -> list[str]:
    """Each `METHOD /path` a page names that the service does not answer; a path may be written relative to /api/v1
    (docs/service.md's table), with `{id}` or `<id>` for a parameter and with a query. Pages under /ui/ must exist."""
    text = re.sub(r"<[^>]*>", "{}", text)
    problems = []
    for match in re.finditer(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s?]*)", text):
        method, path = match.group(1), re.sub(r"\{[^}]*\}", "{}", match.group(2))
        if path.startswith(OTHER_SERVERS):
            continue
        if not {(method, path), (method, "/api/v1" + path)} & routes:
            problems.append(f"{method} {match.group(2)}")
    problems += [f"page /ui/{page}" for page in re.findall(r"/ui/([a-z]+)\b", text) if page not in PAGES]
    return problems


def test_every_route_the_readme_and_docs_name_is_one_the_service_answers(routes):
    problems = {f"{page.relative_to(REPO)}: {p}" for page in PAGES_READ for p in route_problems(page.read_text(encoding="utf-8"), routes)}
    assert sorted(problems) == []


def test_the_route_check_catches_a_wrong_method_path_or_page(routes):
    planted = ("`GET /api/v1/cases/{id}` and `POST /cases/{id}/confirm`, `PUT /cases/{id}/confirm`, "
               "`GET /api/v1/evidence/keys/<key id>.pem`, `GET /patrol/job/{id}`, `GET /sim/received`; "
               "open /ui/queue or /ui/review")
    assert route_problems(planted, routes) == ["PUT /cases/{id}/confirm", "GET /patrol/job/{id}", "page /ui/review"]


def test_the_camera_status_metric_lists_the_states_a_scrape_can_read_as_the_docs_do():
    """`streetwatch_cctv_camera_status` listed `left_behind` (docs/cctv.md, and a 0 sample of it in every scrape),
    which no scrape could ever read as 1: `watch --ray`'s driver decides it only once `cluster.stop_wait_s` has run out
    at the stop, then exits with its /metrics. The metric's states are those a watcher sets, as the docs list them."""
    from prometheus_client import generate_latest

    from pipelines.cctv.metrics import Metrics
    from pipelines.cctv.reader import Status

    metrics = Metrics()
    metrics.status.labels("cam-01").state(Status.ONLINE.value)
    scraped = re.findall(r'streetwatch_cctv_camera_status\{camera="cam-01",streetwatch_cctv_camera_status="(\w+)"\}',
                         generate_latest(metrics.registry).decode())
    listed = re.search(r"`streetwatch_cctv_camera_status` \(enum: ([a-z_, ]+)[;)]", (REPO / "docs" / "cctv.md").read_text(encoding="utf-8"))
    assert listed is not None and scraped == listed.group(1).split(", ")
    assert "left_behind" not in scraped and set(scraped) == {s.value for s in Status} - {"left_behind"}
    with pytest.raises(ValueError):  # nothing can set what no scrape would see
        metrics.status.labels("cam-01").state(Status.LEFT_BEHIND.value)
