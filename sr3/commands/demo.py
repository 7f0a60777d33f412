"""``sr3 demo``: the local web page (sr3/demo/) over the shipped models and an optional cascade."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from ..demo.app import DemoLimits, create_app, serve
from ..errors import UserError
from ..methods import SHIPPED_CASCADES, MethodOptions, build_method
from ..web import check_bindable, is_loopback
from .common import add_device_argument, check_device


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="a local web page: drop an image, watch it refine, download the result")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--model", type=Path, help="SR3 model folder (default: the shipped 4x model)")
    p.add_argument("--regression-model", type=Path, help="regression model folder (default: the shipped one)")
    p.add_argument("--cascade", type=Path, help="also offer this cascade directory (e.g. two 4x stages = 16x)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload in MB (> 0, default 10)")
    p.add_argument("--max-pixels", type=int, default=512 * 512,
                   help="largest input in pixels, width x height (> 0, default 262144 = 512x512)")
    add_device_argument(p)
    p.set_defaults(func=run)


def build_methods(args: argparse.Namespace) -> dict:
    """sr3, regression and bicubic at the SR3 model's scale, the shipped 8x and 16x cascades when sr3 is the
    shipped model, plus the cascade if given."""
    device = check_device(args.device)
    sr3 = build_method("sr3", MethodOptions(model_dirs={"sr3": args.model} if args.model else {}, device=device))
    methods = {"sr3": sr3}
    if not args.model:
        for scale in sorted(SHIPPED_CASCADES):
            methods[f"sr3-{scale}x"] = build_method("sr3", MethodOptions(scale=scale, device=device))
    regression = MethodOptions(scale=sr3.scale, device=device,
                               model_dirs={"regression": args.regression_model} if args.regression_model else {})
    methods["regression"] = build_method("regression", regression)
    methods["bicubic"] = build_method("bicubic", MethodOptions(scale=sr3.scale))
    if args.cascade:
        methods["cascade"] = build_method("cascade", MethodOptions(model_dirs={"cascade": args.cascade},
                                                                   device=device))
    return methods


def run(args: argparse.Namespace) -> int:
    limits = DemoLimits(max_upload_bytes=int(args.max_upload_mb * 2 ** 20), max_pixels=args.max_pixels)
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} must lie in 1..65535")
    if not is_loopback(args.host):
        warnings.warn(f"--host {args.host}: the demo is reachable from the network and runs any uploaded image "
                      "through the model; bind 127.0.0.1 unless you mean it")
    app = create_app(build_methods(args), limits)
    check_bindable(args.host, args.port)
    print(f"sr3 demo on http://{args.host}:{args.port}/  (Ctrl+C stops)", flush=True)
    serve(app, args.host, args.port)
    return 0
