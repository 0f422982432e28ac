"""The package builds as a wheel and an sdist that declare what the project needs, and the installed
console command answers --help without torch (a fresh venv with no dependencies at all)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
pytestmark = pytest.mark.skipif(UV is None, reason="uv (installed by `make venv`) builds the wheel")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    source = tmp_path_factory.mktemp("src") / "llmshearing"
    # build from the tracked files only (a checkout may hold runs, corpora and a venv)
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([UV, "build", "--quiet", "--out-dir", str(out), str(source)], check=True, timeout=600)
    return out


def wheel_of(folder: Path) -> Path:
    (wheel,) = folder.glob("llmshearing-*.whl")
    return wheel


def test_the_wheel_declares_the_dependencies_the_command_and_the_data_files(built):
    with zipfile.ZipFile(wheel_of(built)) as wheel:
        names = wheel.namelist()
        dist_info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/METADATA"))
        metadata = wheel.read(f"{dist_info}/METADATA").decode()
        entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    for needed in ("mosaicml==0.32.1", "mosaicml-streaming==0.13.0", "omegaconf>=2.3"):
        assert needed in requires, requires
    assert any(r.startswith("transformers") for r in requires) and any(r.startswith("torch") for r in requires)
    assert any(r.replace("_", "-").startswith("lm-eval==0.4.13") and 'extra == "test"' in r for r in requires), requires
    assert "llmshearing = llmshearing.cli.main:main" in entry_points
    for data_file in ("llmshearing/convert/modeling_llmshearing_llama.py", "llmshearing/eval/lm_eval_tasks/",
                      "llmshearing/yamls/sheared.yaml",
                      "llmshearing/data/sample_corpus.py"):  # the demo's corpus, without a checkout
        assert any(name.startswith(data_file) for name in names), data_file
    assert any(name.startswith("llmshearing/eval/lm_eval_tasks/") and name.endswith(".yaml") for name in names)
    assert not any(name.startswith("tests/") for name in names)


def test_the_sdist_carries_the_one_place_that_overrides_composers_torch_pin(built):
    (sdist,) = built.glob("llmshearing-*.tar.gz")
    with tarfile.open(sdist) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("/pyproject.toml"))
        pyproject = tomllib.loads(archive.extractfile(member).read().decode())
    overrides = pyproject["tool"]["uv"]["override-dependencies"]
    assert {o.split("==")[0].split(">=")[0] for o in overrides} >= {"torch", "transformers", "huggingface-hub"}
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["dependencies"] == ours["project"]["dependencies"]


def test_the_installed_command_answers_help_without_torch(built, tmp_path):
    """Only the wheel, no dependency installed: --help must not need torch, Composer or transformers."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([UV, "pip", "install", "--quiet", "--no-deps", "--python", str(python), str(wheel_of(built))],
                   check=True, timeout=300)
    result = subprocess.run([str(env_dir / "bin" / "llmshearing"), "--help"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for subcommand in ("prepare", "train", "prune", "export", "import", "eval", "demo"):
        assert subcommand in result.stdout


def test_another_project_installs_the_wheel_with_the_readme_pins(built, tmp_path):
    """README: uv reads [tool.uv] only in its own project; the pin files its commands write make uv resolve the
    wheel into another environment with our torch / transformers, not Composer's metadata's."""
    readme = (ROOT / "README.md").read_text()
    lines = [line for line in readme.splitlines() if line.startswith('python -c "import tomllib')]
    assert len(lines) == 2, lines
    for line in lines:
        subprocess.run(line, shell=True, cwd=ROOT, check=True, timeout=60,
                       env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    try:
        pins = {name: (ROOT / name).read_text().split() for name in ("overrides.txt", "constraints.txt")}
    finally:
        for name in ("overrides.txt", "constraints.txt"):
            (ROOT / name).unlink(missing_ok=True)
    uv_table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]
    assert pins == {"overrides.txt": uv_table["override-dependencies"],
                    "constraints.txt": uv_table["constraint-dependencies"]}
    for name, lines in pins.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    result = subprocess.run([UV, "pip", "install", "--dry-run", "--python", str(env_dir / "bin" / "python"),
                             "--override", str(tmp_path / "overrides.txt"), "--constraint",
                             str(tmp_path / "constraints.txt"), str(wheel_of(built))],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    wanted = {pin for pin in uv_table["override-dependencies"] if "==" in pin}
    assert wanted <= {line.strip(" +") for line in (result.stdout + result.stderr).splitlines()}, result.stderr[-2000:]
