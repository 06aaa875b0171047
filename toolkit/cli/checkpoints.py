"""`ablate import` and `ablate export`: weights in and out of the toolkit's checkpoint format
(toolkit.model.interop does the mapping)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from toolkit.cli.common import add_plugin_option, plugins_of
from toolkit.errors import DataError, ToolkitError
from toolkit.files import read_json

FORMATS = ("hf-gpt2", "book")
EXPORT_FORMATS = (*FORMATS, "hf-llama")  # Llama: export only


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "import",
        help="turn a Hugging Face GPT-2 folder or a book state dict into a toolkit checkpoint",
        description="Read weights from another code base and write a toolkit checkpoint "
        "({'model', 'config'}) that eval, generate and model.init_from take. hf-gpt2: a folder "
        "with config.json and model.safetensors (or pytorch_model.bin), as save_pretrained "
        "writes; book: the .pth file of the book's torch.save(model.state_dict(), ...).",
    )
    p.add_argument("source", metavar="DIR|FILE", help="the GPT-2 folder or the book's .pth file")
    p.add_argument("--format", required=True, choices=FORMATS, help="what SOURCE is")
    p.add_argument("--out", required=True, metavar="FILE.pt", help="the checkpoint to write")
    p.add_argument(
        "--n-heads",
        type=int,
        help="book: attention heads (inferred for GPT-2's widths 768, 1024, 1280, 1600)",
    )
    p.add_argument(
        "--drop-rate", type=float, help="book: dropout for later training, in [0, 1) (0.1)"
    )
    p.add_argument(
        "--tokenizer",
        help="record the tokenizer the weights go with (e.g. gpt2, bytes) in the checkpoint",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    add_plugin_option(p)
    p.set_defaults(func=cmd_import)

    p = subparsers.add_parser(
        "export",
        help="write a checkpoint as a Hugging Face GPT-2 or Llama folder or a book state dict",
        description="hf-gpt2: config.json and model.safetensors that "
        "transformers.GPT2LMHeadModel.from_pretrained loads; hf-llama: the same for "
        "LlamaForCausalLM (rope, rmsnorm, swiglu, no biases); book: a .pth state dict for the "
        "book's GPTModel (its config is printed). Components the target has no equivalent of "
        "are refused, named.",
    )
    p.add_argument("source", metavar="CHECKPOINT|RUN_DIR", help="a checkpoint or a run folder")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="what to write")
    p.add_argument("--out", required=True, metavar="PATH", help="hf-gpt2: a folder; book: a file")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=cmd_export)


def cmd_import(args: argparse.Namespace) -> int:
    """`ablate import`: read, check by building the model's shapes, write the checkpoint."""
    # torch-heavy imports, on first use: `ablate --help` stays quick.
    from toolkit.data.resolve import check_vocab
    from toolkit.model.book import import_book
    from toolkit.model.checkpoint import check_fits, save_checkpoint
    from toolkit.model.hf_gpt2 import import_hf_gpt2

    _check_import_options(args)
    plugins = plugins_of(args)
    out = Path(args.out).expanduser()
    _check_output(out, args.force, folder=False)
    if args.format == "hf-gpt2":
        config, state = import_hf_gpt2(args.source)
    else:
        given = {} if args.drop_rate is None else {"drop_rate": args.drop_rate}
        config, state = import_book(args.source, n_heads=args.n_heads, **given)
    check_fits(config, state, plugins)
    extra = {}
    if args.tokenizer:
        tokenizer = plugins.registry.build("tokenizer", args.tokenizer)
        check_vocab(tokenizer, config.vocab_size, "record the tokenizer it was trained with")
        extra["tokenizer"] = args.tokenizer
    save_checkpoint(config, state, out, **extra)
    n_params = sum(
        t.numel() for k, t in state.items() if k != "out_head.weight" or not config.tie_embeddings
    )
    print(
        f"{out}: {n_params:,} parameters; {config.n_layers} layers, emb_dim {config.emb_dim}, "
        f"{config.n_heads} heads, context {config.context_length}, vocab {config.vocab_size}, "
        f"{'tied' if config.tie_embeddings else 'untied'}, activation {config.activation}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """`ablate export`: write the checkpoint in another code base's layout."""
    from toolkit.model.book import export_book
    from toolkit.model.hf_gpt2 import export_hf_gpt2
    from toolkit.model.hf_llama import export_hf_llama

    out = Path(args.out).expanduser()
    folder = args.format.startswith("hf-")
    made = folder and not out.exists()
    _check_output(out, args.force, folder=folder)
    try:
        if args.format == "hf-gpt2":
            export_hf_gpt2(args.source, out)
            print(f"{out}: config.json and model.safetensors (GPT2LMHeadModel.from_pretrained)")
        elif args.format == "hf-llama":
            export_hf_llama(args.source, out)
            # Llama's layout, or Qwen3's when the attention has qk_norm: what config.json names.
            (architecture,) = read_json(out / "config.json")["architectures"]
            print(f"{out}: config.json and model.safetensors ({architecture}.from_pretrained)")
        else:
            book = export_book(args.source, out)
            print(f"{out}: the book's state dict; build GPTModel({json.dumps(book)})")
    except ToolkitError:
        if made and not any(out.iterdir()):  # refused: no empty folder left behind
            out.rmdir()
        raise
    return 0


def _check_import_options(args: argparse.Namespace) -> None:
    """The book-only options: refused with hf-gpt2 (its config.json has them), and in range;
    --drop-rate as the spec's model.drop_rate, a finite number in [0, 1)."""
    if args.format == "hf-gpt2":
        if args.n_heads is not None:
            raise DataError("--n-heads is for --format book; GPT-2's config.json names n_head")
        if args.drop_rate is not None:
            raise DataError(
                "--drop-rate is for --format book; GPT-2's config.json names its dropout "
                "(resid_pdrop, embd_pdrop, attn_pdrop)"
            )
    if args.n_heads is not None and args.n_heads < 1:
        raise DataError(f"--n-heads must be at least 1, got {args.n_heads}")
    if args.drop_rate is not None and not 0 <= args.drop_rate < 1:  # nan is not in range
        raise DataError(f"--drop-rate must be in [0, 1), got {args.drop_rate:g}; 0 is no dropout")


def _check_output(out: Path, force: bool, *, folder: bool) -> None:
    """Refuse to overwrite without --force; refuse a file where a folder goes and vice versa."""
    if folder:
        if out.exists() and not out.is_dir():
            raise DataError(f"--out {out} is a file; give a folder for the hf- formats")
        if (out / "summary.json").exists():  # its config.json is the run's record
            raise DataError(f"{out} is a run folder; export into a folder of its own")
        taken = [n for n in ("config.json", "model.safetensors") if (out / n).exists()]
        if taken and not force:
            raise DataError(f"{out} already holds {', '.join(taken)}; pass --force to overwrite")
    else:
        if out.is_dir():
            raise DataError(f"--out {out} is a folder; give a file name")
        if out.exists() and not force:
            raise DataError(f"{out} exists; pass --force to overwrite it")
    try:
        (out if folder else out.parent).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the folder for {out} ({exc.strerror})") from None
