"""Training benchmarks on the shipped demo photos (vehicle_cls/assets/demo_vehicle_types).

``speed``: the trainer against a plain torchvision training loop (the seed notebook's: a Dataset that
decodes and squashes, DataLoader, ResNet-18, SGD, cross-entropy, fp32, no extras) on the same photos,
model, input size, batch and threads, in one run; then the recipe's speed-ups one at a time
(channels_last, bf16 autocast) and the whole demo recipe. Each variant trains ``--epochs`` epochs over
the same ``--images`` photos; images/s is taken from its fastest epoch (the first includes warm-up).

``step``: ResNet-18 forward + backward per CPU-second on random input, fp32 vs bf16 autocast (is bf16
native on this CPU, or emulated?).

``accuracy``: the demo recipe against the seed-style baseline (and, with ``--variants``, the recipe in
fp32) on the demo's split, one full training run per seed and variant: test top-1 as mean and 95 %
t-interval over seeds (Student t, n-1 degrees of freedom), and the paired recipe - baseline difference
per seed with its own t-interval, and each run's test top-1 with its 95 % Wilson interval over the test
photos. The validation top-1 (what chose the recipe) is reported beside it; ``--val-only`` trains and
reports the validation split only, for choosing a recipe (``--set`` changes it) without the test photos.
``table`` prints the same tables again from ``accuracy`` outputs (e.g. variants run as separate processes).

    python benchmarks/bench_train.py speed [--images 768 --epochs 2 --threads 2]
    python benchmarks/bench_train.py step --threads 1
    python benchmarks/bench_train.py accuracy --seeds 0 1 2 [--variants recipe baseline recipe-fp32]
    python benchmarks/bench_train.py accuracy --seeds 0 --variants recipe --val-only --set run.epochs=8
    python benchmarks/bench_train.py table recipe.json baseline.json   # the table from accuracy --json files
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vehicle_cls.train import demo
from vehicle_cls.train.config import TrainConfig

#: two-sided 95 % Student t quantiles by degrees of freedom
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def t_interval(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95 % t-interval); half-width nan for fewer than 2 values."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / len(values) ** 0.5


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval (low, high) of a proportion ``p`` measured on ``n`` samples."""
    if n <= 0:
        return float("nan"), float("nan")
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return centre - half, centre + half


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text(encoding="utf-8").split(" ")[0]
    except OSError:
        return "?"


# ---- speed ------------------------------------------------------------------------------------------

def plain_loop(paths: list[str], labels: list[int], size: int, batch: int, epochs: int, seed: int) -> list[float]:
    """The seed notebook's loop; returns seconds per epoch."""
    import torchvision
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    tf = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    class Photos(Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return tf(Image.open(paths[i]).convert("RGB")), labels[i]

    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=max(labels) + 1)
    loader = DataLoader(Photos(), batch_size=batch, shuffle=True, num_workers=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    seconds = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for images, targets in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(images), targets)
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - t0)
    return seconds


def trainer_run(raw: dict[str, Any], out: Path) -> list[float]:
    """The trainer on ``raw``; returns its seconds per epoch (training only: no validation split)."""
    from vehicle_cls.train.trainer import train

    raw["run"]["out_dir"] = str(out)
    result = train(TrainConfig.from_dict(raw, source="bench").validate("bench"))
    return [row["seconds"] for row in result.history]


def speed(args: argparse.Namespace) -> dict[str, Any]:
    from vehicle_cls.train.splits import prepare_splits

    torch.set_num_threads(args.threads)
    per_class = args.images // 6
    base = demo.demo_config("unused", threads=args.threads, progress=False).to_dict()
    base["data"].update(val_fraction=0.0, max_per_class=per_class)
    base["run"].update(epochs=args.epochs, tensorboard=False, progress=False)
    base["optim"]["warmup_epochs"] = 0.0
    splits = prepare_splits(TrainConfig.from_dict(base).data)
    paths, labels = [s.path for s in splits.train], [s.label for s in splits.train]

    def same_as_plain(raw: dict[str, Any]) -> dict[str, Any]:
        raw["augment"]["enabled"] = False
        raw["optim"].update(name="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.0, label_smoothing=0.0,
                            schedule="constant")
        raw["model"]["dropout"] = 0.0
        raw["run"].update(precision="fp32", channels_last=False)
        return raw

    def variant(name: str) -> dict[str, Any]:
        raw = json.loads(json.dumps(base))
        if name == "recipe (auto precision)":
            return raw
        raw = same_as_plain(raw)
        if name in ("+ channels_last", "+ channels_last + bf16"):
            raw["run"]["channels_last"] = True
        if name in ("+ bf16", "+ channels_last + bf16"):
            raw["run"]["precision"] = "bf16"
        return raw

    from vehicle_cls import runtime

    names = ["trainer, same settings", "+ channels_last", "+ bf16", "+ channels_last + bf16", "recipe (auto precision)"]
    if not (args.bf16 or runtime.cpu_has_fast_bf16()):  # emulated bf16: far slower, measured once is enough
        names = [n for n in names if "bf16" not in n]
        print(f"no native bf16 on this CPU ({torch.backends.cpu.get_cpu_capability()}): bf16 variants skipped "
              "(--bf16 runs them)")
    rows: dict[str, list[float]] = {"plain torchvision loop": []}
    rows.update({n: [] for n in names})
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):  # plain and trainer back to back each repeat
            rows["plain torchvision loop"] += plain_loop(paths, labels, base["model"]["input_size"],
                                                         base["run"]["batch_size"], args.epochs, r)
            for i, n in enumerate(names):
                rows[n] += trainer_run(variant(n), Path(tmp) / f"{r}-{i}")
    n_img = len(paths)
    result = {"images": n_img, "epochs": args.epochs, "repeats": args.repeats, "threads": args.threads,
              "input_size": base["model"]["input_size"], "batch_size": base["run"]["batch_size"],
              "cpu": cpu_name(), "load_before": args.load_before, "load_after": load_average(),
              "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "variants": {}}
    plain = n_img / min(rows["plain torchvision loop"])
    print(f"{n_img} photos x {args.epochs} epochs x {args.repeats} repeats, {result['input_size']} px, batch "
          f"{result['batch_size']}, {args.threads} threads, {result['cpu']}, load {args.load_before} -> {result['load_after']}")
    print("| variant | images/s (best epoch) | vs plain loop | epoch seconds |\n|---|---|---|---|")
    for n, secs in rows.items():
        ips = n_img / min(secs)
        result["variants"][n] = {"images_per_s": round(ips, 1), "epoch_seconds": [round(s, 2) for s in secs]}
        print(f"| {n} | {ips:.1f} | {ips / plain:.2f}x | {', '.join(f'{s:.1f}' for s in secs)} |")
    return result


# ---- step ------------------------------------------------------------------------------------------

def step(args: argparse.Namespace) -> dict[str, Any]:
    """ResNet-18 forward + backward on random input, images per CPU-second (CPU time: less sensitive to
    other jobs than wall time), fp32 vs bf16 autocast, contiguous vs channels_last."""
    import torchvision

    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                           "threads": args.threads, "batch": args.batch, "size": args.size, "variants": {}}
    print(f"{out['cpu']} ({out['cpu_capability']}), {args.threads} thread(s), batch {args.batch}, {args.size} px")
    for precision, channels_last in (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=6)
        x, y = torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 6, (args.batch,))
        if channels_last:
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

        for i in range(args.steps + 1):  # the first is warm-up
            if i == 1:
                t0 = time.process_time()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            model.zero_grad()
            loss.backward()
        rate = args.batch * args.steps / (time.process_time() - t0)
        name = f"{precision}{' channels_last' if channels_last else ''}"
        out["variants"][name] = round(rate, 2)
        print(f"{name}: {rate:.1f} images per CPU-second", flush=True)
    return out


# ---- accuracy ---------------------------------------------------------------------------------------

def accuracy(args: argparse.Namespace) -> dict[str, Any]:
    from vehicle_cls.classifier import Classifier
    from vehicle_cls.train.evaluate import evaluate
    from vehicle_cls.train.splits import DataSplits
    from vehicle_cls.train.trainer import train

    out = Path(args.out)
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        for v in args.variants:
            cfg = demo.demo_config(out / f"{v}-seed{seed}", baseline=v == "baseline", seed=seed, threads=args.threads,
                                   progress=False, precision="fp32" if v == "recipe-fp32" else None)
            if args.set:
                cfg = with_overrides(cfg, args.set)
            t0, c0 = time.perf_counter(), time.process_time()
            res = train(cfg)
            seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
            splits = DataSplits.load(res.run_dir / "splits.json")
            train_s = sum(r["seconds"] for r in res.history)
            row = {"variant": v, "seed": seed, "test_top1": None, "val_top1": res.best_metric,
                   "best_epoch": res.best_epoch, "train_seconds": round(train_s, 1), "total_seconds": round(seconds, 1),
                   "cpu_seconds": round(cpu_seconds, 1), "images_per_s": round(len(splits.train) * len(res.history) / train_s, 1),
                   "test_images": 0, "load": load_average(), "set": args.set}
            if not args.val_only:
                ev = evaluate(Classifier.load(res.best_dir), splits.test, dataset_classes=splits.classes,
                              batch_size=256, name=f"{v} seed {seed}")
                row.update(test_top1=ev.metrics.top1, test_images=ev.metrics.num_samples)
            runs.append(row)
            print(json.dumps(row), flush=True)
    summary: dict[str, Any] = {"cpu": cpu_name(), "torch": torch.__version__, "threads": args.threads,
                               "load_before": args.load_before, "runs": runs}
    summary.update(summarize(runs))
    return summary


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Print and return the per-variant table (mean and 95 % t-interval over seeds) and the recipe - baseline
    difference paired by seed (over the seeds both ran); runs without test figures show the validation only."""
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    out: dict[str, Any] = {"variants": {}}
    print("\n| variant | seeds | test top-1 (95 % t-interval) | val top-1 | epochs s (train + val) "
          "| process CPU s | train images/s |")
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        mine = [r for r in runs if r["variant"] == v]
        tests = [r["test_top1"] for r in mine if r["test_top1"] is not None]
        m, h = t_interval(tests) if tests else (float("nan"),) * 2
        vm, vh = t_interval([r["val_top1"] for r in mine])
        out["variants"][v] = {"test_top1": m, "interval": h, "val_top1": vm, "val_interval": vh,
                              "seeds": [r["seed"] for r in mine]}
        print(f"| {v} | {', '.join(str(r['seed']) for r in mine)} | {m:.2%} +- {h:.2%} | {vm:.2%} +- {vh:.2%} | "
              f"{statistics.fmean(r['train_seconds'] for r in mine):.0f} | "
              f"{statistics.fmean(r['cpu_seconds'] for r in mine):.0f} | "
              f"{statistics.fmean(r['images_per_s'] for r in mine):.0f} |")
    print("\n| run | test top-1 (95 % Wilson interval over the test photos) | val top-1 | best epoch "
          "| epochs s (train + val) | process CPU s |\n|---|---|---|---|---|---|")
    for r in runs:
        if r["test_top1"] is not None:
            lo, hi = wilson(r["test_top1"], r["test_images"])
            print(f"| {r['variant']} seed {r['seed']} | {r['test_top1']:.2%} ({lo:.2%} - {hi:.2%}, "
                  f"{r['test_images']} photos) | {r['val_top1']:.2%} | {r['best_epoch']} | {r['train_seconds']:.0f} | "
                  f"{r['cpu_seconds']:.0f} |")
    by = {(r["variant"], r["seed"]): r["test_top1"] for r in runs if r["test_top1"] is not None}
    seeds = sorted(s for v, s in by if v == "recipe" and ("baseline", s) in by)
    if seeds:
        diffs = [by[("recipe", s)] - by[("baseline", s)] for s in seeds]
        m, h = t_interval(diffs)
        out["recipe_minus_baseline"] = {"mean": m, "interval": h, "per_seed": diffs, "seeds": seeds}
        verdict = "beats" if m - h > 0 else "does NOT (yet) beat"
        print(f"\nrecipe - baseline (paired by seed, seeds {seeds}): {m:+.2%} +- {h:.2%}: the recipe {verdict} "
              "the baseline by more than the interval")
    return out


def table(args: argparse.Namespace) -> dict[str, Any]:
    """The accuracy table again from ``accuracy --json`` files, or from its printed output (one JSON line per
    finished run, so a run stopped early still counts its finished seeds)."""
    runs = []
    for f in args.files:
        text = Path(f).read_text()
        if text.lstrip().startswith('{"variant"') or not text.lstrip().startswith("{"):
            runs += [json.loads(line) for line in text.splitlines() if line.startswith('{"variant"')]
        else:
            runs += json.loads(text)["runs"]
    return {"files": args.files, "runs": runs, **summarize(runs)}


def with_overrides(cfg: TrainConfig, assignments: list[str]) -> TrainConfig:
    """``cfg`` with ``section.key=value`` assignments (values parsed as YAML), for trying recipes on the
    validation split."""
    import yaml

    raw = cfg.to_dict()
    for a in assignments:
        key, _, value = a.partition("=")
        section, _, name = key.partition(".")
        raw[section][name] = yaml.safe_load(value)
    return TrainConfig.from_dict(raw, source="bench --set").validate("bench --set")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("speed", help="trainer vs plain torchvision loop, and the recipe's speed-ups")
    s.add_argument("--images", type=int, default=768, help="training photos (a multiple of 6)")
    s.add_argument("--epochs", type=int, default=2)
    s.add_argument("--repeats", type=int, default=1)
    s.add_argument("--bf16", action="store_true", help="run the bf16 variants also on a CPU without native bf16")
    k = sub.add_parser("step", help="ResNet-18 forward + backward rate: fp32 vs bf16, contiguous vs channels_last")
    k.add_argument("--batch", type=int, default=16)
    k.add_argument("--size", type=int, default=96)
    k.add_argument("--steps", type=int, default=2)
    a = sub.add_parser("accuracy", help="demo recipe vs baseline over seeds, on the demo split")
    a.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a.add_argument("--variants", nargs="+", default=["recipe", "baseline"],
                   choices=["recipe", "baseline", "recipe-fp32"])
    a.add_argument("--out", default="bench_train_runs")
    a.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                   help="recipe overrides for every variant, e.g. run.epochs=6 model.input_size=88")
    a.add_argument("--val-only", action="store_true",
                   help="choose a recipe: report the validation split only, never touch the test photos")
    t = sub.add_parser("table", help="the accuracy table from accuracy --json files")
    t.add_argument("files", nargs="+")
    for p in (s, k, a, t):
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    args.load_before = load_average()
    result = {"speed": speed, "step": step, "accuracy": accuracy, "table": table}[args.mode](args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
