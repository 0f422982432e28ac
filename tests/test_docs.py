"""The docs cannot drift from the CLI (`make docs-check`; fast, no torch).

Every command line in a code block of README.md or docs/*.md that runs this project (``llmshearing
...``, ``python -m llmshearing...``, ``python train.py ...``, ``composer ... train.py ...``,
``composer ... -m llmshearing ...``) must parse with the command's own parser (parse only: nothing
runs), name yamls that exist, and give a run config (yaml + ``key=value`` overrides) that loads
through the schema. Scripts the docs run must exist, and every relative link must resolve.
"""
from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional, Sequence

import pytest

from llmshearing.cli.command import parsing_only
from llmshearing.cli.main import COMMANDS, main as llmshearing_main
from llmshearing.config import load_config
from llmshearing.errors import LLMShearingError

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")  # VAR=value before a command
# a line that starts (after VAR=value prefixes) with a command this test knows
COMMAND_START = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*"
                           r"(?:\S*/)?(?:llmshearing|python3?|composer|bash)(?:\s|$)|^\S+/\S+\.sh(?:\s|$)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


class DocCommand(NamedTuple):
    where: str  # file:line
    text: str  # the logical line, continuations joined


def code_lines(text: str) -> List[tuple]:
    """(line number, line) of every line in a fenced block, or indented by 4+ spaces outside one."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            lines.append((number, line))
    return lines


def doc_commands(page: Path) -> List[DocCommand]:
    commands, pending, start, previous = [], "", 0, None
    for number, line in code_lines(page.read_text(encoding="utf-8")):
        if pending and number != previous + 1:  # a continuation must be the next line
            pending = ""
        previous = number
        if not pending:
            start = number
        stripped = line.strip()
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        logical, pending = pending + stripped, ""
        if COMMAND_START.match(logical):
            name = page.relative_to(REPO) if page.is_relative_to(REPO) else page.name
            commands.append(DocCommand(f"{name}:{start}", logical))
    return commands


ALL_COMMANDS = [command for page in PAGES for command in doc_commands(page)]


class Invocation(NamedTuple):
    entry: Optional[Callable]  # main(argv) of the command; None: only the files it names are checked
    argv: List[str]  # as `llmshearing ARGV` when entry is llmshearing's main
    scripts: List[str]  # scripts it runs, which must exist


def old_module_main(name: str) -> Callable:
    """main of `python -m NAME` (a package's __main__ runs its cli module's main)."""
    module = importlib.import_module(name)
    if hasattr(module, "__path__"):
        module = importlib.import_module(f"{name}.cli")
    return module.main


def invocation(tokens: List[str]) -> Invocation:
    while tokens and ENV.match(tokens[0]):
        tokens = tokens[1:]
    program, rest = Path(tokens[0]).name, tokens[1:]
    if program == "llmshearing":
        return Invocation(llmshearing_main, rest, [])
    if program in ("python", "python3", "composer"):
        for index, token in enumerate(rest):
            if token == "-m" and index + 1 < len(rest):
                module, argv = rest[index + 1], rest[index + 2:]
                if module == "llmshearing":
                    return Invocation(llmshearing_main, argv, [])
                if module.startswith("llmshearing."):
                    return Invocation(old_module_main(module), argv, [])
                return Invocation(None, [], [])  # another tool (pytest ...)
            if token.endswith(".py"):
                if token == "train.py":  # train.py is `llmshearing train`
                    return Invocation(llmshearing_main, ["train", *rest[index + 1:]], [token])
                return Invocation(None, [], [token])
            if program != "composer" and not token.startswith("-"):
                break  # python's own script or code argument
        assert program != "composer", "composer line without train.py or -m llmshearing"
        return Invocation(None, [], [])
    if program == "bash":
        return Invocation(None, [], [rest[0]])
    return Invocation(None, [], [tokens[0]])  # path/to/script.sh


def variants(tokens: List[str]) -> List[List[str]]:
    """A `[...]` group (optional arguments) is checked with and without its contents."""
    assert "|" not in tokens, "write alternatives ('a | b') as separate command lines"
    if not any(token.startswith("[") for token in tokens):
        return [tokens]
    with_group, without, inside = [], [], False
    for token in tokens:
        opens = not inside and token.startswith("[")
        inside = inside or opens
        closes = inside and token.endswith("]")
        bare = token[1 if opens else 0:len(token) - 1 if closes else len(token)]
        if bare:
            with_group.append(bare)
        if not inside:
            without.append(token)
        if closes:
            inside = False
    return [with_group, without]


def parse(entry: Callable, argv: Sequence[str], capsys):
    """The command's parsed arguments (None for --help), or the test fails with its error line."""
    with parsing_only() as parsed:
        try:
            entry(list(argv))
        except SystemExit as exit:
            if exit.code == 0:  # --help
                return None
            pytest.fail(f"does not parse: {capsys.readouterr().err.strip()}")
    assert parsed, "the command did not reach its parser"
    return parsed[-1]


def repo_path(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else REPO / path


def check_run_config(argv: Sequence[str], args) -> None:
    """The yaml and key=value overrides of a training run load through the schema."""
    if argv[:1] == ["train"]:
        config, overrides = args.config, list(args.overrides)
    elif list(argv[:2]) == ["prune", "sheared"]:
        from llmshearing.sheared.cli import run_overrides

        config, overrides = args.config, run_overrides(args)
    else:
        return
    load_config(repo_path(config), overrides)


def check_numbers(args) -> None:
    """Values the parser keeps as text but the command reads as numbers."""
    from llmshearing.prune.cli import parse_target

    if getattr(args, "target", None):
        parse_target(args.target)
    if hasattr(args, "eval_tokens"):
        from llmshearing.data.prepare.amounts import parse_token_amount

        for option in ("eval_tokens", "train_tokens", "train_tokens_per_domain", "cpt_tokens"):
            if getattr(args, option, None):
                parse_token_amount(getattr(args, option), f"--{option.replace('_', '-')}", allow_all=True)


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda command: command.where)
def test_doc_command_parses_and_names_what_exists(command: DocCommand, capsys):
    tokens = shlex.split(command.text, comments=True)
    for argv_tokens in variants(tokens):
        call = invocation(argv_tokens)
        for script in call.scripts:
            assert repo_path(script).is_file(), f"{script} does not exist"
        for token in argv_tokens:
            value = token.split("=", 1)[-1]
            if value.endswith((".yaml", ".yml")) and not value.startswith(("/", "s3:")):
                assert list(REPO.glob(value)), f"no yaml {value} in the repo"
        if call.entry is None:
            continue
        args = parse(call.entry, call.argv, capsys)
        if args is None:
            continue
        try:
            check_run_config(call.argv, args)
            check_numbers(args)
        except LLMShearingError as exc:
            pytest.fail(f"{command.text}\n  {exc}")


def test_commands_are_read_from_code_blocks_with_continuations_and_comments(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("llmshearing eval prose --not-code\n\n"
                    "```bash\n"
                    "# a comment line\n"
                    "OMP_NUM_THREADS=1 llmshearing eval M \\\n"
                    "    --data D --out o.json   # a comment\n"
                    "make demo\n"
                    "```\n\n"
                    "    composer -n 2 train.py yamls/tiny_prune.yaml\n", encoding="utf-8")
    assert doc_commands(page) == [
        DocCommand("page.md:5", "OMP_NUM_THREADS=1 llmshearing eval M --data D --out o.json   # a comment"),
        DocCommand("page.md:10", "composer -n 2 train.py yamls/tiny_prune.yaml")]


@pytest.mark.parametrize("line", [
    "llmshearing exprot a.pt out",  # unknown command
    "llmshearing eval M --data D",  # a required option missing
    "llmshearing eval M --data D --out o.json --max-tokens N",  # not an int
    "python -m llmshearing.convert composer-to-hf a.pt",  # an old path, checked with its own parser
    "llmshearing train yamls/missing.yaml",
    "composer -n 8 train.py yamls/tiny_prune.yaml pruning.mask_lrr=1.0",  # a key the schema does not know
    "llmshearing prune sheared --model M --data D --out O --target hidden_size=384 data.seqlen=128",
    "llmshearing prune minitron --model M --data D --out O --target hidden_size=H",
    "llmshearing prepare --tokenizer T --out O --seq-len 128 --root R --eval-tokens lots",
    "python benchmarks/missing.py",
    "llmshearing eval M --data D --out o.json [--split eval | --split train]",
], ids=str)
def test_the_check_refuses_a_wrong_command(line, capsys):
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        test_doc_command_parses_and_names_what_exists(DocCommand("example", line), capsys)


def test_the_docs_show_every_command():
    """Each command and pruning method appears in at least one doc command line."""
    from llmshearing.prune.cli import METHODS

    shown = set()
    for command in ALL_COMMANDS:
        tokens = shlex.split(command.text, comments=True)
        call = invocation(tokens)
        if call.entry is llmshearing_main and call.argv:
            shown.add(" ".join(call.argv[:2]) if call.argv[0] == "prune" else call.argv[0])
    expected = {name for name in COMMANDS if name != "prune"} | {f"prune {method}" for method in METHODS}
    assert expected <= shown, f"no doc command for: {sorted(expected - shown)}"


def links(page: Path) -> List[str]:
    return [target for target in LINK.findall(page.read_text(encoding="utf-8"))
            if not re.match(r"^[a-z]+:", target) and not target.startswith("#")]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_relative_links_resolve(page: Path):
    missing = [target for target in links(page) if not (page.parent / target.split("#")[0]).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"


def test_readme_links_every_docs_page_and_each_exists():
    linked = {(REPO / target.split("#")[0]).resolve() for target in links(README) if target.startswith("docs/")}
    assert linked, "README links no docs/ page"
    assert all(path.is_file() for path in linked), sorted(str(p) for p in linked if not p.is_file())
    unlinked = [page.name for page in PAGES[1:] if page.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"
