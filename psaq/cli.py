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
      psaq quantize --model deit_small_patch16_224 --checkpoint deit_s.safetensors \\
                    --dataset /data/imagenet/val --device cuda
      psaq quantize --model vit_tiny_patch16_224 --model-arg img_size=64 --model-arg num_classes=10 \\
                    --checkpoint mine.pt --dataset ./val
      psaq quantize --model deit_base_patch16_224 --pretrained --device cuda --precision bf16 --compile all

    calibration modes (--calib):
      psaq              images optimized from noise for diverse patch similarity (PSAQ-ViT)
      psaq-noent        the same without the entropy term (ablation)
      gaussian          N(0,1) noise in normalized space
      gaussian-clamped  noise clipped to valid pixel values
      real              N training images (needs data: the baseline psaq replaces)
    """
)


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="synthesize calibration images, quantize, and compare FP32 with quantized top-1",
        description="Quantize a vision transformer without its training data: synthesize calibration "
        "images from the model itself, calibrate per-layer scales, and print FP32 and quantized top-1.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_args(p)
    p.set_defaults(func=_quantize)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="quantize, then write a QDQ ONNX model and a compact integer weight file",
        description="Quantize as `psaq quantize` does, then export: an ONNX model whose QuantizeLinear/"
        "DequantizeLinear nodes carry the calibrated scales (ONNX Runtime runs its matrix products with "
        "integer kernels), and a safetensors file of int8 (or packed int4) weights with every scale.",
        epilog=EPILOG.replace("psaq quantize", "psaq export"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_args(p)
    p.add_argument("--out", default="exports", help="output folder (default: %(default)s)")
    p.set_defaults(func=_export)


def _add_run_args(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model")
    m.add_argument("--model", default="digits-vit", help="psaq model (digits-vit) or any timm name (default: %(default)s)")
    m.add_argument("--checkpoint", help="local weights: .safetensors or a torch state dict (read with weights_only=True)")
    m.add_argument("--pretrained", action="store_true", help="timm pretrained weights from its cache or hub")
    m.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="timm keyword override, repeatable (img_size=64, num_classes=10, …)")
    m.add_argument("--train-seed", type=int, default=0, help="which self-trained digits-vit (default: %(default)s)")
    q = p.add_argument_group("quantization")
    q.add_argument("--w-bits", type=int, default=8, help="weight bits, 2..8, symmetric per channel (default: %(default)s)")
    q.add_argument("--a-bits", type=int, default=8, help="activation bits, 2..8, asymmetric per tensor (default: %(default)s)")
    q.add_argument("--act-observer", default="minmax", help="activation range rule: minmax, percentile, mse (default: %(default)s)")
    q.add_argument("--weight-observer", default="minmax", help="weight range rule (default: %(default)s)")
    s = p.add_argument_group("calibration data")
    s.add_argument("--calib", default="psaq", help="calibration mode, see below (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="synthesis seed (default: %(default)s)")
    s.add_argument("--num-samples", type=int, default=32, help="calibration images (default: %(default)s)")
    s.add_argument("--steps", type=int, default=500, help="optimization steps per round, 2 rounds (default: %(default)s)")
    f = p.add_argument_group("synthesis speed (same images up to rounding; see the README's speed table)")
    f.add_argument("--precision", default="fp32", metavar="{fp32,bf16}",
                   help="autocast dtype of the model's forward; bf16 pays on GPUs and AMX CPUs at 224 px, "
                   "the entropy stays float32 (default: %(default)s)")
    f.add_argument("--compile", default="none", metavar="{none,kde,model,all}",
                   help="what torch.compile fuses; 'kde' pays at 224 px (default: %(default)s)")
    f.add_argument("--cuda-graphs", action="store_true", help="replay the compiled step as CUDA graphs (CUDA only)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--dataset", default=None, help="digits, or an ImageNet-style folder PATH/<class>/<image> (default: the model's own)")
    e.add_argument("--device", default="auto", help="cpu, cuda, cuda:N; auto picks CUDA when present (default: %(default)s)")
    e.add_argument("--cache-dir", default=os.environ.get("PSAQ_CACHE", ".psaq-cache"), help="where trained default models are kept")
    e.add_argument("--quiet", action="store_true", help="no progress bars")


def _run(args: argparse.Namespace):
    from psaq.device import resolve_device
    from psaq.evaluate import EvalConfig
    from psaq.models import ModelConfig, load_model, parse_model_args
    from psaq.quant import QuantConfig
    from psaq.synth import SynthesisConfig
    from psaq.workflow import quantize_model

    quant = QuantConfig(w_bits=args.w_bits, a_bits=args.a_bits, act_observer=args.act_observer,
                        weight_observer=args.weight_observer)
    steps = args.steps
    synth = SynthesisConfig(method=args.calib, seed=args.seed, num_samples=args.num_samples,
                            steps_per_round=steps, warmup_steps=min(100, max(0, steps // 5)),
                            precision=args.precision, compile=args.compile, cuda_graphs=args.cuda_graphs)
    device = resolve_device(args.device)
    model_cfg = ModelConfig(args.model, args.checkpoint, args.pretrained, parse_model_args(args.model_arg), args.train_seed)
    loaded = load_model(model_cfg, cache_dir=args.cache_dir, device=device, progress=not args.quiet)
    result = quantize_model(loaded, quant, synth, device, args.dataset, EvalConfig(), progress=not args.quiet)
    return loaded, result, device


def _quantize(args: argparse.Namespace) -> int:
    loaded, result, device = _run(args)
    _print_result(loaded, result, device)
    return 0


def _print_result(loaded, result, device) -> None:
    fp, qr, synth, quant = result.fp32, result.quantized, result.synth_config, result.quant_config
    print(f"model      {loaded.name}  ({result.fp32.count} test images, device {device})")
    print(f"calib      {synth.method}, {synth.num_samples} images, seed {synth.seed}"
          + (f", {result.samples.steps} steps at {result.samples.steps_per_s:.1f} steps/s" if result.samples.steps else ""))
    print(f"FP32       top-1 {fp.top1:6.2f}  top-5 {fp.top5:6.2f}")
    print(f"{quant.tag:<10} top-1 {qr.top1:6.2f}  top-5 {qr.top5:6.2f}  agreement with FP32 {qr.agreement:6.2f}")


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np
    import torch

    from psaq.models import parse_model_args
    from psaq.quant.export import save_integer_model
    from psaq.quant.onnx_export import INTEGER_OPS, export_fp32_onnx, export_onnx, integer_ops, ort_session
    from psaq.workflow import eval_loader

    loaded, result, device = _run(args)
    _print_result(loaded, result, device)
    out = Path(args.out)
    stem = f"{loaded.name}-{result.quant_config.tag}-{result.synth_config.method}-seed{result.synth_config.seed}"
    qmodel = result.model.cpu()
    example = torch.zeros((1, *loaded.spec.input_size))
    onnx_path = export_onnx(qmodel, result.quant_config, example, out / f"{stem}.onnx", {"model": loaded.name})
    int_path = save_integer_model(qmodel, result.quant_config, {"name": loaded.name, "model_args": parse_model_args(args.model_arg)},
                                  out / f"{stem}.int.safetensors")
    fp32_path = export_fp32_onnx(loaded.model.cpu(), example, out / f"{loaded.name}-fp32.onnx")
    session = ort_session(onnx_path)
    correct = agree = total = 0
    max_diff = 0.0
    with torch.no_grad():
        for x, y in eval_loader(loaded, args.dataset):
            sim = qmodel(x).numpy()
            got = session.run(None, {"images": x.numpy()})[0]
            max_diff = max(max_diff, float(np.abs(got - sim).max()))
            correct += int((got.argmax(1) == y.numpy()).sum())
            agree += int((got.argmax(1) == sim.argmax(1)).sum())
            total += len(y)
    ops = integer_ops(onnx_path, out)
    (out / f"{onnx_path.stem}.ort-optimized.onnx").unlink(missing_ok=True)
    integer = {k: v for k, v in ops.items() if k in INTEGER_OPS}
    fp32_size = fp32_path.stat().st_size
    print(f"ONNX       top-1 {100 * correct / total:6.2f}  agreement with simulated {100 * agree / total:6.2f}  "
          f"largest logit difference {max_diff:.4f}")
    print(f"integer kernels in ONNX Runtime: {integer or 'none'}")
    for path in (onnx_path, int_path, fp32_path):
        size = path.stat().st_size
        print(f"wrote {path}  {size / 1e6:.2f} MB  ({fp32_size / size:.2f}x smaller than FP32 ONNX)")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-digits", help="train the embedded digits-vit and save it as safetensors",
                       description="Train the small ViT that psaq uses as its default model on scikit-learn's digits.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--out", required=True, help="output .safetensors path")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from psaq.device import resolve_device
    from psaq.models import save_checkpoint
    from psaq.models.digits import TrainConfig, train_digits_vit

    result = train_digits_vit(TrainConfig(seed=args.seed, epochs=args.epochs), device=resolve_device(args.device))
    save_checkpoint(result.model, args.out, {"test_top1": f"{result.test_top1:.2f}", "seed": str(args.seed)})
    print(f"digits-vit seed {args.seed}: test top-1 {result.test_top1:.2f} % in {result.wall_s:.0f} s → {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="psaq",
        description="Data-free post-training quantization of vision transformers (PSAQ-ViT).",
        epilog="Run 'psaq COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_quantize(sub)
    _add_export(sub)
    _add_train(sub)
    return parser


def run_entry(main, debug: bool) -> int:
    """How every entry point fails: one line naming the problem, exit 2, a traceback only with --debug."""
    from psaq.errors import PsaqError

    try:
        return main()
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
    except KeyboardInterrupt:
        print("psaq: interrupted; rerun to continue from the finished stages", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_entry(lambda: args.func(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
