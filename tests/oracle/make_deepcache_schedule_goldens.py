#!/usr/bin/env python3
"""Goldens for step caching's non-uniform ("quadratic") schedule: DeepCache's own sample_from_quad_center.

What it makes: tests/goldens/deepcache/quad_center_schedules.json, a list of cases
    {"steps", "interval", "center", "pow", "samples", "indices" (the UNet calls that run in full), "pow_used"}
    or, where the function finds no power, "error" instead of indices.
`samples` is what DeepCache's StableDiffusionPipeline.__call__ asks for: steps // interval, plus one when interval
does not divide steps.

The function is the authors' (github.com/horseee/DeepCache at 1691a3ab22308fe06685e4ff151a9ab175be2dc4,
DeepCache/sd/pipeline_stable_diffusion.py, lines 86-96): this script parses that file from a checkout and runs the
function's own code, without importing the rest of the module (which needs another diffusers).

How to run (numpy only; the reference environment of ../shared/oracle/README.md has it):
    git --git-dir=<DeepCache mirror> archive 1691a3ab22308fe06685e4ff151a9ab175be2dc4 DeepCache/sd | tar -x -C DIR
    /usr/bin/python3 tests/oracle/make_deepcache_schedule_goldens.py DIR [OUT_FILE]
"""
import ast
import json
import os
import sys
import warnings

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "tests", "goldens", "deepcache", "quad_center_schedules.json")

# (steps, interval, center, pow): SD's usual step counts, the paper's powers, centers across the schedule, and cases
# where the search for a power fails.
CASES = [(steps, interval, center, p)
         for steps in (10, 20, 25, 50)
         for interval in (2, 3, 4, 5, 10)
         for center in sorted({0, 1, steps // 4, steps // 3, steps // 2, (2 * steps) // 3, steps - 1})
         for p in (1.2, 1.4, 1.5)]


def load_function(deepcache_dir):
    path = os.path.join(deepcache_dir, "DeepCache", "sd", "pipeline_stable_diffusion.py")
    tree = ast.parse(open(path).read())
    fn = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "sample_from_quad_center"]
    assert len(fn) == 1, path
    scope = {"np": np}
    exec(compile(ast.Module(body=fn, type_ignores=[]), path, "exec"), scope)
    return scope["sample_from_quad_center"]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sample_from_quad_center = load_function(sys.argv[1])
    out = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_OUT
    cases = []
    for steps, interval, center, p in CASES:
        samples = steps // interval + (1 if steps % interval else 0)
        case = {"steps": steps, "interval": interval, "center": center, "pow": p, "samples": samples}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ComplexWarning: the function casts complex values to int32
            try:
                indices, pow_used = sample_from_quad_center(steps, samples, center=center, pow=p)
                case["indices"] = [int(i) for i in indices]
                case["pow_used"] = float(pow_used)
            except ValueError as e:
                case["error"] = str(e)
        cases.append(case)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    made_by = "tests/oracle/make_deepcache_schedule_goldens.py: DeepCache's sample_from_quad_center (horseee/DeepCache 1691a3a)"
    with open(out, "w") as f:  # one case per line
        f.write('{"made_by": %s, "numpy": %s, "cases": [\n' % (json.dumps(made_by), json.dumps(np.__version__)))
        f.write(",\n".join(json.dumps(c) for c in cases))
        f.write("\n]}\n")
    errors = sum("error" in c for c in cases)
    print(f"{out}: {len(cases)} cases, {errors} without a power")


if __name__ == "__main__":
    main()
