"""``psaq``: data-free quantization of vision transformers from the command line."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

EPILOG = textwrap.dedent(
    """\
    examples:
      psaq quantize --model digits-vit --w-bits 4 --a-bits 8 --calib psaq --seed 0
      psaq quantize --model digits-vit --a-bits 4 --act-observer mse --calib gaussian
      psaq quantize --model fashion-vit --dataset fashion-mnist --w-bits 4 --a-bits 8
      psaq quantize --model deit_small_patch16_224 --checkpoint deit_s.safetensors \\
                    --dataset /data/imagenet/val --device cuda
      psaq quantize --model vit_tiny_patch16_224 --model-arg img_size=64 --model-arg num_classes=10 \\
                    --checkpoint mine.pt --dataset ./val
      psaq quantize --model deit_base_patch16_224 --pretrained --device cuda --precision bf16 --compile all
      psaq quantize --model fashion-vit --pretrained --headless --calib psaq-v2 --v2-discrepancy features
                    (the backbone without its classifier: scored by k-NN top-1 and feature cosine)
      psaq quantize --model deit_small_patch16_224 --checkpoint deit_s.pth --dataset /data/imagenet --calib real
                    (a root holding train/ and val/: evaluates on val/, real draws from train/)

    calibration modes (--calib):
      psaq              images optimized from noise for diverse patch similarity (PSAQ-ViT)
      psaq-noent        the same without the entropy term (ablation)
      psaq-v2           PSAQ-ViT V2: label-free psaq images, then samples and quantized model evolve
                        together, teacher against student, for adaptive.rounds rounds (--v2-rounds)
      gaussian          N(0,1) noise in normalized space
      gaussian-clamped  noise clipped to valid pixel values
      real              N training images (needs data: the baseline psaq replaces)

    settings: ./params.yaml when there is one (the pipeline's), else the library defaults (the
    official PSAQ-ViT numerics); flags override either. Each "(default: …)" above is the value a run
    takes here, with "from params.yaml; library default …" where the project's file differs from the
    official code's numerics (the README's "Defaults" table says why). Artifacts go to the project's
    store, shared with `make run`, the flows and `dvc repro`: what one made, the others reuse.
    """
)


def _add_quantize(sub: argparse._SubParsersAction, base=None, source: str | None = None) -> None:
    p = sub.add_parser(
        "quantize",
        help="synthesize calibration images, quantize, and compare FP32 with quantized top-1",
        description="Quantize a vision transformer without its training data: synthesize calibration "
        "images from the model itself, calibrate per-layer scales, and print FP32 and quantized top-1.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_args(p, base, source)
    p.set_defaults(func=_quantize)


def _add_export(sub: argparse._SubParsersAction, base=None, source: str | None = None) -> None:
    p = sub.add_parser(
        "export",
        help="quantize, then write a QDQ ONNX model and a compact integer weight file",
        description="Quantize as `psaq quantize` does, then export: an ONNX model whose QuantizeLinear/"
        "DequantizeLinear nodes carry the calibrated scales (ONNX Runtime runs its matrix products with "
        "integer kernels), and a safetensors file of int8 (or packed int4) weights with every scale.",
        epilog=EPILOG.replace("psaq quantize", "psaq export"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_args(p, base, source)
    p.add_argument("--out", default="exports", help="output folder (default: %(default)s)")
    from psaq.params import Params
    from psaq.quant.onnx_export import WEIGHT_TYPES

    p.add_argument("--weight-type", choices=list(WEIGHT_TYPES),
                   help="how the ONNX model stores 8-bit weights: uint8 (zero point 128, exact on every x86 CPU) or "
                        "int8 (ONNX Runtime's u8×s8 kernel: faster on CPUs with VNNI, can saturate without it) "
                        + _default_text(base if base is not None else Params(), source, "weight_type"))
    p.set_defaults(func=_export)


def _default(cls, name: str):
    """A config dataclass's own default: the CLI never declares one of its own."""
    import dataclasses

    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def _settings_file(argv: list[str] | None) -> tuple[object, str | None]:
    """(Params, where they come from) as a run with ``argv`` would start from: ``--params FILE``,
    else ./params.yaml when there is one, else the library defaults (None). A file that does not
    load leaves the library defaults for ``--help``; the run itself then says what is wrong."""
    from pathlib import Path

    from psaq.errors import PsaqError
    from psaq.params import Params, load_params

    argv = list(sys.argv[1:] if argv is None else argv)
    given = next((a.split("=", 1)[1] for a in argv if a.startswith("--params=")), None)
    if given is None and "--params" in argv[:-1]:
        given = argv[argv.index("--params") + 1]
    path = Path(given) if given else Path("params.yaml")
    if not (given or path.is_file()):
        return Params(), None
    try:
        return load_params(path), str(path)
    except PsaqError:
        return Params(), None


def _default_text(base, source: str | None, name: str) -> str:
    """``(default: 4, from params.yaml; library default 8)``: the value a run takes when the flag is
    left out, where that value comes from, and the library's own where the two differ."""
    import dataclasses

    from psaq.overrides import OVERRIDES
    from psaq.params import SECTIONS

    section, key = OVERRIDES[name]
    effective = getattr(getattr(base, section), key)
    library = _default(SECTIONS[section], key)
    if isinstance(library, dataclasses._MISSING_TYPE):  # a default_factory field
        library = next(f.default_factory() for f in dataclasses.fields(SECTIONS[section]) if f.name == key)
    if source is None or effective == library:
        return f"(default: {effective})"
    return f"(default: {effective}, from {source}; library default {library})"


def _add_run_args(p: argparse.ArgumentParser, base=None, source: str | None = None) -> None:
    from psaq.params import Params

    base = base if base is not None else Params()
    d = lambda name: _default_text(base, source, name)  # noqa: E731
    m = p.add_argument_group("model")
    m.add_argument("--model", help=f"psaq model (digits-vit) or any timm name {d('model')}")
    m.add_argument("--checkpoint", help="local weights: .safetensors or a torch state dict (read with weights_only=True)")
    m.add_argument("--pretrained", action="store_true", help="timm pretrained weights from its cache or hub")
    m.add_argument("--random-weights", action="store_true",
                   help="run a timm model on its random initial weights, on purpose (tests, speed); otherwise refused")
    m.add_argument("--headless", action="store_true", default=None,
                   help="quantize the backbone alone: the classifier is removed after the weights load (a model built "
                   "with num_classes=0 is headless already); scored by k-NN top-1 over its features and their cosine "
                   "with the float backbone's. Label-free calibration only: gaussian, real, or psaq-v2 with "
                   "--v2-discrepancy features")
    m.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="timm keyword override, repeatable (img_size=64, num_classes=10, …)")
    m.add_argument("--train-seed", type=int, help=f"which self-trained digits-vit {d('train_seed')}")
    q = p.add_argument_group("quantization")
    q.add_argument("--w-bits", type=int, help=f"weight bits, 2..8, symmetric per channel {d('w_bits')}")
    q.add_argument("--a-bits", type=int, help=f"activation bits, 2..8, asymmetric per tensor {d('a_bits')}")
    q.add_argument("--act-observer", help=f"activation range rule: minmax (the paper's), percentile, mse {d('act_observer')}")
    q.add_argument("--weight-observer", help=f"weight range rule {d('weight_observer')}")
    q.add_argument("--sites", help="where and how activations are quantized: official (the official code's 10 per "
                   "block + 7), compact (psaq's earlier 8 + 3), log2 (official + log2 post-softmax probabilities), "
                   "repq (matmul inputs, log2 probabilities, LayerNorm outputs per channel folded into the "
                   f"LayerNorm and the next linear: psaq's 4-bit recipe) {d('sites')}")
    q.add_argument("--calibrate-with-quantized-weights", action="store_true", default=None,
                   help="take activation ranges with the weights already rounded (psaq's option; the official code "
                   "calibrates the float model)")
    r = p.add_argument_group("block reconstruction (psaq's option, after calibration; off in the paper's method)")
    r.add_argument("--reconstruct", action="store_true", default=None,
                   help="learn weight rounding (AdaRound) and activation steps (LSQ) block by block on the "
                   "calibration images, with QDrop")
    r.add_argument("--reconstruct-iters", type=int, help=f"iterations per block {d('reconstruct_iters')}")
    v = p.add_argument_group("PSAQ-ViT V2 (--calib psaq-v2; params.yaml adaptive: has the rest)")
    v.add_argument("--v2-rounds", type=int, help=f"teacher-student rounds {d('v2_rounds')}")
    v.add_argument("--v2-student", metavar="{weights+scales,weights,scales}",
                   help=f"what the student learns in each round {d('v2_student')}")
    v.add_argument("--v2-discrepancy", metavar="{logits,features}",
                   help="what the student is compared with the teacher on: the classifier's logits (KL) or the "
                   f"backbone's output tokens (a headless backbone has only these) {d('v2_discrepancy')}")
    s = p.add_argument_group("calibration data")
    s.add_argument("--calib", help=f"calibration mode, see below {d('calib')}")
    s.add_argument("--seed", type=int, help=f"synthesis seed {d('seed')}")
    s.add_argument("--num-samples", type=int, help=f"calibration images {d('num_samples')}")
    s.add_argument("--steps", type=int, help=f"optimization steps per round, 2 rounds {d('steps_per_round')}")
    s.add_argument("--entropy-estimator", help="patch-similarity entropy: official (the official code's) or unique-pairs "
                   f"(psaq's variant) {d('entropy_estimator')}")
    s.add_argument("--calib-dataset", help="folder of class folders the real mode draws from (a --dataset root with "
                   "train/ brings its own)")
    f = p.add_argument_group("synthesis speed (same images up to rounding; see the README's speed table)")
    f.add_argument("--precision", metavar="{fp32,bf16}",
                   help="autocast dtype of the model's forward; bf16 pays on GPUs and AMX CPUs at 224 px, "
                   f"the entropy stays float32 {d('precision')}")
    f.add_argument("--compile", metavar="{none,kde,model,all}",
                   help=f"what torch.compile fuses; 'kde' pays at 224 px {d('compile')}")
    f.add_argument("--cuda-graphs", action="store_true", default=None, help="replay the compiled step as CUDA graphs (CUDA only)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--dataset", default=None,
                   help="digits, a folder of class folders PATH/<class>/<image>, or a root holding train/ and val/ "
                   "(evaluates on val/, real calibrates on train/) (default: the model's own)")
    e.add_argument("--device", help=f"cpu, cuda, cuda:N; auto picks CUDA when present {d('device')}")
    e.add_argument("--params", help="settings file (default: ./params.yaml when there is one); flags override it")
    e.add_argument("--store", help="artifact store: the project folder whose models/, data/, metrics/ the pipeline "
                   "shares (default: $PSAQ_PROJECT or the current folder)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")


def _params(args: argparse.Namespace):
    """params.yaml of the project (when there is one, or ``--params``), with the command line on top:
    the same settings the pipeline and the deployment run, unless a flag says otherwise."""
    import dataclasses
    from pathlib import Path

    from psaq.models import parse_model_args
    from psaq.overrides import OVERRIDES, apply_overrides
    from psaq.params import Params, load_params
    from psaq.synth.config import OFFICIAL_WARMUP_STEPS

    path = Path(args.params) if args.params else Path("params.yaml")
    base = load_params(path) if (args.params or path.is_file()) else Params()
    values = {name: getattr(args, name, None) for name in OVERRIDES}
    if args.model and args.model != base.model.name and not args.checkpoint:
        base = dataclasses.replace(base, model=dataclasses.replace(base.model, checkpoint=None))  # the params' checkpoint belongs to its model
    values["model_args"] = parse_model_args(args.model_arg) if args.model_arg else None
    if not (args.pretrained or args.random_weights):  # store_true flags: only a given one overrides
        values["pretrained"] = values["random_weights"] = None
    if args.steps is not None:
        values["steps_per_round"] = args.steps
        values["warmup_steps"] = min(OFFICIAL_WARMUP_STEPS, max(0, args.steps // 5))
    return apply_overrides(base, values), \
        (path if (args.params or path.is_file()) else None)


def _run(args: argparse.Namespace, export: bool = False):
    """One grid point through the pipeline's stages, into the project's artifact store; ``export``
    runs the export stage whatever grid.export says (``psaq export``)."""
    import dataclasses

    from psaq.allocator import keep_freed_memory
    from psaq.cores import use_threads
    from psaq.device import resolve_device
    from psaq.pipeline import inline_runner, point_of, record, submit_points
    from psaq.store import Store

    from psaq.models.loader import require_known

    params, params_file = _params(args)
    if export:
        params = dataclasses.replace(params, grid=dataclasses.replace(params.grid, export=True))
    require_known(params.model.name)
    resolve_device(params.runtime.device)  # refuse a missing GPU before any work
    threads = use_threads(params.runtime.threads)
    memory = keep_freed_memory(params.runtime.keep_freed_memory)
    point = point_of(params)
    store = Store(args.store or os.environ.get("PSAQ_PROJECT", "."))
    store.clean_stale()
    from psaq.stages.data import describe

    evaluate_on, calibrate_on = describe(params.model, params.runtime.dataset, params.runtime.calib_dataset)
    print(f"settings      {params_file or 'library defaults (no params.yaml here)'} + command line")
    print(f"store         {store.root}")
    print(f"threads       {threads.reason}")
    print(f"memory        {memory.reason}")
    print(f"evaluate on   {evaluate_on}")
    from psaq.synth.methods import method_of

    print("calibrate on  " + (f"real images from {calibrate_on}" if method_of(point.method).needs_data
                               else f"{point.method} images synthesized from the model (no data)"))
    log = None if args.quiet else (lambda line: print(f"stage         {line}"))
    [job] = submit_points(inline_runner(store, progress=not args.quiet, log=log), params, [point])
    return params, point, record(job), job, store


def _quantize(args: argparse.Namespace) -> int:
    params, point, rec, job, _ = _run(args)
    _print_result(params, point, rec)
    return 0


def _print_result(params, point, rec: dict) -> None:
    from psaq.device import resolve_device

    synth = params.synthesis
    print(f"model         {params.model.name}  ({int(rec['count'])} test images, device {resolve_device(params.runtime.device)})")
    from psaq.synth.methods import method_of

    source = ("real training images" if method_of(point.method).needs_data
              else f"{point.method} images synthesized from the model (no data)")
    steps = f", {rec['synthesis_steps']} steps at {rec['steps_per_s']:.1f} steps/s" if rec.get("steps_per_s") else ""
    print(f"calibrated on {synth.num_samples} {source}, seed {point.seed}{steps}")
    from psaq.stages.reconstruct import history, kept_round

    rounds = history(rec["quantized"])
    if "adaptive.discrepancy_start" in rounds:  # V2: how far the student moved toward the teacher
        kl = rounds["adaptive.discrepancy_start"][0], rounds["adaptive.discrepancy_after_student"][-1]
        what = ("feature error ‖S − T‖²/‖T‖²" if params.adaptive.discrepancy == "features"
                else "KL(teacher || student)")
        print(f"psaq-v2       {len(rounds['adaptive.entropy'])} rounds in {rounds['adaptive.wall_s'][0]:.0f} s; "
              f"{what} on its samples {kl[0]:.4f} → {kl[1]:.4f}")
        for key, where in (("heldout", "on held-out samples"), ("noise", "on the noise probe")):
            seen = rounds.get(f"adaptive.discrepancy_{key}")
            if seen:
                print(f"              {where:<19} {seen[0]:.4f} → {seen[-1]:.4f}"
                      + ("  (above its start)" if seen[-1] > seen[0] else ""))
        kept = kept_round(rounds)
        if kept:
            print(f"warning       psaq-v2 kept round {kept[0]} of {kept[1]}: its student, where the checks were "
                  "lowest (round 0 is the calibrated one)")
    if "feature_cosine" in rec:  # a headless backbone: k-NN over its own features
        print(f"backbone      no classifier: k-NN top-1, {params.eval.knn_k} neighbours among {int(rec['knn_index'])} "
              "training images, each model indexing with its own features")
        print(f"FP32          k-NN top-1 {rec['fp32_top1']:6.2f}  top-5 {rec['fp32_top5']:6.2f}")
        print(f"{point.bits:<13} k-NN top-1 {rec['top1']:6.2f}  top-5 {rec['top5']:6.2f}  agreement with FP32 "
              f"{rec['agreement']:6.2f}  feature cosine {rec['feature_cosine']:.4f}  ({point.observer} ranges, "
              f"{params.quant.sites} sites)")
    else:
        print(f"FP32          top-1 {rec['fp32_top1']:6.2f}  top-5 {rec['fp32_top5']:6.2f}")
        print(f"{point.bits:<13} top-1 {rec['top1']:6.2f}  top-5 {rec['top5']:6.2f}  agreement with FP32 "
              f"{rec['agreement']:6.2f}  ({point.observer} ranges, {params.quant.sites} sites)")
    if rec.get("tied"):
        print(f"ties          {int(rec['tied'])} image(s) with two classes sharing the highest logit: counted for the "
              "lower class index, here and in every check")
    if rec.get("exif_rotated"):
        print(f"warning       {int(rec['exif_rotated'])} test image(s) carry an EXIF orientation tag (rotated or mirrored "
              "when shown): psaq reads pixels as stored, as the official code's loader does; rotate the files (or "
              "strip the tag) if the model expects them upright")
    warning = chance_warning(rec["fp32_top1"], params.runtime.dataset)
    if warning:
        print(warning)


def chance_warning(fp32_top1: float, dataset: str | None) -> str | None:
    """A float model near chance on a folder is most often a folder order that is not the model's."""
    if not dataset:
        return None
    from psaq.folders import class_folder_names, resolve_roots

    try:
        names = class_folder_names(resolve_roots(dataset).eval_dir)
    except Exception:  # noqa: BLE001 - a hint, never a new failure
        return None
    if len(names) < 2 or fp32_top1 >= 2 * 100 / len(names):
        return None
    shown = ", ".join(names[:6]) + (", …" if len(names) > 6 else "")
    return (f"warning       FP32 top-1 {fp32_top1:.2f} is near chance ({100 / len(names):.0f} %): are the class folders in "
            f"the model's output order? Without class names in the checkpoint they are taken in this order: {shown}")


def _export(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    import numpy as np
    import torch

    from psaq.pipeline import resolve
    from psaq.quant.onnx_export import INTEGER_OPS, export_fp32_onnx, integer_ops, ort_session
    from psaq.quant.onnx_usage import example_program
    from psaq.evaluation import ranked
    from psaq.quant.serialize import load_quantized
    from psaq.models.checkpoint import atomic_write
    from psaq.sources import eval_loader, model_data
    from psaq.stages.common import load

    params, point, rec, job, _ = _run(args, export=True)
    _print_result(params, point, rec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    exported = resolve(job["export"])
    weights = resolve(job["model"])
    # each file's name carries the key of the artifact it copies (everything that made it: weights,
    # settings, calibration images, code), so an export of another configuration never replaces it,
    # and two exports at once each check their own file
    stem = f"{params.model.name}-{point.bits}-{point.method}-seed{point.seed}"
    onnx_path = out / f"{stem}-{_key_of(exported['onnx'].path)}.onnx"
    int_path = out / f"{stem}-{_key_of(exported['integer'].path)}.int.safetensors"
    for src, dst in ((exported["onnx"], onnx_path), (exported["integer"], int_path)):
        atomic_write(dst, lambda tmp, src=src: shutil.copyfile(src.verify(), tmp))
    loaded = load(params.model, weights, "cpu")
    from psaq.stages.graph import producer

    exported_model = resolve(job[producer("quantized", "export")])  # what the export stage read
    qmodel = load_quantized(__import__("copy").deepcopy(loaded.model), exported_model.verify()).cpu()
    example = torch.zeros((1, *loaded.spec.input_size))
    fp32_path = export_fp32_onnx(loaded.model.cpu(), example, out / f"{params.model.name}-fp32-{weights.sha256[:16]}.onnx")
    session = ort_session(onnx_path)
    headless = loaded.spec.headless
    correct = agree = total = 0
    max_diff = cosine = 0.0
    with torch.no_grad():
        for x, y in eval_loader(model_data(loaded, params.runtime.dataset,
                                           params.runtime.calib_dataset if headless else None)):
            sim = qmodel(x).numpy()
            got = session.run(None, {"images": x.numpy()})[0]
            max_diff = max(max_diff, float(np.abs(got - sim).max()))
            total += len(y)
            if headless:  # features, not logits: how closely the file's follow the simulated model's
                cosine += float(torch.nn.functional.cosine_similarity(torch.from_numpy(got).double(),
                                                                      torch.from_numpy(sim).double()).sum())
                continue
            predicted = ranked(torch.from_numpy(got))[:, 0]
            correct += int((predicted == y).sum())
            agree += int((predicted == ranked(torch.from_numpy(sim))[:, 0]).sum())
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:  # the optimized graph is looked at, not kept
        ops = integer_ops(onnx_path, scratch)
    integer = {k: v for k, v in ops.items() if k in INTEGER_OPS}
    fp32_size = fp32_path.stat().st_size
    if headless:
        print(f"ONNX          features: cosine with the simulated model's {cosine / total:.6f}, largest difference "
              f"{max_diff:.4f} (mean over {total} test images)")
    else:
        print(f"ONNX          top-1 {100 * correct / total:6.2f}  agreement with simulated {100 * agree / total:6.2f}  "
              f"largest logit difference {max_diff:.4f}")
    print(f"integer kernels in ONNX Runtime: {integer or 'none'}")
    for path in (onnx_path, int_path):
        size = path.stat().st_size
        print(f"wrote {path}  {size / 1e6:.2f} MB  ({fp32_size / size:.2f}x smaller than the FP32 ONNX)")
    print(f"wrote {fp32_path}  {fp32_size / 1e6:.2f} MB  (the float model, for comparison)")
    if headless:
        print(f"\nThe file outputs the backbone's pooled features ({session.get_outputs()[0].shape[-1]} per image); its "
              "preprocessing is in the file's metadata.")
        return 0
    print("\nTo run it on a folder of class folders without psaq (ONNX Runtime, NumPy and Pillow; the preprocessing "
          "and class names are in the file's metadata):\n")
    print(example_program(onnx_path, _image_folder(params.runtime.dataset)))
    return 0


def _key_of(store_path: str) -> str:
    """The key in a store artifact's name (``<stem>-<key><suffix>``)."""
    from pathlib import Path

    return Path(store_path).name.split(".", 1)[0].rsplit("-", 1)[1]


def _image_folder(dataset: str | None) -> str:
    """The folder of class folders a run evaluated on, or a placeholder for a built-in dataset."""
    from psaq.data import is_builtin
    from psaq.folders import resolve_roots

    if not dataset or is_builtin(dataset):
        return "path/to/images"
    return str(resolve_roots(dataset).eval_dir)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one of psaq's own models (digits-vit, fashion-vit, fashion-swin)",
                       description="Train one of psaq's own models on its built-in dataset into the artifact store "
                       "(the pipeline reuses it), and optionally copy it to --out.")
    p.add_argument("--model", default="digits-vit", help="digits-vit, fashion-vit or fashion-swin (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    p.add_argument("--epochs", type=int, help="default: the model's own")
    p.add_argument("--out", help="also copy the trained .safetensors here")
    p.add_argument("--store", help="artifact store (default: $PSAQ_PROJECT or the current folder)")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    import shutil

    from psaq.errors import ConfigError
    from psaq.models import ModelConfig
    from psaq.models.train import TrainConfig
    from psaq.models.trainers import TRAINERS
    from psaq.stages import model as model_stage
    from psaq.store import Store

    if args.model not in TRAINERS:
        raise ConfigError(f"'{args.model}' is not one of psaq's trainable models ({', '.join(TRAINERS.names())})")
    store = Store(args.store or os.environ.get("PSAQ_PROJECT", "."))
    weights, built = model_stage.run(store, ModelConfig(args.model, train_seed=args.seed),
                                     TrainConfig(epochs=args.epochs))
    from safetensors import safe_open

    with safe_open(weights.path, framework="pt") as f:
        top1 = (f.metadata() or {}).get("test_top1", "?")
    print(f"{args.model} seed {args.seed}: test top-1 {top1} % ({'trained' if built else 'already in the store'}) "
          f"→ {weights.path}")
    print(_against_shipped(args.model, args.seed, args.epochs, weights))
    if args.out:
        shutil.copyfile(weights.path, args.out)
        print(f"copied to {args.out}")
    return 0


def _against_shipped(model: str, seed: int, epochs: int | None, weights) -> str:
    """How a model trained here compares with the weights psaq ships for the same seed."""
    from psaq.models.shipped import SHIPPED
    from psaq.models import ModelConfig, load_model
    from psaq.stages.common import state_sha256

    entry = SHIPPED.get((model, seed))
    if entry is None:
        return f"psaq ships no weights of {model} for seed {seed}: nothing to compare with"
    shipped = load_model(ModelConfig(model, pretrained=True, train_seed=seed))
    if epochs is not None:
        return f"trained with --epochs {epochs}: not the recipe of the shipped weights ({entry.path.name})"
    if state_sha256(shipped.model) == weights.sha256:
        return f"the same tensors as the shipped weights {entry.path.name}: the recipe reproduces them here"
    trained = load_model(ModelConfig(model, checkpoint=weights.path))
    diff = max(float((a - b).abs().max()) for a, b in zip(trained.model.state_dict().values(),
                                                          shipped.model.state_dict().values()))
    return (f"differs from the shipped weights {entry.path.name} (largest weight difference {diff:.2e}; shipped test "
            f"top-1 {entry.test_top1:.2f} %): kernels round differently across CPUs; use this file with --checkpoint")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line like every other error: ``psaq: error: …``, exit 2.
    Sub-command parsers inherit the class."""

    def error(self, message: str):
        prog = self.prog
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if prog.endswith(".py") and spec is not None:  # run as python -m flows.grid
            prog = f"python -m {spec.name}"
        print(f"psaq: error: {prog}: {message} (see '{prog} --help')", file=sys.stderr)
        sys.exit(2)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """``argv`` (default: this process's) only says which settings file the help's defaults come from."""
    base, source = _settings_file(argv)
    parser = ArgumentParser(
        prog="psaq",
        description="Data-free post-training quantization of vision transformers (PSAQ-ViT).",
        epilog="Run 'psaq COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_quantize(sub, base, source)
    _add_export(sub, base, source)
    _add_train(sub)
    return parser


def run_entry(main, debug: bool) -> int:
    """How every entry point fails: one line naming the problem, exit 2, a traceback only with
    --debug. Ctrl-C and SIGTERM stop the work within a step: exit 130."""
    from psaq.cancel import stop_on_signals
    from psaq.errors import Interrupted, PsaqError

    try:
        with stop_on_signals():
            return main()
    except (KeyboardInterrupt, Interrupted):
        print("psaq: interrupted; rerun to continue from the finished stages", file=sys.stderr)
        return 130
    except PsaqError as exc:
        if debug:
            raise
        print(f"psaq: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # read-only folder, disk full, …: nothing was published half-written
        if debug:
            raise
        where = f": '{exc.filename}'" if getattr(exc, "filename", None) else ""
        print(f"psaq: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a bad flag (its one line is printed): the exit status, as for any error
        if exc.code == 2:
            return 2
        raise
    return run_entry(lambda: args.func(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
