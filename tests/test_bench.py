"""`make bench` measures what its labels say, whatever the shell exported."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _variables_config_reads() -> set[str]:
    tree = ast.parse((ROOT / "config.py").read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "env"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


def _variables_bench_strips() -> set[str]:
    tree = ast.parse((ROOT / "bench" / "__main__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "OUR_VARIABLES" for target in node.targets
        ):
            return set(ast.literal_eval(node.value))
    raise AssertionError("bench/__main__.py has no OUR_VARIABLES")


def test_bench_strips_every_variable_config_reads():
    read = _variables_config_reads()
    assert {"DATABASE_URL", "REDIS_URL", "RATELIMIT_KEY_PREFIX"} <= read  # the parse works
    assert read - _variables_bench_strips() == set()
