"""The longest functions of each golden train.py, and the parameters of train_one_epoch: what issue 25's run object
is to shrink (a trick adds a field, not a parameter to three signatures).

    python benchmarks/function_lengths.py           # every golden: its longest function, train()'s and
                                                    # train_one_epoch's lines, train_one_epoch's parameters
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def functions(path: Path) -> dict[str, tuple[int, int]]:
    """Each top-level function's (lines, parameters), nested functions counted in their parent's lines."""
    tree = ast.parse(path.read_text())
    return {
        node.name: (node.end_lineno - node.lineno + 1, len(node.args.args))
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
    }


def main() -> None:
    print("| golden | longest function | train() lines | train_one_epoch lines | its parameters |")
    print("| --- | --- | --- | --- | --- |")
    for script in sorted((ROOT / "golden").glob("*/train.py")):
        found = functions(script)
        name, (lines, _) = max(found.items(), key=lambda item: item[1][0])
        epoch_lines, epoch_params = found["train_one_epoch"]
        row = [script.parent.name, f"{name} ({lines})", str(found["train"][0]), str(epoch_lines), str(epoch_params)]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
