"""Run one study from a config file (ml_collections, the JAX field's convention).

    python experiments/main.py --config experiments/configs/biohash.py:table2,quick
    python experiments/main.py --config experiments/configs/hpca.py:cifar10 --config.seeds=0,1,2

The config file picks the pipeline (``configs/<name>.py`` runs ``hebbret.pipelines.<name>``);
``--config.FIELD=VALUE`` overrides any field (comma lists for tuples). Each config's docstring
gives its commands, expected wall time and the paper's numbers. Outputs: ``OUT.json`` (record)
and ``OUT.md`` (table next to the paper's); a rerun of the same command resumes.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import shlex
import sys

from absl import flags
from ml_collections import config_flags

from hebbret.errors import InputError, run_command


def _flags(argv: list[str]) -> flags.FlagValues:
    """This script's flags for ``argv``, in a fresh FlagValues (main can run many times in one
    process; the ``--config.FIELD`` overrides are found in ``argv``, not ``sys.argv``)."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "experiments/configs/NAME.py[:ARG]", flag_values=fv, sys_argv=argv
    )
    flags.DEFINE_string(
        "out", None, "output path without extension (default: the study's)", flag_values=fv
    )
    flags.DEFINE_string(
        "checkpoints", None, "checkpoint folder (studies that train)", flag_values=fv
    )
    flags.DEFINE_integer("devices", None, "split minibatches over N devices", flag_values=fv)
    return fv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    argv = ["experiments/main.py", *argv]
    fv = _flags(argv)
    if {"-h", "--help", "--helpfull"} & set(argv):
        print(__doc__)
        print(fv.get_help())
        return 0
    try:
        fv(argv)
    except (AttributeError, KeyError) as e:  # --config.FIELD names no field of the config
        raise InputError(f"no such config field: {str(e).strip(chr(34))}") from None
    except (flags.Error, TypeError, ValueError) as e:  # bad flag, value or config argument
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise InputError(" ".join(lines[:1] + lines[-1:] if len(lines) > 1 else lines)) from None
    config = fv["config"].value
    if config is None:
        raise InputError("--config experiments/configs/NAME.py[:ARG] is required")
    name = pathlib.Path(fv["config"].config_filename).stem
    pipeline = importlib.import_module(f"hebbret.pipelines.{name}")
    options = {"checkpoint_root": fv["checkpoints"].value, "devices": fv["devices"].value}
    options = {k: v for k, v in options.items() if v is not None}
    unused = set(options) - set(inspect.signature(pipeline.run).parameters)
    if unused:
        flag = {"checkpoint_root": "--checkpoints", "devices": "--devices"}
        raise InputError(f"the {name} study takes no {', '.join(flag[k] for k in sorted(unused))}")
    pipeline.run(
        _split_lists(config),
        fv["out"].value,
        command="python " + shlex.join(argv),
        **options,
    )
    return 0


def _split_lists(config):
    """``--config.methods=a,b`` arrives as ``("a,b",)``: split such string tuples on commas
    (``--config.svqe=`` gives the empty tuple)."""
    for key, value in config.items():
        if hasattr(value, "items"):
            _split_lists(value)
        elif isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
            with config.unlocked():
                config[key] = tuple(p.strip() for v in value for p in v.split(",") if p.strip())
    return config


if __name__ == "__main__":
    sys.exit(run_command("experiments/main.py", main))
