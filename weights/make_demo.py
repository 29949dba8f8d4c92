"""Makes the bundled demo: a Basenji2-shaped model with RANDOM weights (not a trained model),
a small synthetic genome and a BED file, so the README's first command runs anywhere.

    python weights/make_demo.py        # rewrites weights/demo/ (deterministic, seed 2026)
"""
from pathlib import Path

import numpy as np

from basenji2_fast.formats import engine_format
from basenji2_fast.spec import ConvOp, CropOp, Head, ModelSpec, dilation_schedule

HERE = Path(__file__).resolve().parent / "demo"
SEED = 2026


def demo_spec(rng) -> ModelSpec:
    """Basenji2's block structure, shrunk: 16,384 bp -> 96 bins x 128 bp, 12 tracks."""
    def conv(k, cin, cout, dil=1, pool=1, residual=None):
        kernel = rng.standard_normal((k, cin, cout)) * np.sqrt(2.0 / (k * cin))  # He normal
        return ConvOp(f"conv_{cin}_{cout}_d{dil}", kernel.astype(np.float32),
                      (0.1 * rng.standard_normal(cout)).astype(np.float32), dil, True, pool, residual)

    ops = [conv(15, 4, 16, pool=2)]
    channels = 16
    for filters in (21, 25, 29, 34, 40, 48):
        ops.append(conv(5, channels, filters, pool=2))
        channels = filters
    for rate in dilation_schedule(4, 1.5):
        i = len(ops)
        ops += [conv(3, 48, 16, dil=rate), conv(1, 16, 48, residual=i)]
    ops += [CropOp("crop", 16, 16), conv(1, 48, 64)]
    head = Head("human", (rng.standard_normal((64, 12)) * 0.1).astype(np.float32),
                (rng.standard_normal(12) * 0.1).astype(np.float32))
    source = [{"file": "weights/make_demo.py", "seed": SEED,
               "note": "RANDOM WEIGHTS: a demo of the file format and the commands, not a trained model"}]
    return ModelSpec(16384, ops, {"human": head}, metadata={"source": source}).validate()


def demo_genome(rng) -> dict:
    seqs = {}
    for name, size in (("chrDemo1", 60_000), ("chrDemo2", 30_500)):
        s = np.array(list("ACGT"))[rng.integers(0, 4, size)].astype("<U1")
        s[20_000:21_000] = "N"  # an assembly gap
        s[5_000:7_000] = np.char.lower(s[5_000:7_000])  # soft-masked repeat: read as the same bases
        seqs[name] = "".join(s)
    return seqs


def main():
    rng = np.random.default_rng(SEED)
    HERE.mkdir(exist_ok=True)
    engine_format.save(demo_spec(rng), HERE / "demo_random_weights.safetensors")
    seqs = demo_genome(rng)
    with open(HERE / "demo.fa", "w") as fh:
        for name, s in seqs.items():
            fh.write(f">{name}\n")
            fh.writelines(s[i:i + 60] + "\n" for i in range(0, len(s), 60))
    (HERE / "demo.bed").write_text(
        "chrDemo1\t30000\t30500\tinterior\n"
        "chrDemo1\t100\t900\tnear_start_padded_with_N\n"
        "chrDemo1\t19000\t23000\tacross_gap\n"
        "chrDemo2\t15000\t15200\tsecond_chromosome\n")


if __name__ == "__main__":
    main()
