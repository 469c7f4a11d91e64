"""README.md and docs/*.md against the code: every `streetwatch ...` command line they show names a command that
exists and only options it takes, every route of the service they name exists with that method, and every YAML
block they show is read by the loader of the file it belongs to. A command
renamed or an option dropped in the code, or mistyped in a page, fails here instead of in a city's first run.
Each check is also run on a planted mistake, so it is shown to catch one."""

from __future__ import annotations

import functools
import re
import typing
from pathlib import Path

import click
import pytest
import typer
import yaml
from pydantic import BaseModel

from api.app import create_app
from api.config import service_config
from api.routers.pages import PAGES
from detect.config_io import ConfigError, load_model
from detect.scenes import load_scene
from detect.taxonomy import CityCodeFile, load_taxonomy
from pipelines.dispatch.adapters import case_marker
from pipelines.settings import Settings
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


def _split(text: str) -> tuple[list[tuple[str, list[str]]], str]:
    """The language and lines of each fenced block, and the prose outside every fenced block."""
    blocks, prose, lines, lang = [], [], None, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if lines is None:
                lines, lang = [], line.strip()[3:].strip()
            else:
                blocks.append((lang, lines))
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
    for block in (lines for lang, lines in blocks if lang in SHELL_BLOCKS):  # YAML, JSON and Python blocks hold none
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


def test_every_paragraph_of_a_commands_help_is_one_line_the_terminal_wraps():
    """Typer kept the line breaks of a help text's later paragraphs, so `verifier eval --help` broke mid-sentence in an
    80-column terminal ("with an INT8" / "export: compare its"). At 200 columns each paragraph is one line."""
    from typer.testing import CliRunner

    shown = CliRunner().invoke(cli, ["verifier", "eval", "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert shown.exit_code == 0, shown.output
    assert "with an INT8 export: compare its `--validation-csv` with the default run's (`verifier diff`) to see" in shown.output


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


#: A scene's zone in a page stands for any polygon with `polygon: [...]`; the loader reads this one in its place.
ANY_POLYGON = "polygon: [[0, 0], [1, 0], [1, 1]]"


def yaml_problems(block: str, folder: Path) -> list[str]:
    """What the product's own loader refuses in one YAML block of a page, read as the file it is a part of: sections
    of a settings file (`load_model(Settings)`: the files it names need not exist here), a city's code table
    (`load_taxonomy`: its types must exist), or the zones of a scene (`load_scene`: kinds, types, road grades).
    Kubernetes' manifest for KubeRay (docs/scale-out.md) is not ours to read."""
    data = yaml.safe_load(block)
    keys = set(data) if isinstance(data, dict) else set()
    path = folder / "block.yaml"
    path.write_text(block.replace("polygon: [...]", ANY_POLYGON), encoding="utf-8")
    try:
        if isinstance(data, dict) and data.get("kind") == "RayCluster":
            return []
        if keys and keys <= set(Settings.model_fields):
            load_model(Settings, path)
        elif keys and keys <= set(CityCodeFile.model_fields):
            load_taxonomy(city_files=[path])
        elif keys == {"zones"}:
            path.write_text("camera_id: docs\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
            load_scene(path)
        else:
            return [f"a YAML block that is no file the product reads (keys: {sorted(keys)})"]
    except ConfigError as exc:
        return [str(exc).replace(str(path), "block")]
    return []


def test_every_yaml_block_in_the_readme_and_docs_is_read_by_the_product(tmp_path):
    problems, checked = [], 0
    for page in PAGES_READ:
        blocks, _ = _split(page.read_text(encoding="utf-8"))
        for lang, lines in blocks:
            if lang in ("yaml", "yml"):
                checked += 1
                problems += [f"{page.relative_to(REPO)}: {p}" for p in yaml_problems("\n".join(lines), tmp_path)]
    assert checked >= 6 and problems == []


def test_the_yaml_check_catches_a_wrong_key_value_or_type(tmp_path):
    planted = ["analytics:\n  map_dayz: 30\n", "cityops:\n  warn:\n    resume_within_s: soon\n",
               "city: hangzhou\ncodes:\n  street_stal: {major_code: '13', minor_code: '1301'}\n",
               "zones:\n  - {id: kerb, kind: no_vending, grade: highway, polygon: [...]}\n", "tracker: {}\n"]
    found = [yaml_problems(block, tmp_path) for block in planted]
    assert all(len(p) == 1 for p in found), found
    assert "analytics.map_dayz" in found[0][0] and "cityops.warn.resume_within_s" in found[1][0]
    assert "codes.street_stal: unknown violation type" in found[2][0] and "highway" in found[3][0]
    assert found[4] == ["a YAML block that is no file the product reads (keys: ['tracker'])"]
    assert yaml_problems("zones:\n  - {id: kerb, kind: no_vending, grade: lane, polygon: [...]}\n", tmp_path) == []


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


def _settings_keys(model: type[BaseModel] = Settings, prefix: str = "") -> set[str]:
    """Every dotted key of the settings file (`cases.pool_size`, `service.triage.ocr`); a key under a mapping of
    named entries (`dispatch.targets`) takes any name, written `*`."""
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(prefix + name)
        args, inner = [field.annotation], []
        while args:  # Optional[X], list[X], dict[str, X], Annotated[...] down to the models they hold
            arg = args.pop()
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                inner.append((arg, prefix + name + (".*." if typing.get_origin(field.annotation) is dict else ".")))
            args += typing.get_args(arg)
        for sub, sub_prefix in inner:
            keys |= _settings_keys(sub, sub_prefix)
    return keys


#: Backticked words that begin like a settings key but name a file or a table's column (docs/cases-and-dispatch.md).
NOT_SETTINGS = re.compile(r"\.(csv|db|json|jsonl|yaml|html|xlsx|pdf)$|^cases\.(opened_at|created_at|state)$")


def settings_key_problems(text: str, keys: set[str]) -> list[str]:
    """Each `section.key` a page names (in backticks, the section one of the settings file's) that the settings do not have."""
    sections = set(Settings.model_fields)
    named = {m.group(1) for m in re.finditer(r"`([a-z_]+(?:\.[a-z_0-9*]+)+)`", text)}
    return sorted(f"no settings key `{key}`" for key in named if key.split(".")[0] in sections and not NOT_SETTINGS.search(key)
                  and not any(re.fullmatch(k.replace(".", r"\.").replace("*", r"[a-z_0-9-]+"), key) for k in keys))


def link_problems(page: Path) -> list[str]:
    """Each link of a page to a file of the checkout (`[x](rules.md)`, `[x](../README.md#weights)`) that is not there."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8"))
    return [f"broken link ({t})" for t in targets if not t.startswith(("http://", "https://")) and not (page.parent / t).exists()]


def test_every_settings_key_and_link_in_the_readme_and_docs_exists():
    keys = _settings_keys()
    problems = [f"{page.relative_to(REPO)}: {p}" for page in PAGES_READ
                for p in (*settings_key_problems(page.read_text(encoding="utf-8"), keys), *link_problems(page))]
    named = {m for page in PAGES_READ for m in re.findall(r"`((?:cases|service|cityops|analytics)\.[a-z_.]+)`", page.read_text(encoding="utf-8"))}
    assert len(named) > 40 and problems == []


def test_the_settings_key_and_link_checks_catch_a_wrong_one(tmp_path):
    keys = _settings_keys()
    assert {"cases.pool_size", "service.triage.ocr", "cityops.warn.images_keep_days", "dispatch.targets.*.token_env"} <= keys
    planted = ("`analytics.map_dayz`, `service.triage.ocr`, `dispatch.targets.demo-dcm.token_env`, `cases.csv`, "
               "`cityops.warn.resume_within`, `timezone`")
    assert settings_key_problems(planted, keys) == ["no settings key `analytics.map_dayz`",
                                                    "no settings key `cityops.warn.resume_within`"]
    page = tmp_path / "page.md"
    page.write_text("[rules](rules.md), [site](https://example.org/x.md), [self](page.md#top)", encoding="utf-8")
    assert link_problems(page) == ["broken link (rules.md)"]
