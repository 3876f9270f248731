"""GPU figures for a 2B-class model built from its config (random bf16 weights, no download).

Prints, side by side in one run: sweep throughput (scored tokens/s) of the workbench's engine,
SPLIT training steps/s, the hook overhead of a steered forward against the bare Hugging Face
forward at the same batch, and model FLOP utilisation (2 · parameters · tokens per forward,
plus attention) against the GPU's bf16 dense peak.

    .venv/bin/python benchmarks/gpu.py                      # Gemma-2-2B shape, batch 64 x 256
    .venv/bin/python benchmarks/gpu.py --preset tiny --device cpu   # a smoke run anywhere

The architecture is Gemma 2 2B's (d 2304, 26 layers, 8 heads of 256, MLP 9216, vocab 256k);
the tokenizer is the byte-level test tokenizer (one token per byte), so prompt and answer
lengths are exact. Weights are random: the figures are speed, not steering.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForCausalLM, Gemma2Config

from workbench.data.pairs import ContrastPair
from workbench.measure.sweeps import run_sweep
from workbench.models.loading import _boot
from workbench.models.tiny import byte_tokenizer
from workbench.steering.forms import SteeringVector
from workbench.training.trainer import TrainingConfig, train_intervention

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}
PRESETS = {
    "gemma-2-2b": dict(
        hidden_size=2304,
        intermediate_size=9216,
        num_hidden_layers=26,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        vocab_size=256_000,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=259,
    ),
}


def build(preset: str, device: str, dtype: torch.dtype):
    """The bridge around a randomly initialised model of the preset's shape."""
    config = Gemma2Config(**PRESETS[preset], max_position_embeddings=4096, pad_token_id=0)
    config.architectures = ["Gemma2ForCausalLM"]
    torch.manual_seed(0)
    with torch.device(device):
        hf_model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    hf_model.eval()
    if device.startswith("cuda"):
        hf_model.set_attn_implementation("sdpa")
    bridge = _boot(f"random-{preset}", hf_model, byte_tokenizer(), device, dtype)
    bridge.eval()
    bridge.requires_grad_(False)
    return bridge, hf_model


def pairs(n: int, prompt_tokens: int, answer_tokens: int) -> list[ContrastPair]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [
        ContrastPair(
            f"p{i}",
            "".join(letters[(i + j) % 26] for j in range(prompt_tokens - 1)),
            " " + "y" * (answer_tokens - 1),
            " " + "n" * (answer_tokens - 1),
        )
        for i in range(n)
    ]


def timed(fn, device: str, repeats: int = 3) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def forward_flops(model, tokens: int, sequence: int) -> float:
    """2 · (non-embedding parameters) · tokens + attention's 4 · layers · d_attn · seq · tokens."""
    n_params = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    cfg = model.config
    attention = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * sequence
    return 2.0 * n_params * tokens + attention * tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gemma-2-2b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=64, help="pairs per forward")
    parser.add_argument("--prompt-tokens", type=int, default=248)
    parser.add_argument("--answer-tokens", type=int, default=8)
    parser.add_argument("--multipliers", type=int, default=4)
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak")
    args = parser.parse_args()

    dtype = torch.bfloat16
    bridge, hf_model = build(args.preset, args.device, dtype)
    layer = hf_model.config.num_hidden_layers // 2
    data = pairs(args.batch, args.prompt_tokens, args.answer_tokens)
    sequence = args.prompt_tokens + args.answer_tokens
    grid = tuple(float(m) for m in range(args.multipliers))
    vector = SteeringVector.for_model(bridge, layer)
    torch.nn.init.normal_(vector.bias, std=0.01)
    # One multiplier per forward: batch rows = pairs x 2 answers at sequence tokens each.
    rows = 2 * args.batch

    def sweep():
        run_sweep(bridge, data, vector, grid, batch_size=args.batch, max_rows=rows, progress=False)

    sweep_s = timed(sweep, args.device)
    forwards = len(grid)
    tokens = forwards * rows * sequence
    ids = torch.randint(3, 259, (rows, sequence), device=args.device)

    @torch.no_grad()
    def bare():
        hf_model(ids)

    @torch.no_grad()
    def hooked():
        with vector.applied(bridge, 1.0):
            bridge(ids)

    bare_s, hooked_s = timed(bare, args.device), timed(hooked, args.device)
    config = TrainingConfig(epochs=1, batch_size=min(16, args.batch))

    def train():
        steer = SteeringVector.for_model(bridge, layer)
        train_intervention(
            bridge, steer, data[: args.batch // 2], data[args.batch // 2 :], config, progress=False
        )

    train_s = timed(train, args.device, repeats=1)
    steps = -(-(args.batch // 2) // config.batch_size) * 2  # subtract doubles the examples

    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    flops = forward_flops(hf_model, tokens, sequence)
    bare_flops = forward_flops(hf_model, rows * sequence, sequence)
    print(f"{args.preset} (random bf16) on {name}; layer {layer}; {rows} rows x {sequence} tokens")
    print(
        f"sweep:    {sweep_s:8.3f} s for {forwards} steered forwards "
        f"{tokens / sweep_s:12.0f} tokens/s"
    )
    print(
        f"bare HF forward: {bare_s * 1e3:8.1f} ms   "
        f"hooked bridge forward: {hooked_s * 1e3:8.1f} ms"
        f"   overhead {hooked_s / bare_s:5.2f}x"
    )
    print(f"training: {steps / train_s:8.2f} steps/s (batch {config.batch_size}, with evaluation)")
    if peak:
        print(
            f"MFU sweep {flops / sweep_s / (peak * 1e12):6.1%}   bare forward "
            f"{bare_flops / bare_s / (peak * 1e12):6.1%}   (peak {peak:.0f} TFLOP/s bf16)"
        )
    else:
        print("MFU: unknown peak for this device (pass --peak-tflops)")


if __name__ == "__main__":
    main()
