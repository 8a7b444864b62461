"""``python -m hcx.eval ...``: lm-eval's own command line with the ``hcx`` model and hcx tasks.

lm-eval finds models only in its registry, so its ``lm_eval`` script cannot see ``hcx``;
this entry point registers it, adds ``--include_path hcx/eval/tasks`` when none is given,
and hands over::

    python -m hcx.eval run --model hcx --model_args pretrained=runs/tiny/hf \\
        --tasks hcx_kmmlu_criminal_law --metadata '{"data_dir": "../shared/data"}'
"""

from __future__ import annotations

import sys

from lm_eval.__main__ import cli_evaluate

import hcx.eval.backend  # noqa: F401  (registers the hcx model)
from hcx.eval.runner import TASKS_DIR


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("run", "ls", "validate") and "--include_path" not in sys.argv:
        sys.argv[2:2] = ["--include_path", str(TASKS_DIR)]
    cli_evaluate()


if __name__ == "__main__":
    main()
