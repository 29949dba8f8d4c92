"""Both heads from one trunk pass vs one pass per head, same run, same model.

    python benchmarks/bench_heads.py [--model PATH] [--repeats 3] [--threads N]

Default model: the tf-full fixture (full Basenji2 architecture, random weights, human head of
5,313 tracks) read in place from ../shared, with a random 1,643-track "mouse" head added on
its trunk (the published mouse head's shape), so the timing is that of the merged
model_human.h5 + model_mouse.h5. ``head="both"`` runs the trunk once and both heads on it;
the alternative is ``head="human"`` then ``head="mouse"`` (two trunk passes). Outputs are
checked identical.
"""
import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from basenji2_fast.formats import load_spec
from basenji2_fast.model import Model
from basenji2_fast.spec import Head

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "tf-full" / "model_human.h5"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    spec = load_spec(args.model)
    if len(spec.heads) == 1:
        rng = np.random.default_rng(0)
        c = spec.trunk_channels
        spec.heads["mouse"] = Head("mouse", (rng.standard_normal((c, 1643)) * 0.02).astype(np.float32),
                                   np.zeros(1643, np.float32))
    model = Model(spec, threads=args.threads)
    names = model.head_names[:2]
    codes = np.random.default_rng(1).integers(0, 4, (1, model.seq_length)).astype(np.uint8)
    model.predict(codes, head="both")  # warm-up
    both, separate = [], []
    for r in range(args.repeats):
        for which in (("both", "sep") if r % 2 == 0 else ("sep", "both")):
            t = time.perf_counter()
            if which == "both":
                out_b = model.predict(codes, head=names)
                both.append(time.perf_counter() - t)
            else:
                out_s = {h: model.predict(codes, head=h) for h in names}
                separate.append(time.perf_counter() - t)
    exact = all(np.array_equal(out_b[h], out_s[h]) for h in names)
    print(f"model {args.model}: heads {', '.join(f'{h} ({model.spec.heads[h].tracks})' for h in names)}, "
          f"isa {model.info()['isa']}, threads {model.threads}")
    print(f"one pass per head: median {statistics.median(separate):.3f} s per sequence (min {min(separate):.3f})")
    print(f"both from one pass: median {statistics.median(both):.3f} s per sequence (min {min(both):.3f})")
    print(f"speed-up: {statistics.median(separate) / statistics.median(both):.2f}x  (identical outputs: {exact})")
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
