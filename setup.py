from setuptools import find_packages, setup

# Dependencies are installed by `make venv` (see requirements/); they are not declared here
# because Composer's metadata pins an old torch that pip would otherwise try to honour.
setup(
    name="llmshearing",
    version="0.1.0",
    description="Shrink pretrained LLaMA-family models: Sheared-LLaMA L0 pruning, Minitron, LLM Surgeon",
    packages=find_packages(include=["llmshearing", "llmshearing.*"]),
    package_data={"llmshearing.eval": ["lm_eval_tasks/*.yaml", "lm_eval_tasks/*.jsonl", "lm_eval_tasks/*.py"]},
    python_requires=">=3.10",
)
