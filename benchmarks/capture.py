"""Peak memory of a 100k-token activation capture at d = 3584: held in memory vs streamed.

Builds a one-block Llama-architecture model of width 3584 (Qwen2.5-7B's, random weights, narrow
attention and MLP so it runs on a CPU), captures the block output of ~100k tokens of text both
ways, each in a fresh process, and prints each process's peak resident memory beside the size
of the activations and the cap, side by side.

    .venv/bin/python benchmarks/capture.py [--tokens 100000] [--cap-mib 256]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from workbench.manifold.valid import stream_token_activations, token_activations
from workbench.models.loading import _boot
from workbench.models.tiny import byte_tokenizer

HOOK = "blocks.0.hook_out"
WIDTH = 3584


def model():
    config = LlamaConfig(
        vocab_size=259,
        hidden_size=WIDTH,
        intermediate_size=256,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(0)
    hf_model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    return _boot("random-width-3584", hf_model, byte_tokenizer(), "cpu", torch.float32)


def texts(tokens: int) -> list[str]:
    """Byte-level texts of 500 tokens each (one token per byte, plus BOS)."""
    line = "the quick brown fox jumps over the lazy dog " * 12
    return [line[:499]] * (tokens // 500)


def run(mode: str, tokens: int, cap_mib: int) -> None:
    bridge = model()
    data = texts(tokens)
    token_activations(bridge, data[:8], None, [HOOK], batch_size=8)  # warm-up: one batch
    with open("/proc/self/statm") as handle:
        before = int(handle.read().split()[1]) * resource.getpagesize() / 2**20
    start = time.perf_counter()
    if mode == "memory":
        acts, _ = token_activations(bridge, data, None, [HOOK], batch_size=8)
        rows = len(acts[HOOK])
    else:
        with tempfile.TemporaryDirectory() as folder:
            store = stream_token_activations(
                bridge, data, None, [HOOK], folder, memory_cap=cap_mib * 2**20, batch_size=8
            )
            rows = len(store)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # MiB
    print(f"{mode} {rows} {seconds:.1f} {peak:.0f} {peak - before:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--cap-mib", type=int, default=256)
    parser.add_argument(
        "--mode", choices=("memory", "stream"), default=None, help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.mode:
        run(args.mode, args.tokens, args.cap_mib)
        return
    results = {}
    for mode in ("memory", "stream"):
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--mode",
                mode,
                "--tokens",
                str(args.tokens),
                "--cap-mib",
                str(args.cap_mib),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[mode] = done.stdout.split()[-5:]
    rows = int(results["memory"][1])
    print(
        f"capture of {rows} tokens at d = {WIDTH} ({rows * WIDTH * 4 / 2**20:.0f} MiB of fp32 "
        f"activations), one hook; cap {args.cap_mib} MiB"
    )
    for mode, (_, _, seconds, peak, added) in results.items():
        print(
            f"  {mode:7s} peak RSS {peak:>6s} MiB, {added:>6s} MiB above the process before the "
            f"capture   {seconds:>6s} s"
        )


if __name__ == "__main__":
    main()
